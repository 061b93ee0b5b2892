//! Metering labels in router specs: a router counts its project's labels
//! and every shared one; a label or rule change reaches exactly the hosts
//! holding the routers it applies to.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Replay, changes_of, host, hosts_in, network, port, subnet};
use compiler::Input;
use compiler::protocol::{Change, MeteringRuleSpec, RuleDirection};
use model::{
    Direction, MeteringLabel, MeteringLabelRule, OWNER_ROUTER_INTERFACE, Router, Standard,
};

const HOSTS: &[&str] = &["h1", "h2"];

fn router(id: &str, project: &str) -> Input {
    Input::Router(Box::new(Router {
        std: Standard::new(id.into(), project.into(), 0),
        admin_state_up: true,
        gateway: None,
        routes: vec![],
        availability_zone_hints: vec![],
    }))
}

fn label(id: &str, project: &str, shared: bool) -> Input {
    Input::MeteringLabel(Box::new(MeteringLabel {
        std: Standard::new(id.into(), project.into(), 0),
        shared,
    }))
}

fn rule(id: &str, label: &str, remote: &str, excluded: bool) -> Input {
    Input::MeteringLabelRule(Box::new(MeteringLabelRule {
        std: Standard::new(id.into(), String::new(), 0),
        metering_label_id: label.into(),
        direction: Direction::Egress,
        excluded,
        remote_ip_prefix: Some(remote.parse().unwrap()),
        source_ip_prefix: None,
        destination_ip_prefix: None,
    }))
}

/// Two hosts; project `p`'s router `ra` (network `na`, a port on h1) and
/// project `q`'s router `rb` (network `nb`, a port on h2).
fn cloud() -> Replay {
    let mut r = Replay::default();
    r.step(host("h1", "192.0.2.1"), HOSTS);
    r.step(host("h2", "192.0.2.2"), HOSTS);
    for (net, vni, cidr, router_id, project, vm_host) in [
        ("na", 100, "10.0.0.0/24", "ra", "p", "h1"),
        ("nb", 101, "10.1.0.0/24", "rb", "q", "h2"),
    ] {
        r.step(Input::Network(Box::new(network(net, vni, 1450))), HOSTS);
        let sub = format!("s{net}");
        r.step(Input::Subnet(Box::new(subnet(&sub, net, cidr))), HOSTS);
        r.step(router(router_id, project), HOSTS);
        let gateway_ip = cidr.replace(".0/24", ".1");
        let mut iface = port(&format!("i{net}"), net, "", 1, &[(&sub, &gateway_ip)]);
        iface.device_owner = OWNER_ROUTER_INTERFACE.into();
        iface.device_id = router_id.into();
        r.step(Input::Port(Box::new(iface)), HOSTS);
        let vm_ip = cidr.replace(".0/24", ".5");
        r.step(
            Input::Port(Box::new(port(
                &format!("vm{net}"),
                net,
                vm_host,
                5,
                &[(&sub, &vm_ip)],
            ))),
            HOSTS,
        );
    }
    r
}

fn labels_of(r: &Replay, host: &str, router: &str) -> Vec<String> {
    r.compiler.snapshot(host).routers[router]
        .metering
        .keys()
        .cloned()
        .collect()
}

#[test]
fn a_router_counts_its_projects_labels_and_the_shared_ones() {
    let mut r = cloud();
    // Project p's label reaches only h1, which holds p's router.
    let changes = r.step(label("lp", "p", false), HOSTS);
    assert_eq!(hosts_in(&changes), vec!["h1"]);
    let changes = r.step(rule("r1", "lp", "10.0.0.0/24", false), HOSTS);
    assert_eq!(hosts_in(&changes), vec!["h1"]);
    let Change::RouterUpsert { router_id, spec } = changes_of(&changes, "h1")[0] else {
        panic!("{changes:?}");
    };
    assert_eq!(router_id, "ra");
    assert_eq!(
        spec.metering["lp"].rules["r1"],
        MeteringRuleSpec {
            direction: RuleDirection::Egress,
            excluded: false,
            remote_ip_prefix: Some("10.0.0.0/24".parse().unwrap()),
            source_ip_prefix: None,
            destination_ip_prefix: None,
        }
    );
    assert!(labels_of(&r, "h2", "rb").is_empty());

    // A shared label (of another project) reaches every router.
    let changes = r.step(label("ls", "admin", true), HOSTS);
    assert_eq!(hosts_in(&changes), vec!["h1", "h2"]);
    r.step(rule("r2", "ls", "0.0.0.0/0", false), HOSTS);
    r.step(rule("r3", "ls", "10.1.0.0/24", true), HOSTS);
    assert_eq!(labels_of(&r, "h1", "ra"), vec!["lp", "ls"]);
    assert_eq!(labels_of(&r, "h2", "rb"), vec!["ls"]);
    assert!(r.compiler.snapshot("h2").routers["rb"].metering["ls"].rules["r3"].excluded);

    // A router arriving later counts what applies to it.
    r.step(router("ra", "q"), HOSTS);
    assert_eq!(labels_of(&r, "h1", "ra"), vec!["ls"]);
    r.step(router("ra", "p"), HOSTS);

    // Deleting a rule, then a label, reaches the same hosts.
    let changes = r.step(Input::MeteringLabelRuleDeleted("r1".into()), HOSTS);
    assert_eq!(hosts_in(&changes), vec!["h1"]);
    assert!(
        r.compiler.snapshot("h1").routers["ra"].metering["lp"]
            .rules
            .is_empty()
    );
    let changes = r.step(Input::MeteringLabelDeleted("ls".into()), HOSTS);
    assert_eq!(hosts_in(&changes), vec!["h1", "h2"]);
    assert_eq!(labels_of(&r, "h1", "ra"), vec!["lp"]);
    assert!(labels_of(&r, "h2", "rb").is_empty());
}

#[test]
fn a_rule_before_its_label_waits_for_it() {
    let mut r = cloud();
    let changes = r.step(rule("r1", "lq", "10.1.0.0/24", false), HOSTS);
    assert!(changes.is_empty());
    r.step(label("lq", "q", false), HOSTS);
    let snapshot = r.compiler.snapshot("h2");
    assert!(
        snapshot.routers["rb"].metering["lq"]
            .rules
            .contains_key("r1")
    );
}
