//! Distributed routers in the kernel: one network namespace per router that
//! has an interface on a network this host carries, the same interfaces
//! (MAC and gateway addresses) on every host, so that a VM's traffic to
//! another subnet is routed on its own host. [`plan`] is the pure part; this
//! module observes and changes the namespaces over one rtnetlink connection
//! per namespace (plus one in the host's, to create the veth pairs). Like
//! the `linux` backend it never flushes and touches only what it owns: the
//! namespaces with its prefix, the `qr-` devices in them, and routes of its
//! own protocol. The host ends of the veths are the `linux` backend's to
//! attach, like any port device.

mod netns;
mod plan;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use compiler::protocol::HostState;
use futures::TryStreamExt;
use ipnet::IpNet;
use model::MacAddr;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressScope};
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkFlags};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

pub use plan::{
    DesiredInterface, DesiredRouter, ObservedInterface, ObservedRouter, Route, RouterConfig,
    RouterOp, VNET_ROUTE_PROTOCOL, desired, diff, interface_device,
};

/// What a router namespace is set to: it forwards; its interfaces'
/// addresses are usable at once (the same gateway address and link-local
/// address exist on every host on purpose, and never meet: nothing
/// multicast crosses the overlay, so duplicate address detection could only
/// delay them); it sends no ICMP redirects.
const ROUTER_SYSCTLS: [(&str, &str); 5] = [
    ("net/ipv4/ip_forward", "1"),
    ("net/ipv6/conf/all/forwarding", "1"),
    ("net/ipv6/conf/default/accept_dad", "0"),
    ("net/ipv4/conf/all/send_redirects", "0"),
    ("net/ipv4/conf/default/send_redirects", "0"),
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
    /// The interface ports (by id) of every router that is right now.
    pub realised: BTreeSet<String>,
}

/// One rtnetlink connection and the task that drives it.
struct Connection {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
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
        })
    }

    /// In the named namespace.
    fn inside(netns: &str) -> Result<Self, RouterError> {
        let runtime = tokio::runtime::Handle::current();
        let (connection, handle) = netns::run_in(netns, move || {
            let _entered = runtime.enter();
            let (connection, handle, _) = rtnetlink::new_connection()?;
            Ok((connection, handle))
        })
        .map_err(|source| RouterError::Namespace {
            netns: netns.to_owned(),
            source,
        })?;
        Ok(Connection {
            handle,
            task: tokio::spawn(connection),
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
}

impl RouterReconciler {
    /// Opens the host-side connection in the calling thread's namespace.
    pub fn new(config: RouterConfig) -> Result<Self, RouterError> {
        Ok(RouterReconciler {
            config,
            host: Connection::here()?,
            namespaces: HashMap::new(),
            done: BTreeMap::new(),
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
        let mut broken: BTreeSet<String> = BTreeSet::new();
        for op in diff(&scoped, &have) {
            if broken.contains(op.netns()) {
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
            }
        }
        report
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
        let name = netns.to_owned();
        let forwarding = tokio::task::spawn_blocking(move || {
            for (key, value) in ROUTER_SYSCTLS {
                if netns::read_sysctl(&name, key)? != value {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        let forwarding = match forwarding {
            Ok(f) => f,
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
                Some(n) if n.starts_with("qr-") => {
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
                if let Some(route) = own_route(&route) {
                    observed.routes.insert(route);
                }
            }
        }
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
                    for (key, value) in ROUTER_SYSCTLS {
                        netns::sysctl(&name, key, value)?;
                    }
                    Ok(())
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
                let handle = self.connection(netns)?.clone();
                handle
                    .route()
                    .add(route_message(route))
                    .replace()
                    .execute()
                    .await?;
            }
            RouterOp::DeleteRoute { netns, route } => {
                let handle = self.connection(netns)?.clone();
                handle.route().del(route_message(route)).execute().await?;
            }
        }
        Ok(())
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

async fn blocking(f: impl FnOnce() -> io::Result<()> + Send + 'static) -> io::Result<()> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
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

fn route_message(route: &Route) -> RouteMessage {
    let protocol = RouteProtocol::from(VNET_ROUTE_PROTOCOL);
    match (route.destination, route.nexthop) {
        (IpNet::V4(dst), IpAddr::V4(via)) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.addr(), dst.prefix_len())
            .gateway(via)
            .protocol(protocol)
            .build(),
        (IpNet::V6(dst), IpAddr::V6(via)) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(dst.addr(), dst.prefix_len())
            .gateway(via)
            .protocol(protocol)
            .build(),
        // `desired` keeps only routes of one family.
        (dst, _) => RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.addr(), dst.prefix_len())
            .unwrap_or_default()
            .protocol(protocol)
            .build(),
    }
}

/// A route of vnet's protocol in the main table, as a [`Route`].
fn own_route(route: &RouteMessage) -> Option<Route> {
    if route.header.protocol != RouteProtocol::from(VNET_ROUTE_PROTOCOL) {
        return None;
    }
    let mut destination = None;
    let mut nexthop = None;
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Destination(a) => destination = address(a),
            RouteAttribute::Gateway(a) => nexthop = address(a),
            _ => {}
        }
    }
    let destination = IpNet::new(destination?, route.header.destination_prefix_length).ok()?;
    Some(Route {
        destination,
        nexthop: nexthop?,
    })
}

fn address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}
