//! Floating IPs: on which host each one's NAT happens, and what that host is
//! told. A floating IP lives on the host of the port it is associated with
//! (or, with port forwardings only, the host of its first forwarding's port):
//! its traffic enters and leaves the external network there, through the
//! router that host already holds. It follows its port from host to host.
//! Work per change is in proportion to the floating IPs of the port touched.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use model::FloatingIp;

use super::{Compiler, Emitter};
use crate::protocol::{Change, FloatingIpSpec, PortForwardingSpec};

#[derive(Debug)]
pub(super) struct FloatingIpEntry {
    router_id: Option<String>,
    /// Its `network:floatingip` port.
    port_id: String,
    address: IpAddr,
    /// The associated port and the fixed IP the floating IP stands for.
    association: Option<(String, IpAddr)>,
    /// By forwarding id: the internal port and the DNAT.
    forwardings: BTreeMap<String, (String, PortForwardingSpec)>,
    /// Where it is realised, and what that host was told.
    home: Option<(String, FloatingIpSpec)>,
}

impl FloatingIpEntry {
    fn new(fip: &FloatingIp) -> Self {
        FloatingIpEntry {
            router_id: fip.router_id().map(str::to_owned),
            port_id: fip.floating_port_id.clone(),
            address: fip.floating_ip_address,
            association: fip
                .association
                .as_ref()
                .map(|a| (a.port_id.clone(), a.fixed_ip_address)),
            forwardings: fip
                .port_forwardings
                .iter()
                .map(|p| {
                    let spec = PortForwardingSpec {
                        protocol: protocol_number(&p.protocol),
                        external_port: p.external_port,
                        internal_ip: p.internal_ip_address,
                        internal_port: p.internal_port,
                    };
                    (p.id.clone(), (p.internal_port_id.clone(), spec))
                })
                .collect(),
            home: None,
        }
    }

    /// The ports whose binding decides where it lives.
    fn ports(&self) -> BTreeSet<String> {
        self.association
            .iter()
            .map(|(p, _)| p.clone())
            .chain(self.forwardings.values().map(|(p, _)| p.clone()))
            .collect()
    }
}

/// The protocols a forwarding may name (the API admits no others).
fn protocol_number(name: &str) -> u8 {
    match name {
        "udp" => 17,
        "udplite" => 136,
        "sctp" => 132,
        _ => 6,
    }
}

impl Compiler {
    pub(super) fn put_floating_ip(&mut self, fip: &FloatingIp, out: &mut Emitter) {
        let id = &fip.std.id;
        let mut entry = FloatingIpEntry::new(fip);
        let old_ports = match self.floating_ips.remove(id) {
            Some(old) => {
                entry.home = old.home.clone();
                old.ports()
            }
            None => BTreeSet::new(),
        };
        let new_ports = entry.ports();
        for port in old_ports.difference(&new_ports) {
            if let Some(fips) = self.port_floating_ips.get_mut(port) {
                fips.remove(id);
                if fips.is_empty() {
                    self.port_floating_ips.remove(port);
                }
            }
        }
        for port in new_ports.difference(&old_ports) {
            self.port_floating_ips
                .entry(port.clone())
                .or_default()
                .insert(id.clone());
        }
        self.floating_ips.insert(id.clone(), entry);
        self.rehome_floating_ip(id, out);
    }

    pub(super) fn delete_floating_ip(&mut self, id: &str, out: &mut Emitter) {
        let Some(mut entry) = self.floating_ips.remove(id) else {
            return;
        };
        for port in entry.ports() {
            if let Some(fips) = self.port_floating_ips.get_mut(&port) {
                fips.remove(id);
                if fips.is_empty() {
                    self.port_floating_ips.remove(&port);
                }
            }
        }
        if let Some((host, _)) = entry.home.take() {
            self.floating_ip_leaves(id, &host, out);
        }
    }

    /// A port was put or deleted: its floating IPs follow its binding.
    pub(super) fn floating_ips_follow_port(&mut self, port_id: &str, out: &mut Emitter) {
        let fips: Vec<String> = self
            .port_floating_ips
            .get(port_id)
            .map(|f| f.iter().cloned().collect())
            .unwrap_or_default();
        for id in fips {
            self.rehome_floating_ip(&id, out);
        }
    }

    /// Works out where a floating IP lives and what its host holds; tells
    /// the old host to let go and the new one to take it, or the same host
    /// of what changed.
    fn rehome_floating_ip(&mut self, id: &str, out: &mut Emitter) {
        let Some(entry) = self.floating_ips.get(id) else {
            return;
        };
        let bound = |port: &str| {
            self.ports
                .get(port)
                .map(|p| p.host.as_str())
                .filter(|h| !h.is_empty())
        };
        let host = match &entry.association {
            Some((port, _)) => bound(port),
            None => entry.forwardings.values().find_map(|(port, _)| bound(port)),
        };
        let new = host.zip(entry.router_id.as_ref()).map(|(host, router_id)| {
            let spec = FloatingIpSpec {
                router_id: router_id.clone(),
                port_id: entry.port_id.clone(),
                address: entry.address,
                fixed_ip: entry
                    .association
                    .as_ref()
                    .filter(|(port, _)| bound(port) == Some(host))
                    .map(|(_, ip)| *ip),
                port_forwardings: entry
                    .forwardings
                    .iter()
                    .filter(|(_, (port, _))| bound(port) == Some(host))
                    .map(|(pf, (_, spec))| (pf.clone(), spec.clone()))
                    .collect(),
            };
            (host.to_owned(), spec)
        });
        if new == entry.home {
            return;
        }
        let old = entry.home.clone();
        if let Some(entry) = self.floating_ips.get_mut(id) {
            entry.home = new.clone();
        }
        if let Some((old_host, _)) = &old
            && new.as_ref().is_none_or(|(h, _)| h != old_host)
        {
            self.floating_ip_leaves(id, old_host, out);
        }
        if let Some((host, spec)) = new {
            self.hosts
                .entry(host.clone())
                .or_default()
                .floating_ips
                .insert(id.to_owned());
            out.push(
                &host,
                Change::FloatingIpUpsert {
                    floating_ip_id: id.to_owned(),
                    spec,
                },
            );
        }
    }

    fn floating_ip_leaves(&mut self, id: &str, host: &str, out: &mut Emitter) {
        if let Some(h) = self.hosts.get_mut(host) {
            h.floating_ips.remove(id);
        }
        out.push(
            host,
            Change::FloatingIpRemove {
                floating_ip_id: id.to_owned(),
            },
        );
        self.forget_host_if_unused(host);
    }

    /// The floating IPs realised on a host, for its snapshot.
    pub(super) fn floating_ip_home_of(&self, id: &str) -> Option<(&str, &FloatingIpSpec)> {
        let (host, spec) = self.floating_ips.get(id)?.home.as_ref()?;
        Some((host.as_str(), spec))
    }

    pub(super) fn floating_ips_of_host(
        &self,
        host: &str,
    ) -> impl Iterator<Item = (&String, &FloatingIpSpec)> {
        self.hosts
            .get(host)
            .into_iter()
            .flat_map(|h| h.floating_ips.iter())
            .filter_map(|id| Some((id, &self.floating_ips.get(id)?.home.as_ref()?.1)))
    }
}
