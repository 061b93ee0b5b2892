//! Golden bytes: what nft 1.0.6 sends for the same change
//! (`nft --debug=mnl -f`, in a scratch namespace, the message's bytes
//! transcribed from its dump), against what vnet encodes.

#![allow(clippy::unwrap_used)]

use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// nft's message made comparable: libnftnl numbers the element nests of a
/// list 1, 2, 3… where the uapi (and rust-netlink) name each
/// `NFTA_LIST_ELEM` (1), which the kernel does not read; and nft names the
/// set also by its id in nft's own cache (`NFTA_SET_ELEM_LIST_SET_ID`), which
/// the kernel only reads when no set has the name. Sequence numbers differ.
fn comparable(nft: &[u8]) -> Vec<u8> {
    let mut body = vec![];
    let mut off = 20;
    while off < nft.len() {
        let len = usize::from(u16::from_le_bytes([nft[off], nft[off + 1]]));
        let kind = u16::from_le_bytes([nft[off + 2], nft[off + 3]]) & 0x3fff;
        let padded = (len + 3) & !3;
        let mut attr = nft[off..off + padded].to_vec();
        match kind {
            4 => attr.clear(),
            3 => {
                let mut o = 4;
                while o < len {
                    let l = usize::from(u16::from_le_bytes([attr[o], attr[o + 1]]));
                    attr[o + 2..o + 4].copy_from_slice(&0x8001u16.to_le_bytes());
                    o += (l + 3) & !3;
                }
            }
            _ => {}
        }
        body.extend(attr);
        off += padded;
    }
    let mut out = nft[..20].to_vec();
    out[8..12].copy_from_slice(&[0; 4]);
    out[..4].copy_from_slice(&u32::try_from(20 + body.len()).unwrap().to_le_bytes());
    out.extend(body);
    out
}

/// One message's bytes with sequence number 0 and only the request flag
/// (nft's dump shows its flags as letters; they are checked apart).
fn ours(m: &NetlinkMessage<NetfilterMessage>) -> Vec<u8> {
    let mut m = m.clone();
    m.header.sequence_number = 0;
    m.header.flags = NLM_F_REQUEST;
    m.finalize();
    let mut b = vec![0; m.buffer_len()];
    m.serialize(&mut b);
    b
}

fn delta(set: &str, was_empty: bool, removed: &[&str], added: &[&str]) -> SetDelta {
    SetDelta {
        family: Family::Inet,
        set: set.into(),
        was_empty,
        removed: removed.iter().map(|s| net(s)).collect(),
        added: added.iter().map(|s| net(s)).collect(),
    }
}

// `add element inet vnet rg_x_4 { 10.0.0.5, 10.1.0.0/16 }` into an empty set.
const ADD_V4: &str = "a00000000c0a010001000000000000000100000009000100766e6574000000000b00020072675f785f34000008000400000000016c0003801800018008000300000000010c0001800800010000000000100002800c000180080001000a0000051800038008000300000000010c000180080001000a000006100004800c000180080001000a0100001800058008000300000000010c000180080001000a020000";
// `delete element inet vnet rg_x_4 { 10.0.0.5 }`.
const DEL_V4: &str = "580000000e0a010001000000000000000100000009000100766e6574000000000b00020072675f785f3400002c000380100001800c000180080001000a0000051800028008000300000000010c000180080001000a000006";
// `add element inet vnet rg_x_6 { 2001:db8::/64, 2001:db8:1::7 }` into an empty set.
const ADD_V6: &str = "dc0000000c0a010001000000000000000100000009000100766e6574000000000b00020072675f785f3600000800040000000002a80003802400018008000300000000011800018014000100000000000000000000000000000000001c000280180001801400010020010db8000000000000000000000000240003800800030000000001180001801400010020010db80000000100000000000000001c000480180001801400010020010db8000100000000000000000007240005800800030000000001180001801400010020010db8000100000000000000000008";
// `add element inet vnet rg_x_4 { 0.0.0.0/0 }` into an empty set: an open interval.
const ADD_ALL_V4: &str = "540000000c0a010001000000000000000100000009000100766e6574000000000b00020072675f785f3400000800040000000001200003801c0001800c00018008000100000000000a0006000104010000000000";
// nft's batch begin and end (sequence numbers 0 and 2).
const BEGIN: &str = "140000001000010000000000000000000000000a";
const END: &str = "140000001100010002000000000000000000000a";

#[test]
fn elements_added_to_an_empty_v4_set_are_nfts_bytes() {
    let m = element_messages(&[delta("rg_x_4", true, &[], &["10.1.0.0/16", "10.0.0.5/32"])]);
    assert_eq!(m.len(), 1);
    assert_eq!(ours(&m[0]), comparable(&hex(ADD_V4)));
    assert_eq!(m[0].header.flags, NLM_F_REQUEST | NLM_F_CREATE);
}

#[test]
fn an_element_removed_is_nfts_bytes() {
    let m = element_messages(&[delta("rg_x_4", false, &["10.0.0.5/32"], &[])]);
    assert_eq!(m.len(), 1);
    assert_eq!(ours(&m[0]), comparable(&hex(DEL_V4)));
    assert_eq!(m[0].header.flags, NLM_F_REQUEST);
}

#[test]
fn v6_elements_are_nfts_bytes() {
    let m = element_messages(&[delta(
        "rg_x_6",
        true,
        &[],
        &["2001:db8:1::7/128", "2001:db8::/64"],
    )]);
    assert_eq!(ours(&m[0]), comparable(&hex(ADD_V6)));
}

#[test]
fn a_prefix_to_the_top_of_the_space_is_an_open_interval() {
    let m = element_messages(&[delta("rg_x_4", true, &[], &["0.0.0.0/0"])]);
    assert_eq!(ours(&m[0]), comparable(&hex(ADD_ALL_V4)));
}

#[test]
fn a_set_with_elements_gets_no_closing_element_below() {
    // nft reads the set first and adds `0.0.0.0 [end]` only to an empty
    // one; vnet knows from its view.
    let m = element_messages(&[delta("rg_x_4", false, &[], &["10.0.0.5/32"])]);
    let ours = ours(&m[0]);
    let empty = ours_for_empty();
    assert_eq!(empty.len() - ours.len(), 24, "one element (24 bytes) fewer");
    assert!(!ours.windows(8).any(|w| w == [8, 0, 1, 0, 0, 0, 0, 0]));
}

fn ours_for_empty() -> Vec<u8> {
    ours(&element_messages(&[delta("rg_x_4", true, &[], &["10.0.0.5/32"])])[0])
}

#[test]
fn a_batch_is_begin_messages_end_each_message_acked() {
    let m = element_messages(&[delta("rg_x_4", false, &["10.0.0.5/32"], &["10.0.0.6/32"])]);
    assert_eq!(m.len(), 2, "removals, then additions");
    let bytes = batch_bytes(&m, 0);
    let begin = hex(BEGIN);
    assert_eq!(bytes[..20], begin[..]);
    // Our end carries sequence number 3 (four messages); nft's 2 (three).
    let mut end = hex(END);
    end[8] = 3;
    assert_eq!(bytes[bytes.len() - 20..], end[..]);
    let mut off = 20;
    for (seq, msg) in (1u32..).zip(&m) {
        let len = msg.buffer_len();
        let header = &bytes[off..off + 16];
        let flags = u16::from_le_bytes([header[6], header[7]]);
        assert_eq!(flags, msg.header.flags | NLM_F_ACK);
        assert_eq!(u32::from_le_bytes(header[8..12].try_into().unwrap()), seq);
        off += len;
    }
    assert_eq!(off, bytes.len() - 20);
}

#[test]
fn many_elements_are_split_into_messages_keeping_intervals_whole() {
    let nets: Vec<String> = (0..3000u32)
        .map(|i| format!("{}/32", std::net::Ipv4Addr::from(0x0a00_0000 + 2 * i)))
        .collect();
    let added: Vec<&str> = nets.iter().map(String::as_str).collect();
    let m = element_messages(&[delta("rg_x_4", true, &[], &added)]);
    // 1 closing element below, then 3,000 starts and 3,000 ends.
    let elements: Vec<usize> = m
        .iter()
        .enumerate()
        .map(|(i, m)| match &m.payload {
            netlink_packet_core::NetlinkPayload::InnerMessage(NetfilterMessage {
                inner:
                    netlink_packet_netfilter::NetfilterMessageInner::NfTables(
                        NfTablesMessage::NewSetElement(e),
                    ),
                ..
            }) => e
                .attributes
                .iter()
                .find_map(|a| match a {
                    SetElementList::Elements(l) => {
                        // Every end follows its start in the same message
                        // (the first message opens with the closing one).
                        assert_eq!(l.first().is_some_and(is_interval_end), i == 0);
                        Some(l.len())
                    }
                    _ => None,
                })
                .unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(elements.iter().sum::<usize>(), 6001);
    assert!(elements.len() > 1, "{elements:?}");
    assert!(m.iter().all(|m| m.buffer_len() < 65536));
}

// nft's messages for chain and set steps (`nft --debug=mnl -f`, sequence
// number 0, flags request only).
const NEW_CHAIN: &str =
    "2c000000030a010000000000000000000100000009000100766e6574000000000a000300675f785f69000000";
const DEL_CHAIN: &str =
    "2c000000050a010000000000000000000100000009000100766e6574000000000a000300675f785f69000000";
// `flush chain inet vnet c`: a rule deletion naming only the chain.
const FLUSH_CHAIN: &str =
    "28000000080a010000000000000000000100000009000100766e6574000000000600020063000000";
const NEW_SET_V4: &str = "58000000090a010000000000000000000100000009000100766e6574000000000b00020072675f785f34000008000300000000040800040000000007080005000000000408000a00000000010a000d000004020000000000";
const NEW_SET_V6: &str = "58000000090a010000000000000000000100000009000100766e6574000000000b00020072675f785f36000008000300000000040800040000000008080005000000001008000a00000000010a000d000004020000000000";
const DEL_SET: &str =
    "280000000b0a010000000000000000000100000009000100766e6574000000000700020073340000";

fn one(op: Op) -> Vec<u8> {
    let tx = Transaction {
        ops: vec![op],
        ..Transaction::default()
    };
    let m = transaction_messages(&tx).unwrap();
    assert_eq!(m.len(), 1);
    ours(&m[0])
}

#[test]
fn chain_and_set_steps_are_nfts_bytes() {
    let inet = Family::Inet;
    let s = |n: &str| n.to_string();
    let add_chain = Op::AddChain {
        family: inet,
        name: s("g_x_i"),
        hook: None,
    };
    assert_eq!(one(add_chain), hex(NEW_CHAIN));
    let del_chain = Op::DeleteChain {
        family: inet,
        name: s("g_x_i"),
    };
    assert_eq!(one(del_chain), hex(DEL_CHAIN));
    let flush = Op::FlushChain {
        family: inet,
        name: s("c"),
    };
    assert_eq!(one(flush), hex(FLUSH_CHAIN));
    for (v6, golden, name) in [(false, NEW_SET_V4, "rg_x_4"), (true, NEW_SET_V6, "rg_x_6")] {
        let add = Op::AddSet {
            family: inet,
            name: s(name),
            v6,
        };
        assert_eq!(one(add), hex(golden));
    }
    let del_set = Op::DeleteSet {
        family: inet,
        name: s("s4"),
    };
    assert_eq!(one(del_set), hex(DEL_SET));
}

#[test]
fn tables_base_chains_and_untyped_rules_are_left_to_nft() {
    let refused = [
        Op::AddTable(Family::Inet),
        Op::AddChain {
            family: Family::Inet,
            name: "egress".into(),
            hook: Some("type filter hook forward priority 0; policy accept;".into()),
        },
        Op::AddRule {
            family: Family::Bridge,
            chain: "forward".into(),
            rule: crate::nft::rule::Rule::Text("oifname vmap @to_ports".into()),
            tag: "h0".into(),
        },
        Op::AddMap {
            family: Family::Bridge,
            name: "to_ports".into(),
            kind: MapKind::IfnameVerdict,
        },
        Op::FlushMap {
            family: Family::Bridge,
            name: "to_ports".into(),
        },
    ];
    for op in refused {
        let tx = Transaction {
            ops: vec![
                Op::FlushChain {
                    family: Family::Inet,
                    name: "c".into(),
                },
                op.clone(),
            ],
            ..Transaction::default()
        };
        assert!(transaction_messages(&tx).is_err(), "{op:?}");
    }
}

#[test]
fn element_changes_go_where_the_plan_puts_them() {
    let tx = Transaction {
        set_deltas: vec![delta("rg_x_4", false, &[], &["10.0.0.5/32"])],
        ops: vec![
            Op::AddChain {
                family: Family::Inet,
                name: "g_x_i".into(),
                hook: None,
            },
            Op::Elements,
            Op::DeleteChain {
                family: Family::Inet,
                name: "g_y_i".into(),
            },
        ],
        ..Transaction::default()
    };
    let m = transaction_messages(&tx).unwrap();
    let kinds: Vec<String> = m
        .iter()
        .map(|m| format!("{:?}", m.payload.message_type()))
        .collect();
    assert_eq!(m.len(), 3, "{kinds:?}");
    assert_eq!(ours(&m[1]), ours(&element_messages(&tx.set_deltas)[0]));
}

// The base chains' named maps, as nft 1.0.6 changes their elements.
// `add element bridge vnet spoof_ports { "tap2" : jump s_tap2 }`
const ADD_SPOOF: &str = "740000000c0a010000000000000000000700000009000100766e6574000000001000020073706f6f665f706f7274730008000400000000013c000380380001801800018014000100746170320000000000000000000000001c0002801800028008000100fffffffd0b000200735f746170320000";
// `delete element bridge vnet spoof_ports { "tap2" }`
const DEL_SPOOF: &str = "500000000e0a010000000000000000000700000009000100766e6574000000001000020073706f6f665f706f72747300200003801c000180180001801400010074617032000000000000000000000000";
// `add element bridge vnet marks { "tap2" : 131072, "vnvx100" : 0 }`
const ADD_MARKS: &str = "880000000c0a010000000000000000000700000009000100766e6574000000000a0002006d61726b73000000080004000000000254000380280001801800018014000100746170320000000000000000000000000c0002800800010000000200280002801800018014000100766e76783130300000000000000000000c0002800800010000000000";
// `add element inet vnet zones { "vnbr100" : 100 }` (zones `typeof iifname : ct zone`)
const ADD_ZONE: &str = "600000000c0a010000000000000000000100000009000100766e6574000000000a0002007a6f6e657300000008000400000000032c000380280001801800018014000100766e62723130300000000000000000000c0002800600010064000000";
// `add element inet vnet egress_ports { 0x00020000 : jump e_tap2 }`
const ADD_EGRESS: &str = "6c0000000c0a010000000000000000000100000009000100766e657400000000110002006567726573735f706f727473000000000800040000000004300003802c0001800c00018008000100000002001c0002801800028008000100fffffffd0b000200655f746170320000";
// `delete element inet vnet egress_ports { 0x00020000 }`
const DEL_EGRESS: &str = "480000000e0a010000000000000000000100000009000100766e657400000000110002006567726573735f706f7274730000000014000380100001800c0001800800010000000200";

fn map_delta(
    family: Family,
    map: &str,
    kind: MapKind,
    removed: Vec<MapKey>,
    added: Vec<(MapKey, MapValue)>,
) -> MapDelta {
    MapDelta {
        family,
        map: map.into(),
        kind,
        removed,
        added,
    }
}

#[test]
fn map_elements_are_nfts_bytes() {
    let dev = |d: &str| MapKey::Ifname(d.into());
    let jump = |c: &str| MapValue::Jump(c.into());
    let (bridge, inet) = (Family::Bridge, Family::Inet);
    let cases = [
        (
            map_delta(
                bridge,
                "spoof_ports",
                MapKind::IfnameVerdict,
                vec![],
                vec![(dev("tap2"), jump("s_tap2"))],
            ),
            ADD_SPOOF,
        ),
        (
            map_delta(
                bridge,
                "spoof_ports",
                MapKind::IfnameVerdict,
                vec![dev("tap2")],
                vec![],
            ),
            DEL_SPOOF,
        ),
        (
            map_delta(
                bridge,
                "marks",
                MapKind::IfnameMark,
                vec![],
                vec![
                    (dev("tap2"), MapValue::Number(0x2_0000)),
                    (dev("vnvx100"), MapValue::Number(0)),
                ],
            ),
            ADD_MARKS,
        ),
        (
            map_delta(
                inet,
                "zones",
                MapKind::IfnameZone,
                vec![],
                vec![(dev("vnbr100"), MapValue::Number(100))],
            ),
            ADD_ZONE,
        ),
        (
            map_delta(
                inet,
                "egress_ports",
                MapKind::MarkVerdict,
                vec![],
                vec![(MapKey::Mark(0x2_0000), jump("e_tap2"))],
            ),
            ADD_EGRESS,
        ),
        (
            map_delta(
                inet,
                "egress_ports",
                MapKind::MarkVerdict,
                vec![MapKey::Mark(0x2_0000)],
                vec![],
            ),
            DEL_EGRESS,
        ),
    ];
    for (delta, golden) in cases {
        let m = map_element_messages(std::slice::from_ref(&delta)).unwrap();
        assert_eq!(m.len(), 1, "{delta:?}");
        assert_eq!(ours(&m[0]), comparable(&hex(golden)), "{delta:?}");
        let create = if delta.added.is_empty() {
            0
        } else {
            NLM_F_CREATE
        };
        assert_eq!(m[0].header.flags, NLM_F_REQUEST | create);
    }
}

#[test]
fn a_changed_map_value_is_removed_then_added_and_a_bad_name_is_left_to_nft() {
    let d = map_delta(
        Family::Bridge,
        "marks",
        MapKind::IfnameMark,
        vec![MapKey::Ifname("tap2".into())],
        vec![(MapKey::Ifname("tap2".into()), MapValue::Number(7))],
    );
    let m = map_element_messages(&[d]).unwrap();
    let kinds: Vec<String> = m.iter().map(describe).collect();
    assert_eq!(m.len(), 2);
    assert!(
        kinds[0].starts_with("NfTables(DeleteSetElement"),
        "{kinds:?}"
    );
    assert!(kinds[1].starts_with("NfTables(NewSetElement"), "{kinds:?}");
    let long = map_delta(
        Family::Bridge,
        "spoof_ports",
        MapKind::IfnameVerdict,
        vec![MapKey::Ifname("a-name-of-16-chx".into())],
        vec![],
    );
    assert!(map_element_messages(&[long]).is_err());
}

/// A map's elements are split by their bytes, not their number: 1,000
/// jumps naming long chains are past one attribute's 64 KiB.
#[test]
fn many_jumps_are_split_into_messages_that_fit() {
    let added: Vec<(MapKey, MapValue)> = (0..1000)
        .map(|i| {
            let chain = format!("pt_{i:0>60}");
            (MapKey::Ifname(format!("tap{i}")), MapValue::Jump(chain))
        })
        .collect();
    let d = MapDelta {
        family: Family::Bridge,
        map: "to_ports".into(),
        kind: MapKind::IfnameVerdict,
        removed: vec![],
        added,
    };
    let m = map_element_messages(&[d]).unwrap();
    assert!(m.len() > 1);
    assert!(m.iter().all(|m| m.buffer_len() < 65536));
}
