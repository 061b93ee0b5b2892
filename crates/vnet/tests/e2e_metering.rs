//! Metering end to end, as root, in throwaway namespaces: a real server and
//! agent on one gateway host, a tenant's router with a gateway, and labels
//! whose counters live in the router namespace's `table ip vnet_metering`.
//! Real pings through the uplink count on a matching rule's label, never on
//! a label whose excluded rule matches them, and the counters survive a NAT
//! change (a floating IP) that replaces the NAT table.

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{
    Cloud, PHYSICAL_NETWORK, add_interface, default_route, dhcp, router_namespaces, wait_for,
};
use serde_json::{Value, json};
use testworld::OUTSIDE_IP;

const P: &str = "proj-m";

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// The label counters (packets, bytes) in a router namespace, by label id.
fn counters(netns: &str) -> BTreeMap<String, (u64, u64)> {
    let Ok(out) = testworld::run_cmd(
        "ip",
        &[
            "netns",
            "exec",
            netns,
            "nft",
            "-j",
            "list",
            "counters",
            "table",
            "ip",
            "vnet_metering",
        ],
    ) else {
        return BTreeMap::new();
    };
    let value: Value = serde_json::from_str(&out).unwrap_or_default();
    value["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let c = item.get("counter")?;
            let label = c["name"].as_str()?.strip_prefix("l-")?.to_owned();
            Some((label, (c["packets"].as_u64()?, c["bytes"].as_u64()?)))
        })
        .collect()
}

fn label(cloud: &Cloud, body: Value) -> String {
    id(&cloud.call(
        "POST",
        "/v2.0/metering/metering-labels",
        Some(json!({ "metering_label": body })),
    )["metering_label"])
}

fn rule(cloud: &Cloud, body: Value) {
    cloud.call(
        "POST",
        "/v2.0/metering/metering-label-rules",
        Some(json!({ "metering_label_rule": body })),
    );
}

#[test]
fn traffic_through_the_uplink_counts_on_matching_labels_only() {
    let mut cloud = Cloud::with_external("em", 1, 1);
    let world = cloud.outside.take().unwrap();
    let public = id(&cloud.call(
        "POST",
        "/v2.0/networks",
        Some(json!({"network": {
            "name": "public", "router:external": true,
            "provider:network_type": "flat", "provider:physical_network": PHYSICAL_NETWORK,
        }})),
    )["network"]);
    cloud.call(
        "POST",
        "/v2.0/subnets",
        Some(json!({"subnet": {
            "network_id": public, "ip_version": 4, "cidr": "203.0.113.0/24",
            "gateway_ip": OUTSIDE_IP, "enable_dhcp": false,
            "allocation_pools": [{"start": "203.0.113.10", "end": "203.0.113.100"}],
        }})),
    );
    let (net, subnet) = cloud.network(P, "10.2.0.0/24");
    let router = id(&cloud.call(
        "POST",
        "/v2.0/routers",
        Some(json!({"router": {"project_id": P, "external_gateway_info": {"network_id": public}}})),
    )["router"]);
    add_interface(&cloud, &router, &subnet);

    // The project's label counts its VMs' traffic both ways (Neutron's
    // remote_ip_prefix: the tenant side); another of its labels counts
    // everything leaving except what its excluded rule names; a shared
    // label (the admin's) counts what goes to the outside's address.
    let counted = label(&cloud, json!({"name": "counted", "project_id": P}));
    for direction in ["ingress", "egress"] {
        rule(
            &cloud,
            json!({"metering_label_id": counted, "direction": direction, "remote_ip_prefix": "10.2.0.0/24"}),
        );
    }
    let excluded = label(&cloud, json!({"name": "excluded", "project_id": P}));
    rule(
        &cloud,
        json!({"metering_label_id": excluded, "direction": "egress", "remote_ip_prefix": "0.0.0.0/0"}),
    );
    rule(
        &cloud,
        json!({"metering_label_id": excluded, "direction": "egress", "remote_ip_prefix": "10.2.0.0/24", "excluded": true}),
    );
    let shared = label(&cloud, json!({"name": "shared", "shared": true}));
    rule(
        &cloud,
        json!({"metering_label_id": shared, "direction": "egress", "destination_ip_prefix": format!("{OUTSIDE_IP}/32")}),
    );
    // Another project's label never reaches this router.
    let foreign = label(&cloud, json!({"name": "foreign", "project_id": "other"}));
    rule(
        &cloud,
        json!({"metering_label_id": foreign, "direction": "egress", "remote_ip_prefix": "0.0.0.0/0"}),
    );

    let (port, vm) = cloud.vm(P, &net, &subnet, "10.2.0.10", 1);
    wait_for("the VM port ACTIVE", Duration::from_secs(20), || {
        cloud.status(&port) == "ACTIVE"
    });
    dhcp(&vm);
    default_route(&vm, "10.2.0.1");
    let netns = format!("{}-vnr-{router}", cloud.hosts[0].ns.name());
    assert_eq!(router_namespaces(&cloud, 0), std::slice::from_ref(&netns));
    wait_for("the labels' counters", Duration::from_secs(20), || {
        let c = counters(&netns);
        c.len() == 3
            && [&counted, &excluded, &shared]
                .iter()
                .all(|l| c.contains_key(*l))
    });

    assert_eq!(vm.ping(OUTSIDE_IP, 5), 5, "out through the uplink");
    let c = counters(&netns);
    assert!(c[&counted].0 >= 10, "5 out and 5 back: {c:?}");
    assert!(c[&counted].1 >= 10 * 84, "{c:?}");
    assert_eq!(c[&excluded], (0, 0), "excluded first: {c:?}");
    assert!(c[&shared].0 >= 5 && c[&shared].0 < 10, "egress only: {c:?}");

    // Traffic that never crosses the uplink counts nowhere.
    let before = counters(&netns);
    assert_eq!(vm.ping("10.2.0.1", 3), 3);
    assert_eq!(counters(&netns), before);

    // A floating IP replaces the NAT table; the counters stay.
    let fip = id(&cloud.call(
        "POST",
        "/v2.0/floatingips",
        Some(json!({"floatingip": {"project_id": P, "floating_network_id": public, "port_id": port}})),
    )["floatingip"]);
    wait_for("the floating IP ACTIVE", Duration::from_secs(20), || {
        cloud.call("GET", &format!("/v2.0/floatingips/{fip}"), None)["floatingip"]["status"]
            == "ACTIVE"
    });
    assert_eq!(counters(&netns), before, "NAT changes keep the counters");
    drop(world);
}
