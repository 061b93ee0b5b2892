//! Availability zones and gateway placement: a router with zone hints takes
//! its gateway host from those zones only; without hints, from any gateway
//! host; a host that changes zone moves exactly the routers that now want
//! it, or no longer may have it.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Replay, network, subnet};
use compiler::Input;
use model::{FixedIp, Gateway, Router, Standard};

const HOSTS: &[&str] = &["h1", "h2", "h3"];

fn gateway_host(name: &str, ip: &str, zone: &str) -> Input {
    Input::Host {
        name: name.into(),
        underlay_ip: ip.parse().unwrap(),
        physical_networks: vec!["external".into()],
        gateway: true,
        availability_zone: zone.into(),
    }
}

fn router(id: &str, zones: &[&str]) -> Input {
    Input::Router(Box::new(Router {
        std: Standard::new(id.into(), "p".into(), 0),
        admin_state_up: true,
        gateway: Some(Gateway {
            network_id: "ext".into(),
            enable_snat: true,
            port_id: format!("gw-{id}"),
            external_fixed_ips: vec![FixedIp {
                subnet_id: "sext".into(),
                ip_address: "203.0.113.5".parse().unwrap(),
            }],
        }),
        routes: vec![],
        availability_zone_hints: zones.iter().map(|z| (*z).to_owned()).collect(),
    }))
}

fn cloud() -> Replay {
    let mut r = Replay::default();
    r.step(gateway_host("h1", "192.0.2.1", "az1"), HOSTS);
    r.step(gateway_host("h2", "192.0.2.2", "az2"), HOSTS);
    r.step(gateway_host("h3", "192.0.2.3", "az2"), HOSTS);
    let mut ext = network("ext", 0, 1450);
    ext.network_type = model::FLAT.into();
    ext.physical_network = Some("external".into());
    r.step(Input::Network(Box::new(ext)), HOSTS);
    r.step(
        Input::Subnet(Box::new(subnet("sext", "ext", "203.0.113.0/24"))),
        HOSTS,
    );
    r
}

fn placed(r: &Replay, router: &str) -> Option<String> {
    r.compiler.gateway_host_of(router).map(str::to_owned)
}

#[test]
fn zone_hints_choose_among_that_zones_gateway_hosts() {
    let mut r = cloud();
    // Many routers: with no hints they spread over every gateway host; with
    // hints, each lands in its zone.
    for i in 0..12 {
        r.step(router(&format!("any{i}"), &[]), HOSTS);
        r.step(router(&format!("one{i}"), &["az1"]), HOSTS);
        r.step(router(&format!("two{i}"), &["az2"]), HOSTS);
    }
    let mut anywhere = std::collections::BTreeSet::new();
    for i in 0..12 {
        anywhere.insert(placed(&r, &format!("any{i}")).unwrap());
        assert_eq!(placed(&r, &format!("one{i}")).as_deref(), Some("h1"));
        let two = placed(&r, &format!("two{i}")).unwrap();
        assert!(two == "h2" || two == "h3", "{two}");
    }
    assert_eq!(anywhere.len(), 3, "unhinted routers use every zone");

    // A zone with no gateway host leaves the router without one.
    r.step(router("nowhere", &["az9"]), HOSTS);
    assert_eq!(placed(&r, "nowhere"), None);

    // h1 moves to az2: the az1 routers lose their gateway host, and h1
    // becomes a candidate for the az2 ones (rendezvous moves only those it wins).
    let before: Vec<Option<String>> = (0..12).map(|i| placed(&r, &format!("two{i}"))).collect();
    r.step(gateway_host("h1", "192.0.2.1", "az2"), HOSTS);
    for (i, was) in before.iter().enumerate() {
        assert_eq!(placed(&r, &format!("one{i}")), None);
        let now = placed(&r, &format!("two{i}")).unwrap();
        assert!(now == "h1" || Some(&now) == was.as_ref(), "{now}");
    }
    // A router whose hints change is placed again at once.
    r.step(router("one0", &["az2"]), HOSTS);
    assert!(placed(&r, "one0").is_some());
}
