//! A router namespace's NAT and metering tables written in-process (one
//! nf_tables batch, `agent::router::table`) against the same tables written
//! by `nft -f`, in scratch namespaces (root): the same `nft -j list
//! ruleset`, the fingerprint read back from either, a replacement and a
//! deletion, and a name no interface can have refused before the kernel.

#![allow(clippy::unwrap_used)]

mod linux_common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use agent::nft::netlink::{send_batch, table_user_data};
use agent::router::table::{Table, delete_message, fingerprint_of, get_message};
use agent::router::{metering, nat};
use compiler::protocol::{
    FloatingIpSpec, MeteringLabelSpec, MeteringRuleSpec, PortForwardingSpec, RuleDirection,
};
use linux_common::*;
use testworld::Netns;

fn floating(address: &str, fixed: Option<&str>, forwardings: &[(u8, u16, u16)]) -> FloatingIpSpec {
    FloatingIpSpec {
        router_id: "r1".into(),
        port_id: format!("fip-{address}"),
        address: address.parse().unwrap(),
        fixed_ip: fixed.map(|f| f.parse().unwrap()),
        port_forwardings: forwardings
            .iter()
            .map(|(protocol, external_port, internal_port)| {
                let spec = PortForwardingSpec {
                    protocol: *protocol,
                    external_port: *external_port,
                    internal_ip: "10.0.0.6".parse().unwrap(),
                    internal_port: *internal_port,
                };
                (format!("pf-{external_port}"), spec)
            })
            .collect(),
    }
}

fn nat_table(floating_ips: &[FloatingIpSpec], snat: Option<&str>) -> Table {
    let with_addresses: Vec<(&FloatingIpSpec, Ipv4Addr)> = floating_ips
        .iter()
        .map(|f| (f, f.address.to_string().parse().unwrap()))
        .collect();
    nat::ruleset("qg-gw", &with_addresses, snat.map(|s| s.parse().unwrap())).unwrap()
}

fn metering_table(prefixes: &[(RuleDirection, bool, &str)]) -> Table {
    let mut label = MeteringLabelSpec::default();
    for (i, (direction, excluded, prefix)) in prefixes.iter().enumerate() {
        label.rules.insert(
            format!("r{i}"),
            MeteringRuleSpec {
                direction: *direction,
                excluded: *excluded,
                remote_ip_prefix: Some(prefix.parse().unwrap()),
                source_ip_prefix: None,
                destination_ip_prefix: Some("0.0.0.0/0".parse().unwrap()),
            },
        );
    }
    metering::ruleset("qg-gw", &BTreeMap::from([("L1".to_owned(), label)])).unwrap()
}

/// Writes `table` in `by_nft` with `nft -f` and in `in_process` with one
/// batch; the two rulesets must be the same, and each table's comment
/// must give its fingerprint back.
fn write_both(by_nft: &Netns, in_process: &Netns, table: &Table) {
    by_nft
        .sh(&format!("nft -f - <<'EOF'\n{}EOF", table.text()))
        .unwrap();
    let messages = table.messages().unwrap();
    in_process.run(|| send_batch(&messages)).unwrap();
    assert_eq!(ruleset(by_nft), ruleset(in_process), "{}", table.text());
    for ns in [by_nft, in_process] {
        let data = ns
            .run(|| table_user_data(&get_message(table.name)))
            .unwrap();
        assert_eq!(
            data.and_then(|d| fingerprint_of(&d)),
            Some(table.fingerprint.clone()),
            "{}",
            ns.name()
        );
    }
}

#[test]
fn nat_and_metering_tables_in_process_list_as_nfts() {
    let by_nft = Netns::new("rtnf").unwrap();
    let in_process = Netns::new("rtnf").unwrap();
    for ns in [&by_nft, &in_process] {
        assert_eq!(
            ns.run(|| table_user_data(&get_message(nat::TABLE)))
                .unwrap(),
            None,
            "no table yet"
        );
    }
    let versions = [
        nat_table(
            &[floating("203.0.113.10", Some("10.0.0.5"), &[])],
            Some("203.0.113.2"),
        ),
        // Replaced whole: another floating IP, forwardings of every
        // protocol a forwarding may carry, no SNAT.
        nat_table(
            &[
                floating("203.0.113.10", Some("10.0.0.5"), &[]),
                floating(
                    "203.0.113.11",
                    None,
                    &[
                        (6, 2222, 22),
                        (17, 5353, 53),
                        (132, 3868, 3868),
                        (136, 7, 7),
                    ],
                ),
            ],
            None,
        ),
    ];
    for table in &versions {
        write_both(&by_nft, &in_process, table);
    }
    let meters = [
        metering_table(&[
            (RuleDirection::Egress, true, "10.0.0.7/32"),
            (RuleDirection::Egress, false, "10.0.0.0/24"),
            (RuleDirection::Ingress, false, "10.0.0.0/23"),
        ]),
        metering_table(&[(RuleDirection::Ingress, false, "0.0.0.0/0")]),
    ];
    for table in &meters {
        write_both(&by_nft, &in_process, table);
    }
    // Deleted: the NAT table goes, the metering table stays.
    by_nft
        .exec("nft", &["delete", "table", "ip", nat::TABLE])
        .unwrap();
    in_process
        .run(|| send_batch(&[delete_message(nat::TABLE)]))
        .unwrap();
    assert_eq!(ruleset(&by_nft), ruleset(&in_process));
    assert_eq!(
        in_process
            .run(|| table_user_data(&get_message(nat::TABLE)))
            .unwrap(),
        None
    );
    assert!(
        in_process
            .run(|| table_user_data(&get_message(metering::TABLE)))
            .unwrap()
            .is_some()
    );
}

#[test]
fn a_table_made_by_hand_has_no_fingerprint() {
    let ns = Netns::new("rtnf").unwrap();
    ns.exec("nft", &["add", "table", "ip", nat::TABLE]).unwrap();
    let data = ns
        .run(|| table_user_data(&get_message(nat::TABLE)))
        .unwrap();
    assert_eq!(data, Some(vec![]), "a table without a comment");
    assert_eq!(fingerprint_of(&data.unwrap()), None);
}
