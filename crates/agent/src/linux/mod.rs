//! The Linux kernel backend: makes the kernel of the current network
//! namespace match a host's desired state, by diff and never by flush.
//!
//! Per network the host carries: a bridge `vnbr<vni>` (fixed MAC
//! `02:76:6e:<vni>`, see `bridge_mac`) and a VXLAN device `vnvx<vni>` (id =
//! VNI, local = the host's underlay IP, dstport 4789, nolearning, the
//! network's MTU; both with `addrgenmode none`, so no IPv6 address and no
//! ND/MLD of their own), the VXLAN device a port
//! of the bridge with learning and every kind of flooding off and
//! `neigh_suppress` on. Per remote port: a static bridge FDB entry on the
//! VXLAN port plus a VXLAN FDB entry to its host's VTEP, and a permanent
//! neighbour entry per IP on the bridge (and, on a network with IPv6, one
//! for its link-local address), so that ARP/ND is answered locally.
//! Per local port: its device (created by Nova/libvirt or the test world,
//! never by vnet) attached to the bridge, up, with the network's MTU, a
//! static FDB entry for its MAC and neighbour entries for its IPs. Per
//! router interface on a network the host carries: the host end of its veth
//! (`vnrt<port>`, made by the `router` backend) wired like a local port,
//! with a static FDB entry for the interface's MAC. There is
//! no flood entry anywhere: no broadcast or unknown unicast crosses the
//! overlay.
//!
//! A flat network (a physical network the agent maps to an interface) is a
//! bridge `vnbrf<hash>` (see `network_bridge`) enslaving that interface with
//! the kernel's port defaults, and no VXLAN device, VXLAN FDB or neighbour
//! entry: the physical segment learns and resolves like any LAN. The
//! interface, like a port's device, is attached and detached, never created,
//! deleted or reconfigured (its MTU and addresses stay the host's).
//!
//! The cycle is `observe` (netlink dumps → [`Observed`], only what vnet
//! owns), [`plan`] (pure: desired × observed → [`Op`]s) and `execute` (one
//! netlink conversation). [`Reconciler::reconcile_cached`] skips the dumps
//! and plans against the view the last reconcile left; [`LinkEvents`] says
//! when that view is stale (a port device plugged in or gone). It must never
//! touch a link, FDB entry or neighbour that vnet does not own, and never
//! delete a port's device (only detach it).

mod desired;
mod events;
mod incremental;
mod link;
mod names;
mod netlink;
mod observed;
mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use compiler::protocol::HostState;
use netlink_packet_route::AddressFamily;

pub use desired::{Desired, DesiredLink, DesiredPort};
pub use events::{LinkEvent, LinkEvents};
pub use incremental::{IncrementalDesired, Touched, restrict};
pub use link::{LinkKind, PortFlags};
pub use names::{
    BRIDGE_PREFIX, FLAT_BRIDGE_PREFIX, ROUTER_PORT_PREFIX, VXLAN_PORT, VXLAN_PREFIX, bridge_name,
    is_owned, network_bridge, network_bridge_mac, router_port_name, vxlan_name,
};
pub use netlink::{OpError, OpFailure};
pub use observed::{Observed, ObservedLink};
pub use plan::{Op, Phase, diff, plan};

/// The IPv4 addresses of other hosts' ports that `applied` just made
/// answerable on their network's bridge, among the `changed` networks
/// (`None`: any), with the bridge and the port's MAC. The bridge answers ARP
/// only from its entries and floods none over the overlay: a local VM that
/// asked before the entry came is left waiting for its own next ARP, a
/// second later, unless it is told (a gratuitous ARP, see `crate::garp`).
pub fn remote_arrivals(
    state: &HostState,
    applied: &[Op],
    changed: Option<&BTreeSet<String>>,
) -> Vec<(String, Ipv4Addr, model::MacAddr)> {
    let added: BTreeSet<(&str, Ipv4Addr, model::MacAddr)> = applied
        .iter()
        .filter_map(|op| match op {
            Op::AddNeighbour {
                bridge,
                ip: IpAddr::V4(ip),
                mac,
            } => Some((bridge.as_str(), *ip, *mac)),
            _ => None,
        })
        .collect();
    if added.is_empty() {
        return vec![];
    }
    let networks: Vec<_> = match changed {
        Some(ids) => ids.iter().filter_map(|id| state.networks.get(id)).collect(),
        None => state.networks.values().collect(),
    };
    let mut arrivals = vec![];
    for net in networks {
        let bridge = network_bridge(net);
        for port in net.remote_ports.values() {
            for ip in &port.ips {
                if let IpAddr::V4(ip) = ip
                    && added.contains(&(bridge.as_str(), *ip, port.mac))
                {
                    arrivals.push((bridge.clone(), *ip, port.mac));
                }
            }
        }
    }
    arrivals
}

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
    /// Physical network name → this host's interface on it
    /// (`vnet agent --physical-network NAME:IFACE`).
    pub physical_networks: BTreeMap<String, String>,
    /// This host's name: a router's uplink MAC here depends on whether this
    /// is its gateway host.
    pub host: String,
}

impl LinuxConfig {
    pub fn new(underlay_ip: IpAddr) -> Self {
        LinuxConfig {
            underlay_ip,
            vxlan_port: VXLAN_PORT,
            physical_networks: BTreeMap::new(),
            host: String::new(),
        }
    }

    /// Named `host` (as routers' gateway specs name their gateway host).
    pub fn with_host(mut self, host: &str) -> Self {
        self.host = host.to_owned();
        self
    }

    /// With these physical network mappings (name → interface).
    pub fn with_physical_networks(mut self, mappings: BTreeMap<String, String>) -> Self {
        self.physical_networks = mappings;
        self
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
///
/// [`Reconciler::reconcile`] is level-triggered: it reads the kernel every
/// time. [`Reconciler::reconcile_cached`] plans against the view the last
/// reconcile left (the observation with its accepted operations applied), so
/// a one-port change costs its own operations, not three dumps; it cannot
/// see changes made behind its back (an entry deleted by hand), so call
/// `reconcile` periodically; a device coming or going is told to it by
/// [`Reconciler::devices_changed`] (a link event).
#[derive(Debug)]
pub struct Reconciler {
    config: LinuxConfig,
    netlink: netlink::Netlink,
    /// The kernel as the last reconcile left it, and the desired objects
    /// of its state; `None` after a failure. (Reconciles run one at a
    /// time; the lock only guards the hand-over.)
    kept: Mutex<Option<(Observed, IncrementalDesired)>>,
}

impl Reconciler {
    /// Opens the netlink connection in the calling thread's network namespace
    /// (it stays bound to it). Must be called inside a tokio runtime.
    pub fn new(config: LinuxConfig) -> Result<Self, Error> {
        Ok(Reconciler {
            config,
            netlink: netlink::Netlink::connect()?,
            kept: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &LinuxConfig {
        &self.config
    }

    fn kept_slot(&self) -> MutexGuard<'_, Option<(Observed, IncrementalDesired)>> {
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The kernel as the last reconcile left it, if it fully succeeded.
    pub fn view(&self) -> Option<Observed> {
        self.kept_slot().as_ref().map(|(view, _)| view.clone())
    }

    /// Forgets the cached view: the next `reconcile_cached` observes.
    pub fn invalidate(&self) {
        *self.kept_slot() = None;
    }

    /// Tells the cached view that these devices came or went (link
    /// events): each is read again by name, and the static FDB entries on
    /// it are forgotten (the kernel drops them with the device; one that
    /// comes back has none). A reconcile of the networks naming them then
    /// wires what they need, at the cost of those devices, not the host.
    pub async fn devices_changed(&self, names: &[String]) -> Result<(), Error> {
        let Some((mut view, kept)) = self.kept_slot().take() else {
            return Ok(());
        };
        let links = self.netlink.get_links(names).await?;
        view.refresh_devices(&links, names);
        for entries in view.fdb.values_mut() {
            entries.retain(|_, dev| !names.contains(dev));
        }
        view.fdb.retain(|_, entries| !entries.is_empty());
        *self.kept_slot() = Some((view, kept));
        Ok(())
    }

    /// Reads what vnet owns, plus the port devices `desired` names.
    pub async fn observe(&self, desired: &HostState) -> Result<Observed, Error> {
        let want = Desired::from_host_state(desired, &self.config);
        self.observe_ports(&want).await
    }

    async fn observe_ports(&self, want: &Desired) -> Result<Observed, Error> {
        let devices: BTreeSet<String> = want
            .ports
            .keys()
            .chain(want.uplinks.keys())
            .cloned()
            .collect();
        let links = self.netlink.dump_links().await?;
        let fdb = self.netlink.dump_neighbours(AddressFamily::Bridge).await?;
        let mut neighbours = self.netlink.dump_neighbours(AddressFamily::Inet).await?;
        neighbours.extend(self.netlink.dump_neighbours(AddressFamily::Inet6).await?);
        Ok(Observed::from_dumps(&links, &fdb, &neighbours, &devices))
    }

    /// Runs `ops` (as [`plan`] returns them); returns those the kernel refused.
    pub async fn execute(&self, ops: &[Op]) -> Result<Vec<OpFailure>, Error> {
        let indexes = self.netlink.link_indexes().await?;
        Ok(self.netlink.execute(ops, indexes).await?.0)
    }

    /// Observes, plans and executes; reports each local port's wiring as the
    /// kernel has it afterwards.
    pub async fn reconcile(&self, desired: &HostState) -> Result<ReconcileReport, Error> {
        let start = Instant::now();
        let want = IncrementalDesired::new(desired, &self.config);
        let observed = self.observe_ports(want.desired()).await?;
        self.converge(want, observed, None, start).await
    }

    /// Like [`Reconciler::reconcile`], but plans against the cached view when
    /// there is one (see the type's documentation).
    pub async fn reconcile_cached(&self, desired: &HostState) -> Result<ReconcileReport, Error> {
        self.reconcile_changed(desired, None).await
    }

    /// Like [`Reconciler::reconcile_cached`], told which networks changed
    /// since the last reconcile (every network a change named; `None`:
    /// maybe any): only theirs, and the routers' ports, are rebuilt and
    /// diffed.
    pub async fn reconcile_changed(
        &self,
        desired: &HostState,
        changed: Option<&BTreeSet<String>>,
    ) -> Result<ReconcileReport, Error> {
        let start = Instant::now();
        let cached = self.kept_slot().take();
        let (observed, want, touched) = match cached {
            Some((mut view, mut kept)) => {
                let touched = match changed {
                    Some(changed) => kept.update(desired, changed, &self.config),
                    None => {
                        kept = IncrementalDesired::new(desired, &self.config);
                        None
                    }
                };
                let want = kept.desired();
                // Devices newly named by the desired state are unknown to
                // the view: look them up (by name) only then, and only
                // those of what changed (a port whose device is missing
                // stays unknown: asking of it again at every change would
                // cost a request per such port; its device appearing is
                // a link event, and a full reconcile).
                let bridges = want
                    .ports
                    .iter()
                    .map(|(d, p)| (d, &p.bridge))
                    .chain(want.uplinks.iter());
                let unknown: Vec<String> = bridges
                    .filter(|(d, bridge)| {
                        !view.links.contains_key(*d)
                            && touched.as_ref().is_none_or(|t| {
                                t.devices.contains(*d) || t.tables.contains(*bridge)
                            })
                    })
                    .map(|(d, _)| d.clone())
                    .collect();
                if !unknown.is_empty() {
                    let links = self.netlink.get_links(&unknown).await?;
                    view.refresh_devices(&links, &unknown);
                }
                (view, kept, touched)
            }
            None => {
                let want = IncrementalDesired::new(desired, &self.config);
                (self.observe_ports(want.desired()).await?, want, None)
            }
        };
        self.converge(want, observed, touched, start).await
    }

    /// Plans (all of it, or what `touched` names), executes, and keeps
    /// the view the operations leave.
    async fn converge(
        &self,
        kept: IncrementalDesired,
        mut observed: Observed,
        touched: Option<Touched>,
        start: Instant,
    ) -> Result<ReconcileReport, Error> {
        let observed_at = Instant::now();
        let want = kept.desired();
        let ops = match &touched {
            Some(touched) => {
                let (want, have) = restrict(want, &observed, touched);
                diff(&want, &have)
            }
            None => diff(want, &observed),
        };
        let planned_at = Instant::now();
        let mut failed = Vec::new();
        if !ops.is_empty() {
            let indexes = observed
                .links
                .iter()
                .map(|(name, l)| (name.clone(), l.index))
                .collect();
            let (refused, indexes) = self.netlink.execute(&ops, indexes).await?;
            failed = refused;
            if failed.is_empty() {
                for op in &ops {
                    observed.apply(op);
                }
                observed.set_indexes(&indexes);
                observed.retain_relevant(want);
            } else {
                // Re-read what the kernel has, to report it truthfully.
                observed = self.observe_ports(want).await?;
            }
        }
        let executed_at = Instant::now();
        let refused: Vec<&Op> = failed.iter().map(|f| &f.op).collect();
        let applied = ops
            .into_iter()
            .filter(|op| !refused.contains(&op))
            .collect();
        let report = ReconcileReport {
            applied,
            ports: port_wiring(want, &observed.links),
            failed,
            timings: Timings {
                observe: observed_at - start,
                plan: planned_at - observed_at,
                execute: executed_at - planned_at,
                total: executed_at - start,
            },
        };
        *self.kept_slot() = report.failed.is_empty().then_some((observed, kept));
        Ok(report)
    }
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
