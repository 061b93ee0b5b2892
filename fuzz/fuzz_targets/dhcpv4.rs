//! A frame from a VM's port, answered (or not) by the agent's DHCPv4 server
//! for a port with its own options; and the same bytes as a tenant's
//! `extra_dhcp_opts` entry (`name=value`), read as the server reads them.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::LazyLock;

use compiler::protocol::{DhcpLease, DhcpOptionSpec, LEASE_SECONDS};

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
    extra_options: [
        ("bootfile-name", "pxelinux.0"),
        ("server-ip-address", "10.0.0.9"),
        ("dns-server", "10.9.9.9"),
        ("domain-search", "example.org,lab"),
    ]
    .into_iter()
    .map(|(name, value)| DhcpOptionSpec {
        name: name.into(),
        value: value.into(),
    })
    .collect(),
});

libfuzzer_sys::fuzz_target!(|frame: &[u8]| {
    let _ = agent::dhcp::responder::respond(frame, &LEASE);
    if let Some((name, value)) = std::str::from_utf8(frame)
        .ok()
        .and_then(|s| s.split_once('='))
    {
        let _ = agent::dhcp::responder::extra_option(name, value);
    }
});
