//! A frame from a VM's port, as the agent's IPv6 host services read it: a
//! router solicitation to answer, or a DHCPv6 request answered (or not).
#![no_main]

use std::sync::LazyLock;

use agent::dhcp::dhcpv6::{Dhcpv6Lease, extra_option, respond};
use agent::dhcp::router_advert::is_router_solicitation;

static LEASE: LazyLock<Dhcpv6Lease> = LazyLock::new(|| Dhcpv6Lease {
    // The MAC of the captured frames in the corpus.
    mac: "fa:16:3e:00:00:01".parse().expect("a MAC"),
    addresses: vec!["fd00:c::10".parse().expect("an address")],
    options: [
        extra_option("dns-server", "fd00:6::53"),
        extra_option("domain-search", "openstacklocal"),
    ]
    .into_iter()
    .flatten()
    .collect(),
});

libfuzzer_sys::fuzz_target!(|frame: &[u8]| {
    let _ = is_router_solicitation(frame);
    let _ = respond(frame, &LEASE);
});
