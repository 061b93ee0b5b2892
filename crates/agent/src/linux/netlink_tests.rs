//! Wire-format tests, no root: the requests that create links and the one
//! that asks for a created link by name, byte for byte (the attributes
//! `ip link add` and `ip link show` send), and a link's index read from the
//! kernel's answer.

#![allow(clippy::unwrap_used)]

use super::*;

fn bytes(msg: &NetlinkMessage<RouteNetlinkMessage>) -> Vec<u8> {
    let mut msg = msg.clone();
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn bridge() -> Op {
    Op::CreateBridge {
        name: "vnbr1".into(),
        mtu: 1450,
        address: MacAddr([2, 0x76, 0x6e, 0, 0, 1]),
    }
}

fn vxlan() -> Op {
    Op::CreateVxlan {
        name: "vnvx1".into(),
        vni: 1,
        local: "192.0.2.1".parse().unwrap(),
        port: 4789,
        mtu: 1450,
    }
}

#[test]
fn a_bridge_is_created_by_one_request() {
    let want = unhex(
        "64000000 1000 0506 00000000 00000000 \
         00000000 00000000 00000000 00000000 \
         0a000300 766e6272 31000000 \
         08000400 aa050000 \
         0a000100 02766e00 00010000 \
         24001200 0b000100 62726964 67650000 \
         14000200 05002400 01000000 05002500 01000000",
    );
    // nlmsghdr: 100 bytes, RTM_NEWLINK, REQUEST|ACK|EXCL|CREATE; then
    // ifinfomsg, IFLA_IFNAME, IFLA_MTU 1450, IFLA_ADDRESS, IFLA_LINKINFO
    // (kind bridge; data nf_call_iptables 1, nf_call_ip6tables 1).
    assert_eq!(bytes(&request(&bridge(), &HashMap::new()).unwrap()), want);
}

#[test]
fn a_vxlan_device_is_created_by_one_request() {
    let want = unhex(
        "68000000 1000 0506 00000000 00000000 \
         00000000 00000000 00000000 00000000 \
         0a000300 766e7678 31000000 \
         08000400 aa050000 \
         34001200 0a000100 76786c61 6e000000 \
         24000200 08000100 01000000 06000f00 12b50000 \
         05000700 00000000 08000400 c0000201",
    );
    // IFLA_LINKINFO: kind vxlan; data id 1, dstport 4789 (big-endian),
    // learning 0, local 192.0.2.1.
    assert_eq!(bytes(&request(&vxlan(), &HashMap::new()).unwrap()), want);
}

#[test]
fn a_created_link_is_asked_for_by_name() {
    let want = unhex(
        "34000000 1200 0100 00000000 00000000 \
         00000000 00000000 00000000 00000000 \
         0a000300 766e7678 31000000 \
         08001d00 08000000",
    );
    // nlmsghdr: 52 bytes, RTM_GETLINK, REQUEST (no dump); ifinfomsg (index
    // 0: by name), IFLA_IFNAME, IFLA_EXT_MASK RTEXT_FILTER_SKIP_STATS.
    assert_eq!(bytes(&get_link("vnvx1")), want);
}

/// The head of the kernel's answer to `ip link show vnbr1` (index 7):
/// nlmsghdr, ifinfomsg (ARPHRD_ETHER, BROADCAST|MULTICAST, change ~0),
/// IFLA_IFNAME, IFLA_TXQLEN 1000, IFLA_MTU 1450.
const LINK_VNBR1: &str = "3c000000 1000 0000 2a000000 7b000000 \
     00000100 07000000 02100000 ffffffff \
     0a000300 766e6272 31000000 \
     08000d00 e8030000 \
     08000400 aa050000";

#[test]
fn a_created_links_index_is_read_from_the_kernels_answer() {
    let raw = unhex(LINK_VNBR1);
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&raw).unwrap();
    let NetlinkPayload::InnerMessage(inner) = msg.payload else {
        panic!("not a link message: {msg:?}");
    };
    assert_eq!(link_index(&inner, bridge().device()), Some(7));
    // Another link's message names no index for this one.
    assert_eq!(link_index(&inner, vxlan().device()), None);
}
