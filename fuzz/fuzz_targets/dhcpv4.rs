//! A frame from a VM's port, answered (or not) by the agent's DHCPv4 server.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::LazyLock;

use compiler::protocol::{DhcpLease, LEASE_SECONDS};

static LEASE: LazyLock<DhcpLease> = LazyLock::new(|| DhcpLease {
    // The MAC of the captured frames in the corpus.
    mac: "fa:16:3e:12:34:56".parse().expect("a MAC"),
    ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
    prefix_len: 24,
    gateway: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
    dns_nameservers: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))],
    host_routes: vec![],
    mtu: 1450,
    lease_seconds: LEASE_SECONDS,
});

libfuzzer_sys::fuzz_target!(|frame: &[u8]| {
    let _ = agent::dhcp::responder::respond(frame, &LEASE);
});
