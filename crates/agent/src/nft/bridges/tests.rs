//! Golden bytes: what `ip link set vnbr9 type bridge nf_call_iptables 1
//! nf_call_ip6tables 1` (iproute2 6.1) sends, read with `strace -e
//! write=all`, against vnet's request.

#![allow(clippy::unwrap_used)]

use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn bytes(m: &NetlinkMessage<RouteNetlinkMessage>) -> Vec<u8> {
    let mut m = m.clone();
    m.finalize();
    let mut b = vec![0; m.buffer_len()];
    m.serialize(&mut b);
    b
}

// ip's RTM_NEWLINK (sequence number zeroed), naming the bridge by index 2.
const IP_NEWLINK: &str = "4400000010000500000000000000000000000000020000000000000000000000240012000a00010062726964676500001400020005002400010000000500250001000000";
// The IFLA_IFNAME attribute of ip's lookup of the bridge, `vnbr9`.
const IFNAME: &str = "0a00030076 6e627239000000";

#[test]
fn the_switch_request_is_ips_naming_the_bridge() {
    // ip's message, with the bridge named (index 0, IFLA_IFNAME first)
    // instead of looked up and named by index.
    let ip = hex(&IP_NEWLINK.replace(' ', ""));
    let ifname = hex(&IFNAME.replace(' ', ""));
    let mut want = ip[..32].to_vec();
    want[20..24].copy_from_slice(&[0; 4]);
    want.extend(&ifname);
    want.extend(&ip[32..]);
    // IFLA_INFO_KIND: ip sends "bridge" unterminated (length 10),
    // rust-netlink with its NUL (11); the kernel's nla_strcmp takes both.
    assert_eq!(want[48..52], [10, 0, 1, 0]);
    want[48] = 11;
    let len = u32::try_from(want.len()).unwrap();
    want[..4].copy_from_slice(&len.to_le_bytes());
    assert_eq!(bytes(&switch_request("vnbr9", true)), want);
    // Off: the same with both values 0.
    let off = bytes(&switch_request("vnbr9", false));
    assert_eq!(off[off.len() - 12], 0);
    assert_eq!(off[off.len() - 4], 0);
    assert_eq!(off.len(), want.len());
}

#[test]
fn only_vnets_bridges_are_read_with_both_switches() {
    let link = |name: &str, kind: InfoKind, v4: bool, v6: bool| {
        let mut l = LinkMessage::default();
        l.attributes = vec![
            LinkAttribute::IfName(name.into()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(kind),
                LinkInfo::Data(InfoData::Bridge(vec![
                    InfoBridge::NfCallIpTables(v4),
                    InfoBridge::NfCallIp6Tables(v6),
                ])),
            ]),
        ];
        l
    };
    assert_eq!(
        bridge_switches(&link("vnbr1", InfoKind::Bridge, true, true), "vnbr"),
        Some(("vnbr1".into(), true))
    );
    assert_eq!(
        bridge_switches(&link("vnbr1", InfoKind::Bridge, true, false), "vnbr"),
        Some(("vnbr1".into(), false))
    );
    assert_eq!(
        bridge_switches(&link("br0", InfoKind::Bridge, true, true), "vnbr"),
        None
    );
    assert_eq!(
        bridge_switches(&link("vnbr2", InfoKind::Veth, true, true), "vnbr"),
        None
    );
}
