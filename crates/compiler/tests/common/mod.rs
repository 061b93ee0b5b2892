//! Builders of model resources and a harness that replays every emitted change
//! into per-host states, for the compiler's tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use compiler::protocol::{Change, HostState};
use compiler::{Compiler, HostChanges, Input};
use model::{FixedIp, MacAddr, Network, Port, PortStatus, Standard, Subnet};

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn mac(last: u8) -> MacAddr {
    MacAddr([0xfa, 0x16, 0x3e, 0, 0, last])
}

pub fn network(id: &str, vni: u32, mtu: u32) -> Network {
    Network {
        std: Standard::new(id.into(), "project".into(), 0),
        admin_state_up: true,
        mtu,
        legacy_shared: false,
        legacy_external: false,
        port_security_enabled: true,
        network_type: "vxlan".into(),
        segmentation_id: vni,
        physical_network: None,
        availability_zone_hints: vec![],
        is_default: false,
    }
}

pub fn subnet(id: &str, network_id: &str, cidr: &str) -> Subnet {
    let cidr: ipnet::IpNet = cidr.parse().unwrap();
    let gateway = cidr.hosts().next();
    Subnet {
        std: Standard::new(id.into(), "project".into(), 0),
        network_id: network_id.into(),
        ip_version: if cidr.addr().is_ipv4() { 4 } else { 6 },
        cidr,
        gateway_ip: gateway,
        allocation_pools: vec![],
        dns_nameservers: vec![],
        host_routes: vec![],
        enable_dhcp: true,
        ipv6_ra_mode: None,
        ipv6_address_mode: None,
        subnetpool_id: None,
        service_types: vec![],
    }
}

/// A port with one address per `(subnet id, ip)`, bound to `host` ("" = unbound).
pub fn port(id: &str, network_id: &str, host: &str, mac_last: u8, ips: &[(&str, &str)]) -> Port {
    Port {
        std: Standard::new(id.into(), "project".into(), 0),
        network_id: network_id.into(),
        mac_address: mac(mac_last),
        admin_state_up: true,
        status: PortStatus::Down,
        device_id: String::new(),
        device_owner: String::new(),
        fixed_ips: ips
            .iter()
            .map(|(s, a)| FixedIp {
                subnet_id: (*s).into(),
                ip_address: ip(a),
            })
            .collect(),
        security_groups: vec![],
        port_security_enabled: true,
        allowed_address_pairs: vec![],
        extra_dhcp_opts: vec![],
        binding_host_id: host.into(),
        binding_vnic_type: "normal".into(),
        binding_profile: String::new(),
    }
}

pub fn host(name: &str, underlay_ip: &str) -> Input {
    Input::Host {
        name: name.into(),
        underlay_ip: ip(underlay_ip),
        physical_networks: vec![],
        gateway: false,
        availability_zone: compiler::protocol::DEFAULT_ZONE.into(),
    }
}

/// A compiler, with every host's state as rebuilt from the changes emitted so far.
#[derive(Default)]
pub struct Replay {
    pub compiler: Compiler,
    pub states: BTreeMap<String, HostState>,
}

impl Replay {
    /// Apply one input, replay its changes into the hosts' states, and return them.
    /// Panics if a member-set change is not one effective element change of a
    /// set the host holds: that is the protocol's promise to the agent.
    pub fn apply(&mut self, input: Input) -> HostChanges {
        let changes = self.compiler.apply(input);
        for (host, change) in &changes {
            let state = self.states.entry(host.clone()).or_default();
            match change {
                Change::RemoteGroupMemberAdd { group_id, member } => {
                    let set = state.remote_groups.get(group_id);
                    assert!(
                        set.is_some_and(|s| !s.contains(member)),
                        "{host}: {change:?} on {set:?}"
                    );
                }
                Change::RemoteGroupMemberRemove { group_id, member } => {
                    let set = state.remote_groups.get(group_id);
                    assert!(
                        set.is_some_and(|s| s.contains(member)),
                        "{host}: {change:?} on {set:?}"
                    );
                }
                _ => {}
            }
            state.apply(change.clone());
        }
        changes
    }

    /// Apply and check that the replayed states still equal the snapshots of `hosts`.
    pub fn step(&mut self, input: Input, hosts: &[&str]) -> HostChanges {
        let changes = self.apply(input);
        self.assert_replay_matches_snapshots(hosts);
        changes
    }

    pub fn assert_replay_matches_snapshots(&self, hosts: &[&str]) {
        for h in hosts {
            let replayed = self.states.get(*h).cloned().unwrap_or_default();
            assert_eq!(
                replayed,
                self.compiler.snapshot(h),
                "host {h}: replayed changes differ from the snapshot"
            );
        }
    }
}

/// The hosts named in `changes`, sorted and deduplicated.
pub fn hosts_in(changes: &HostChanges) -> Vec<&str> {
    let mut hosts: Vec<&str> = changes.iter().map(|(h, _)| h.as_str()).collect();
    hosts.sort_unstable();
    hosts.dedup();
    hosts
}

/// The changes one host got, in order.
pub fn changes_of<'a>(changes: &'a HostChanges, host: &str) -> Vec<&'a compiler::protocol::Change> {
    changes
        .iter()
        .filter(|(h, _)| h == host)
        .map(|(_, c)| c)
        .collect()
}
