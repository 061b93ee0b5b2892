//! Distributed routers in the kernel: one network namespace per router that
//! has an interface on a network this host carries, the same interfaces
//! (MAC and gateway addresses) on every host, so that a VM's traffic to
//! another subnet is routed on its own host; with a gateway, an uplink on
//! the external network carrying this host's floating IPs, and on the
//! gateway host the default SNAT. [`plan`], [`nat`], [`metering`] and
//! [`table`] are the pure part; this module observes and changes the
//! namespaces over one rtnetlink connection per namespace (plus one in the
//! host's, to create the veth pairs), and replaces a namespace's NAT or
//! metering table with one nf_tables batch sent from inside it (no `nft`
//! process). Like the `linux` backend it never flushes and touches only
//! what it owns: the namespaces with its prefix, the `qr-`/`qg-` devices in
//! them, routes and rules of its own protocol, permanent neighbours on
//! `qr-` and `qg-`, `table ip vnet` (NAT) and `table ip vnet_metering`
//! (metering counters). The host ends of the veths are the `linux`
//! backend's to attach, like any port device.

pub mod metering;
pub mod nat;
mod netns;
mod plan;
pub mod table;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use compiler::protocol::HostState;
use futures::TryStreamExt;
use ipnet::IpNet;
use model::MacAddr;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressScope};
use netlink_packet_route::link::{
    BridgePortState, InfoBridgePort, InfoData, InfoPortData, InfoVeth, LinkAttribute, LinkFlags,
    LinkInfo, State,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage, RulePortRange};
use netlink_packet_route::{AddressFamily, IpProtocol};
use rtnetlink::{Handle, IpVersion, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::{garp, nft};
use netlink_packet_core::NetlinkMessage;
use netlink_packet_netfilter::NetfilterMessage;

pub use plan::{
    DesiredInterface, DesiredRouter, FLOATING_TABLE, MAIN_TABLE, Neighbour, ObservedInterface,
    ObservedRouter, Route, RouterConfig, RouterOp, Rule, UPLINK_TABLE, VNET_ROUTE_PROTOCOL,
    desired, diff, interface_device, uplink_device, uplink_mac,
};

/// What a router namespace is set to: it forwards; its interfaces'
/// addresses are usable at once (the same gateway address and link-local
/// address exist on every host on purpose, and never meet: nothing
/// multicast crosses the overlay, so duplicate address detection could only
/// delay them); it sends no ICMP redirects; it checks no reverse path
/// (traffic bound for the outside enters the gateway host's uplink and
/// leaves by it); and it answers ARP only for an address of the device
/// asked on (an uplink answers for its own floating IPs, never for the
/// interfaces' gateway addresses).
const ROUTER_SYSCTLS: [(&str, &str); 8] = [
    ("net/ipv4/ip_forward", "1"),
    ("net/ipv6/conf/all/forwarding", "1"),
    ("net/ipv6/conf/default/accept_dad", "0"),
    ("net/ipv4/conf/all/send_redirects", "0"),
    ("net/ipv4/conf/default/send_redirects", "0"),
    ("net/ipv4/conf/all/rp_filter", "0"),
    ("net/ipv4/conf/default/rp_filter", "0"),
    ("net/ipv4/conf/all/arp_ignore", "1"),
];

/// Why a router operation, or a look at a router, failed.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("namespace {netns}: {source}")]
    Namespace {
        netns: String,
        #[source]
        source: io::Error,
    },
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("no device {device} in {netns}")]
    NoDevice { netns: String, device: String },
    #[error("cannot open a netlink socket")]
    Connect(#[source] io::Error),
    #[error("nft in {netns}: {message}")]
    Nft { netns: String, message: String },
}

/// An operation the kernel refused.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {error}")]
pub struct RouterOpFailure {
    pub op: RouterOp,
    pub error: RouterError,
}

/// What one reconcile did.
#[derive(Debug, Default)]
pub struct RouterReport {
    pub applied: Vec<RouterOp>,
    pub failed: Vec<RouterOpFailure>,
    /// The interface and gateway ports (by id) of every router that is
    /// right now.
    pub realised: BTreeSet<String>,
    /// The floating IPs' ports realised by a router that is right now.
    pub floating: BTreeSet<String>,
}

/// One rtnetlink connection and the task that drives it; in a router's
/// namespace, also its packet socket for gratuitous ARPs.
struct Connection {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
    announcer: Option<garp::Announcer>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Connection {
    /// In the calling thread's namespace. Needs a tokio runtime.
    fn here() -> Result<Self, RouterError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(RouterError::Connect)?;
        Ok(Connection {
            handle,
            task: tokio::spawn(connection),
            announcer: None,
        })
    }

    /// In the named namespace.
    fn inside(netns: &str) -> Result<Self, RouterError> {
        let runtime = tokio::runtime::Handle::current();
        let (connection, handle, announcer) = netns::run_in(netns, move || {
            let _entered = runtime.enter();
            let (connection, handle, _) = rtnetlink::new_connection()?;
            Ok((connection, handle, garp::Announcer::open()?))
        })
        .map_err(|source| RouterError::Namespace {
            netns: netns.to_owned(),
            source,
        })?;
        Ok(Connection {
            handle,
            task: tokio::spawn(connection),
            announcer: Some(announcer),
        })
    }
}

/// Reconciles this host's router namespaces. Reconciles run one at a time
/// (the daemon's loop); `&mut self` says so.
pub struct RouterReconciler {
    config: RouterConfig,
    host: Connection,
    namespaces: HashMap<String, Connection>,
    /// The routers as the last reconcile left them right, by namespace.
    done: BTreeMap<String, DesiredRouter>,
    /// Gratuitous ARPs planned, with the port and the host end they wait
    /// for: sent before the `linux` backend attaches it, they would reach
    /// no bridge ([`RouterReconciler::announce`]).
    unannounced: Vec<(String, String, RouterOp)>,
}

impl RouterReconciler {
    /// Opens the host-side connection in the calling thread's namespace.
    pub fn new(config: RouterConfig) -> Result<Self, RouterError> {
        Ok(RouterReconciler {
            config,
            host: Connection::here()?,
            namespaces: HashMap::new(),
            done: BTreeMap::new(),
            unannounced: Vec::new(),
        })
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Makes the router namespaces match `state`. `full` reads every
    /// namespace vnet owns; otherwise only the routers that changed since
    /// the last reconcile are read and planned (a port change elsewhere
    /// costs nothing here).
    pub async fn reconcile(&mut self, state: &HostState, full: bool) -> RouterReport {
        let want = desired(state, &self.config);
        let mut names: BTreeSet<String> = if full {
            match netns::list(&self.config.netns_prefix) {
                Ok(names) => names.into_iter().collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list router namespaces");
                    BTreeSet::new()
                }
            }
        } else {
            self.done
                .keys()
                .filter(|n| !want.contains_key(*n))
                .cloned()
                .collect()
        };
        names.extend(
            want.iter()
                .filter(|(n, r)| full || self.done.get(*n) != Some(r))
                .map(|(n, _)| n.clone()),
        );
        let mut report = RouterReport::default();
        let mut have = BTreeMap::new();
        for netns in &names {
            match self.observe(netns).await {
                Ok(Some(observed)) => {
                    have.insert(netns.clone(), observed);
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%netns, %error, "cannot read router namespace");
                    self.namespaces.remove(netns);
                }
            }
        }
        let scoped: BTreeMap<String, DesiredRouter> = want
            .iter()
            .filter(|(n, _)| names.contains(*n))
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        // An announcement waits for its interface only while it is wanted.
        let wanted: BTreeSet<&String> = want
            .values()
            .flat_map(|r| r.interfaces.values())
            .map(|i| &i.port_id)
            .collect();
        self.unannounced
            .retain(|(port, _, _)| wanted.contains(port));
        let mut broken: BTreeSet<String> = BTreeSet::new();
        for op in diff(&scoped, &have) {
            if broken.contains(op.netns()) {
                continue;
            }
            if let RouterOp::Announce { netns, device, .. } = &op
                && let Some(iface) = scoped.get(netns).and_then(|r| r.interfaces.get(device))
            {
                let host_device = iface.host_device.clone();
                self.unannounced
                    .push((iface.port_id.clone(), host_device, op));
                continue;
            }
            match self.execute(&op).await {
                Ok(()) => report.applied.push(op),
                Err(error) => {
                    tracing::warn!(%op, %error, "router operation failed");
                    broken.insert(op.netns().to_owned());
                    report.failed.push(RouterOpFailure { op, error });
                }
            }
        }
        for netns in &names {
            match want.get(netns) {
                Some(router) if !broken.contains(netns) => {
                    self.done.insert(netns.clone(), router.clone());
                }
                _ => {
                    self.done.remove(netns);
                }
            }
        }
        for (netns, router) in &want {
            if self.done.get(netns) == Some(router) {
                report
                    .realised
                    .extend(router.interfaces.values().map(|i| i.port_id.clone()));
                report
                    .floating
                    .extend(router.floating_ports.iter().cloned());
            }
        }
        report
    }

    /// Sends the gratuitous ARPs planned for the interfaces and uplinks
    /// whose host ends are now attached (`wired`, by port id: the `linux`
    /// backend's report, after the reconcile that planned them); the others
    /// wait. Returns what it sent.
    pub async fn announce(&mut self, wired: &[String]) -> Vec<RouterOp> {
        let (ready, waiting) = std::mem::take(&mut self.unannounced)
            .into_iter()
            .partition(|(port, _, _)| wired.contains(port));
        self.unannounced = waiting;
        let mut sent = Vec::new();
        for (_, host_device, op) in ready {
            // The kernel's link watch, a moment after the link reconcile set
            // the host end up, starts the router end's transmit queue and
            // the bridge port's forwarding: a frame sent before either is
            // dropped.
            let deadline = tokio::time::Instant::now() + PORT_FORWARDING;
            while !self.carries(&op, &host_device).await {
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(%host_device, "veth not carrying yet; announcing anyway");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            match self.execute(&op).await {
                Ok(()) => sent.push(op),
                Err(error) => tracing::warn!(%op, %error, "router operation failed"),
            }
        }
        sent
    }

    /// Whether the router end of an announcement's veth is operationally
    /// up and its host end a bridge port that forwards.
    async fn carries(&mut self, op: &RouterOp, host_device: &str) -> bool {
        let RouterOp::Announce { netns, device, .. } = op else {
            return true;
        };
        let Ok(handle) = self.connection(netns).cloned() else {
            return false;
        };
        let up = link_attributes(&handle, device)
            .await
            .iter()
            .any(|a| matches!(a, LinkAttribute::OperState(State::Up)));
        up && link_attributes(&self.host.handle, host_device)
            .await
            .iter()
            .any(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos.iter().any(|info| {
                    matches!(info, LinkInfo::PortData(InfoPortData::BridgePort(port))
                        if port.contains(&InfoBridgePort::State(BridgePortState::Forwarding)))
                }),
                _ => false,
            })
    }

    /// The namespace's connection, opened on first use.
    fn connection(&mut self, netns: &str) -> Result<&Handle, RouterError> {
        if !self.namespaces.contains_key(netns) {
            let connection = Connection::inside(netns)?;
            self.namespaces.insert(netns.to_owned(), connection);
        }
        match self.namespaces.get(netns) {
            Some(c) => Ok(&c.handle),
            None => Err(RouterError::Connect(io::Error::other("no connection"))),
        }
    }

    /// The namespace's connection and the index of a device in it.
    async fn device(&mut self, netns: &str, device: &str) -> Result<(Handle, u32), RouterError> {
        let handle = self.connection(netns)?.clone();
        let index = index_of(&handle, netns, device).await?;
        Ok((handle, index))
    }

    /// What a router namespace has; `None` if it does not exist.
    pub async fn observe(&mut self, netns: &str) -> Result<Option<ObservedRouter>, RouterError> {
        if !netns::path(netns).exists() {
            self.namespaces.remove(netns);
            return Ok(None);
        }
        // One thread inside the namespace reads its sysctls and its tables.
        let name = netns.to_owned();
        let inside = tokio::task::spawn_blocking(move || {
            netns::run_in(&name, || Ok((sysctls_set()?, table_fingerprints())))
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        let (forwarding, fingerprints) = match inside {
            Ok(read) => read,
            // A file whose namespace is gone (a stale mount point).
            Err(_) => return Ok(None),
        };
        let handle = self.connection(netns)?.clone();
        let mut observed = ObservedRouter {
            forwarding,
            ..ObservedRouter::default()
        };
        let mut names: HashMap<u32, String> = HashMap::new();
        let mut links = handle.link().get().execute();
        while let Some(link) = links.try_next().await? {
            let mut name = None;
            let mut mac = None;
            let mut mtu = 0;
            for attribute in &link.attributes {
                match attribute {
                    LinkAttribute::IfName(n) => name = Some(n.clone()),
                    LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                    LinkAttribute::Mtu(m) => mtu = *m,
                    _ => {}
                }
            }
            let up = link.header.flags.contains(LinkFlags::Up);
            match name {
                Some(n) if n == "lo" => observed.loopback_up = up,
                Some(n) if n.starts_with("qr-") || n.starts_with("qg-") => {
                    names.insert(link.header.index, n.clone());
                    observed.interfaces.insert(
                        n,
                        ObservedInterface {
                            mac: mac.map(MacAddr),
                            mtu,
                            up,
                            addresses: BTreeSet::new(),
                        },
                    );
                }
                _ => {}
            }
        }
        let mut addresses = handle.address().get().execute();
        while let Some(address) = addresses.try_next().await? {
            let Some(device) = names.get(&address.header.index) else {
                continue;
            };
            if address.header.scope != AddressScope::Universe {
                continue; // link-local
            }
            let ip = address.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let (Some(ip), Some(iface)) = (ip, observed.interfaces.get_mut(device))
                && let Ok(net) = IpNet::new(ip, address.header.prefix_len)
            {
                iface.addresses.insert(net);
            }
        }
        for query in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let mut routes = handle.route().get(query).execute();
            while let Some(route) = routes.try_next().await? {
                if let Some(route) = own_route(&route, &names) {
                    observed.routes.insert(route);
                }
            }
        }
        for version in [IpVersion::V4, IpVersion::V6] {
            let mut rules = handle.rule().get(version).execute();
            while let Some(rule) = rules.try_next().await? {
                if let Some(rule) = own_rule(&rule) {
                    observed.rules.insert(rule);
                }
            }
        }
        let mut neighbours = handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute();
        while let Some(neighbour) = neighbours.try_next().await? {
            let device = names.get(&neighbour.header.ifindex);
            if let Some(device) = device.filter(|d| d.starts_with("qg-") || d.starts_with("qr-"))
                && let Some(neighbour) = own_neighbour(&neighbour, device)
            {
                observed.neighbours.insert(neighbour);
            }
        }
        let fingerprints = fingerprints.map_err(|source| RouterError::Namespace {
            netns: netns.to_owned(),
            source,
        })?;
        (observed.nat, observed.metering) = fingerprints;
        Ok(Some(observed))
    }

    async fn execute(&mut self, op: &RouterOp) -> Result<(), RouterError> {
        let in_ns = |netns: &str| {
            let netns = netns.to_owned();
            move |source| RouterError::Namespace { netns, source }
        };
        match op {
            RouterOp::CreateNamespace { netns } => {
                let name = netns.clone();
                blocking(move || netns::create(&name))
                    .await
                    .map_err(in_ns(netns))?;
            }
            RouterOp::DeleteNamespace { netns } => {
                self.namespaces.remove(netns);
                let name = netns.clone();
                blocking(move || netns::delete(&name))
                    .await
                    .map_err(in_ns(netns))?;
            }
            RouterOp::EnableForwarding { netns } => {
                let name = netns.clone();
                blocking(move || {
                    netns::run_in(&name, || {
                        for (key, value) in ROUTER_SYSCTLS {
                            std::fs::write(std::path::Path::new("/proc/sys").join(key), value)?;
                        }
                        Ok(())
                    })
                })
                .await
                .map_err(in_ns(netns))?;
            }
            RouterOp::LoopbackUp { netns } => {
                let (handle, index) = self.device(netns, "lo").await?;
                let msg = LinkUnspec::new_with_index(index).up().build();
                handle.link().set(msg).execute().await?;
            }
            RouterOp::CreateInterface {
                netns,
                device,
                host_device,
                mac,
                mtu,
            } => {
                self.create_interface(netns, device, host_device, *mac, *mtu)
                    .await?
            }
            RouterOp::DeleteInterface { netns, device } => {
                let (handle, index) = self.device(netns, device).await?;
                handle.link().del(index).execute().await?;
            }
            RouterOp::SetInterface {
                netns,
                device,
                mac,
                mtu,
            } => {
                let (handle, index) = self.device(netns, device).await?;
                let msg = LinkUnspec::new_with_index(index)
                    .address(mac.0.to_vec())
                    .mtu(*mtu)
                    .up()
                    .build();
                handle.link().set(msg).execute().await?;
            }
            RouterOp::AddAddress {
                netns,
                device,
                address,
            } => {
                let (handle, index) = self.device(netns, device).await?;
                let mut request = handle
                    .address()
                    .add(index, address.addr(), address.prefix_len())
                    .replace();
                // The gateway is the same on every host on purpose: no
                // duplicate address detection, no tentative state.
                if address.addr().is_ipv6() {
                    request
                        .message_mut()
                        .attributes
                        .push(AddressAttribute::Flags(AddressFlags::Nodad));
                }
                request.execute().await?;
            }
            RouterOp::DeleteAddress {
                netns,
                device,
                address,
            } => {
                let (handle, index) = self.device(netns, device).await?;
                let mut addresses = handle
                    .address()
                    .get()
                    .set_link_index_filter(index)
                    .set_address_filter(address.addr())
                    .set_prefix_length_filter(address.prefix_len())
                    .execute();
                while let Some(found) = addresses.try_next().await? {
                    handle.address().del(found).execute().await?;
                }
            }
            RouterOp::AddRoute { netns, route } => {
                let message = self.route_message(netns, route).await?;
                let handle = self.connection(netns)?.clone();
                handle.route().add(message).replace().execute().await?;
            }
            RouterOp::DeleteRoute { netns, route } => {
                let message = self.route_message(netns, route).await?;
                let handle = self.connection(netns)?.clone();
                handle.route().del(message).execute().await?;
            }
            RouterOp::AddRule { netns, rule } => {
                let handle = self.connection(netns)?.clone();
                let mut request = handle.rule().add();
                *request.message_mut() = rule_message(rule);
                request.execute().await?;
            }
            RouterOp::DeleteRule { netns, rule } => {
                let handle = self.connection(netns)?.clone();
                handle.rule().del(rule_message(rule)).execute().await?;
            }
            RouterOp::AddNeighbour { netns, neighbour } => {
                let (handle, index) = self.device(netns, &neighbour.device).await?;
                handle
                    .neighbours()
                    .add(index, neighbour.ip)
                    .link_layer_address(&neighbour.mac.0)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await?;
            }
            RouterOp::DeleteNeighbour { netns, neighbour } => {
                let (handle, index) = self.device(netns, &neighbour.device).await?;
                let mut message = NeighbourMessage::default();
                message.header.family = AddressFamily::Inet;
                message.header.ifindex = index;
                message
                    .attributes
                    .push(NeighbourAttribute::Destination(match neighbour.ip {
                        IpAddr::V4(ip) => NeighbourAddress::Inet(ip),
                        IpAddr::V6(ip) => NeighbourAddress::Inet6(ip),
                    }));
                handle.neighbours().del(message).execute().await?;
            }
            RouterOp::SetNat { netns, ruleset } | RouterOp::SetMetering { netns, ruleset } => {
                let messages = ruleset.messages().map_err(|e| RouterError::Nft {
                    netns: netns.clone(),
                    message: e.to_string(),
                })?;
                nft_batch(netns, messages).await?;
            }
            RouterOp::DeleteNat { netns } => {
                nft_batch(netns, vec![table::delete_message(nat::TABLE)]).await?;
            }
            RouterOp::DeleteMetering { netns } => {
                nft_batch(netns, vec![table::delete_message(metering::TABLE)]).await?;
            }
            RouterOp::Announce {
                netns,
                device,
                ip,
                mac,
            } => {
                let (_, index) = self.device(netns, device).await?;
                let announcer = self
                    .namespaces
                    .get(netns)
                    .and_then(|c| c.announcer.as_ref())
                    .ok_or_else(|| RouterError::Connect(io::Error::other("no packet socket")))?;
                announcer.announce(index, *ip, *mac).map_err(in_ns(netns))?;
            }
        }
        Ok(())
    }

    /// A route as a netlink message: its device resolved in the namespace.
    async fn route_message(
        &mut self,
        netns: &str,
        route: &Route,
    ) -> Result<RouteMessage, RouterError> {
        let index = match &route.device {
            Some(device) => Some(self.device(netns, device).await?.1),
            None => None,
        };
        Ok(route_message(route, index))
    }

    /// A veth pair made in the host's namespace with its peer born inside
    /// the router's, already named and addressed; then the peer is set up.
    /// A host end left from a half-made pair is removed first.
    async fn create_interface(
        &mut self,
        netns: &str,
        device: &str,
        host_device: &str,
        mac: MacAddr,
        mtu: u32,
    ) -> Result<(), RouterError> {
        let file = File::open(netns::path(netns)).map_err(|source| RouterError::Namespace {
            netns: netns.to_owned(),
            source,
        })?;
        let host = self.host.handle.clone();
        if let Ok(stale) = index_of(&host, "the host", host_device).await {
            host.link().del(stale).execute().await?;
        }
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(device.to_owned())
            .address(mac.0.to_vec())
            .mtu(mtu)
            .setns_by_fd(file.as_raw_fd())
            .build();
        let pair = LinkVeth::new(host_device, device)
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        host.link().add(pair).execute().await?;
        drop(file);
        let (handle, index) = self.device(netns, device).await?;
        let msg = LinkUnspec::new_with_index(index).up().build();
        handle.link().set(msg).execute().await?;
        Ok(())
    }
}

/// Whether the calling thread's namespace has [`ROUTER_SYSCTLS`].
fn sysctls_set() -> io::Result<bool> {
    for (key, value) in ROUTER_SYSCTLS {
        let path = std::path::Path::new("/proc/sys").join(key);
        if std::fs::read_to_string(path)?.trim() != value {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The fingerprints of the NAT and metering tables of the calling
/// thread's namespace (`None`: no such table, or one without vnet's).
fn table_fingerprints() -> io::Result<(Option<String>, Option<String>)> {
    let fingerprint = |name| -> io::Result<Option<String>> {
        let data =
            nft::netlink::table_user_data(&table::get_message(name)).map_err(io::Error::other)?;
        Ok(data.and_then(|data| table::fingerprint_of(&data)))
    };
    Ok((fingerprint(nat::TABLE)?, fingerprint(metering::TABLE)?))
}

async fn blocking(f: impl FnOnce() -> io::Result<()> + Send + 'static) -> io::Result<()> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// How long an announcement waits for its host end's bridge port to
/// forward (the link watch takes milliseconds).
const PORT_FORWARDING: Duration = Duration::from_millis(500);

/// A device's attributes (none if it is not there).
async fn link_attributes(handle: &Handle, device: &str) -> Vec<LinkAttribute> {
    let mut links = handle.link().get().match_name(device.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => link.attributes,
        _ => vec![],
    }
}

async fn index_of(handle: &Handle, netns: &str, device: &str) -> Result<u32, RouterError> {
    let mut links = handle.link().get().match_name(device.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(link.header.index),
        _ => Err(RouterError::NoDevice {
            netns: netns.to_owned(),
            device: device.to_owned(),
        }),
    }
}

fn route_message(route: &Route, device: Option<u32>) -> RouteMessage {
    let protocol = RouteProtocol::from(VNET_ROUTE_PROTOCOL);
    let mut message = match (route.destination, route.nexthop) {
        (IpNet::V4(dst), via) => {
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst.addr(), dst.prefix_len());
            if let Some(IpAddr::V4(via)) = via {
                b = b.gateway(via);
            }
            b.table_id(route.table).protocol(protocol).build()
        }
        (IpNet::V6(dst), via) => {
            let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(dst.addr(), dst.prefix_len());
            if let Some(IpAddr::V6(via)) = via {
                b = b.gateway(via);
            }
            b.table_id(route.table).protocol(protocol).build()
        }
    };
    if let Some(index) = device {
        message.attributes.push(RouteAttribute::Oif(index));
        if route.nexthop.is_some() {
            message.header.flags |= RouteFlags::Onlink;
        } else {
            message.header.scope = RouteScope::Link;
        }
    }
    message
}

/// A route of vnet's protocol, as a [`Route`]: its device named when it is
/// part of the route (`onlink`, or link scope), from the router's devices.
fn own_route(route: &RouteMessage, devices: &HashMap<u32, String>) -> Option<Route> {
    if route.header.protocol != RouteProtocol::from(VNET_ROUTE_PROTOCOL) {
        return None;
    }
    let mut destination = None;
    let mut nexthop = None;
    let mut oif = None;
    let mut table = u32::from(route.header.table);
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Destination(a) => destination = address(a),
            RouteAttribute::Gateway(a) => nexthop = address(a),
            RouteAttribute::Oif(index) => oif = Some(*index),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    let destination = match destination {
        Some(d) => IpNet::new(d, route.header.destination_prefix_length).ok()?,
        // The default route carries no destination.
        None if route.header.destination_prefix_length == 0 => match route.header.address_family {
            AddressFamily::Inet6 => IpNet::V6(Default::default()),
            _ => IpNet::V4(Default::default()),
        },
        None => return None,
    };
    let bound = nexthop.is_none() || route.header.flags.contains(RouteFlags::Onlink);
    let device = oif
        .filter(|_| bound)
        .and_then(|index| devices.get(&index).cloned());
    Some(Route {
        table,
        destination,
        nexthop,
        device,
    })
}

/// A policy rule as a netlink message, to add or to delete.
fn rule_message(rule: &Rule) -> RuleMessage {
    let mut message = RuleMessage::default();
    message.header.family = match rule.source {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    };
    message.header.action = RuleAction::ToTable;
    message.header.src_len = rule.source.prefix_len();
    message.header.table = u8::try_from(rule.table).unwrap_or(0);
    let attributes = &mut message.attributes;
    attributes.push(RuleAttribute::Priority(rule.priority));
    attributes.push(RuleAttribute::Table(rule.table));
    attributes.push(RuleAttribute::Protocol(RouteProtocol::from(
        VNET_ROUTE_PROTOCOL,
    )));
    if rule.source.prefix_len() > 0 {
        attributes.push(RuleAttribute::Source(rule.source.addr()));
    }
    if let Some((protocol, port)) = rule.port {
        attributes.push(RuleAttribute::IpProtocol(IpProtocol::from(protocol)));
        attributes.push(RuleAttribute::SourcePortRange(RulePortRange {
            start: port,
            end: port,
        }));
    }
    message
}

/// A rule of vnet's protocol, as a [`Rule`].
fn own_rule(message: &RuleMessage) -> Option<Rule> {
    let mut ours = false;
    let mut priority = 0;
    let mut table = u32::from(message.header.table);
    let mut source = match message.header.family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut protocol = None;
    let mut port = None;
    for attribute in &message.attributes {
        match attribute {
            RuleAttribute::Protocol(p) => ours = *p == RouteProtocol::from(VNET_ROUTE_PROTOCOL),
            RuleAttribute::Priority(p) => priority = *p,
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Source(ip) => source = *ip,
            RuleAttribute::IpProtocol(p) => protocol = Some(u8::from(*p)),
            RuleAttribute::SourcePortRange(r) => port = Some(r.start),
            _ => {}
        }
    }
    if !ours {
        return None;
    }
    Some(Rule {
        priority,
        source: IpNet::new(source, message.header.src_len).ok()?,
        port: protocol.zip(port),
        table,
    })
}

/// A permanent neighbour entry on `device`, as a [`Neighbour`].
fn own_neighbour(message: &NeighbourMessage, device: &str) -> Option<Neighbour> {
    if message.header.state != NeighbourState::Permanent {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(IpAddr::V4(*a)),
            NeighbourAttribute::LinkLayerAddress(a) => mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
            _ => {}
        }
    }
    Some(Neighbour {
        device: device.to_owned(),
        ip: ip?,
        mac: MacAddr(mac?),
    })
}

/// Sends `messages` as one nf_tables batch (one transaction) from inside
/// the router namespace `netns`.
async fn nft_batch(
    netns: &str,
    messages: Vec<NetlinkMessage<NetfilterMessage>>,
) -> Result<(), RouterError> {
    let name = netns.to_owned();
    tokio::task::spawn_blocking(move || {
        netns::run_in(&name, || {
            nft::netlink::send_batch(&messages).map_err(io::Error::other)
        })
    })
    .await
    .unwrap_or_else(|e| Err(io::Error::other(e)))
    .map_err(|e| RouterError::Nft {
        netns: netns.to_owned(),
        message: e.to_string(),
    })
}

fn address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}
