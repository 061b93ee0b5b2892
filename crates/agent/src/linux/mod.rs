//! The Linux kernel backend: makes the kernel of the current network
//! namespace match a host's desired state, by diff and never by flush.
//!
//! Per network the host carries: a bridge `vnbr<vni>` and a VXLAN device
//! `vnvx<vni>` (id = VNI, local = the host's underlay IP, dstport 4789,
//! nolearning, the network's MTU, no IPv6 addresses), the VXLAN device a port
//! of the bridge with learning and every kind of flooding off and
//! `neigh_suppress` on. Per remote port: a static bridge FDB entry on the
//! VXLAN port plus a VXLAN FDB entry to its host's VTEP, and a permanent
//! neighbour entry per IP on the bridge, so that ARP/ND is answered locally.
//! Per local port: its device (created by Nova/libvirt or the test world,
//! never by vnet) attached to the bridge, up, with the network's MTU, a
//! static FDB entry for its MAC and neighbour entries for its IPs. There is
//! no flood entry anywhere: no broadcast or unknown unicast crosses the
//! overlay.
//!
//! The cycle is `observe` (netlink dumps → [`Observed`], only what vnet
//! owns), [`plan`] (pure: desired × observed → [`Op`]s) and `execute` (one
//! netlink conversation). It must never touch a link, FDB entry or neighbour
//! that vnet does not own, and never delete a port's device (only detach it).

mod desired;
mod link;
mod names;
mod netlink;
mod observed;
mod plan;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use compiler::protocol::HostState;
use netlink_packet_route::AddressFamily;

pub use desired::{Desired, DesiredLink, DesiredPort};
pub use link::{LinkKind, PortFlags};
pub use names::{BRIDGE_PREFIX, VXLAN_PORT, VXLAN_PREFIX, bridge_name, is_owned, vxlan_name};
pub use netlink::{OpError, OpFailure};
pub use observed::{Observed, ObservedLink};
pub use plan::{Op, Phase, diff, plan};

/// Errors that stop a reconcile as a whole (a single refused operation does
/// not: it is reported in [`ReconcileReport::failed`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open a netlink socket")]
    Connect(#[source] std::io::Error),
    #[error("the netlink connection is closed")]
    ConnectionClosed,
    #[error("dumping {what} failed")]
    Dump {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("dumping {what} kept being interrupted by concurrent changes")]
    DumpInterrupted { what: &'static str },
}

/// How this host's overlay is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxConfig {
    /// The host's VXLAN tunnel endpoint (`local` of every VXLAN device).
    pub underlay_ip: IpAddr,
    /// UDP port of the overlay; [`VXLAN_PORT`] unless a test wants another.
    pub vxlan_port: u16,
}

impl LinuxConfig {
    pub fn new(underlay_ip: IpAddr) -> Self {
        LinuxConfig {
            underlay_ip,
            vxlan_port: VXLAN_PORT,
        }
    }
}

/// Where one local port stands after a reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortWiring {
    /// Its device exists, is a port of its network's bridge, and is up.
    Wired,
    /// No device of its name exists (yet).
    DeviceMissing,
    /// The device exists but is not a port of the network's bridge.
    NotAttached,
    /// Attached but down (its `admin_state_up` is false, or it could not be
    /// brought up).
    Down,
}

/// Time spent in each step of one reconcile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    pub observe: Duration,
    pub plan: Duration,
    pub execute: Duration,
    pub total: Duration,
}

/// What one reconcile did and found.
#[derive(Debug, Default)]
pub struct ReconcileReport {
    /// Operations the kernel accepted, in the order they ran.
    pub applied: Vec<Op>,
    /// Operations it refused; the next reconcile plans them again.
    pub failed: Vec<OpFailure>,
    /// Every local port of the desired state, by port id.
    pub ports: BTreeMap<String, PortWiring>,
    pub timings: Timings,
}

impl ReconcileReport {
    /// The ports to report as wired (ACTIVE), by id.
    pub fn wired(&self) -> Vec<String> {
        self.ports
            .iter()
            .filter(|(_, w)| **w == PortWiring::Wired)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether the kernel already matched the desired state.
    pub fn unchanged(&self) -> bool {
        self.applied.is_empty() && self.failed.is_empty()
    }
}

/// Reconciles the kernel of the network namespace it was created in.
#[derive(Debug)]
pub struct Reconciler {
    config: LinuxConfig,
    netlink: netlink::Netlink,
}

impl Reconciler {
    /// Opens the netlink connection in the calling thread's network namespace
    /// (it stays bound to it). Must be called inside a tokio runtime.
    pub fn new(config: LinuxConfig) -> Result<Self, Error> {
        Ok(Reconciler {
            config,
            netlink: netlink::Netlink::connect()?,
        })
    }

    pub fn config(&self) -> &LinuxConfig {
        &self.config
    }

    /// Reads what vnet owns, plus the port devices `desired` names.
    pub async fn observe(&self, desired: &HostState) -> Result<Observed, Error> {
        let devices = port_devices(desired);
        let (observed, _) = self.observe_devices(&devices).await?;
        Ok(observed)
    }

    async fn observe_devices(
        &self,
        devices: &BTreeSet<String>,
    ) -> Result<(Observed, HashMap<String, u32>), Error> {
        let links = self.netlink.dump_links().await?;
        let fdb = self.netlink.dump_neighbours(AddressFamily::Bridge).await?;
        let mut neighbours = self.netlink.dump_neighbours(AddressFamily::Inet).await?;
        neighbours.extend(self.netlink.dump_neighbours(AddressFamily::Inet6).await?);
        let indexes = links
            .iter()
            .filter_map(|l| Some((observed::link_name(l)?, l.header.index)))
            .collect();
        Ok((
            Observed::from_dumps(&links, &fdb, &neighbours, devices),
            indexes,
        ))
    }

    /// Runs `ops` (as [`plan`] returns them); returns those the kernel refused.
    pub async fn execute(&self, ops: &[Op]) -> Result<Vec<OpFailure>, Error> {
        let indexes = self.netlink.link_indexes().await?;
        self.netlink.execute(ops, indexes).await
    }

    /// Observes, plans and executes; then reports each local port's wiring
    /// as the kernel has it afterwards.
    pub async fn reconcile(&self, desired: &HostState) -> Result<ReconcileReport, Error> {
        let start = Instant::now();
        let want = Desired::from_host_state(desired, &self.config);
        let devices: BTreeSet<String> = want.ports.keys().cloned().collect();
        let (observed, indexes) = self.observe_devices(&devices).await?;
        let observed_at = Instant::now();
        let ops = diff(&want, &observed);
        let planned_at = Instant::now();
        let (failed, links) = if ops.is_empty() {
            (Vec::new(), observed.links)
        } else {
            let failed = self.netlink.execute(&ops, indexes).await?;
            let links = self.netlink.dump_links().await?;
            let after = Observed::from_dumps(&links, &[], &[], &devices);
            (failed, after.links)
        };
        let executed_at = Instant::now();
        let refused: Vec<&Op> = failed.iter().map(|f| &f.op).collect();
        let applied = ops
            .into_iter()
            .filter(|op| !refused.contains(&op))
            .collect();
        Ok(ReconcileReport {
            applied,
            ports: port_wiring(&want, &links),
            failed,
            timings: Timings {
                observe: observed_at - start,
                plan: planned_at - observed_at,
                execute: executed_at - planned_at,
                total: executed_at - start,
            },
        })
    }
}

fn port_devices(desired: &HostState) -> BTreeSet<String> {
    desired
        .networks
        .values()
        .flat_map(|n| n.local_ports.values().map(|p| p.device.clone()))
        .collect()
}

/// Each desired local port's wiring, given the links as they are.
pub fn port_wiring(
    want: &Desired,
    links: &BTreeMap<String, ObservedLink>,
) -> BTreeMap<String, PortWiring> {
    want.ports
        .iter()
        .map(|(dev, port)| {
            let wiring = match links.get(dev) {
                None => PortWiring::DeviceMissing,
                Some(l) if l.master.as_deref() != Some(port.bridge.as_str()) => {
                    PortWiring::NotAttached
                }
                Some(l) if !l.up => PortWiring::Down,
                Some(_) => PortWiring::Wired,
            };
            (port.port_id.clone(), wiring)
        })
        .collect()
}
