//! `vnet agent`'s main loop: registers its host and keeps it alive, follows
//! the host's desired-state stream, reconciles the kernel and the DHCP server
//! to it, and reports which ports are wired. It never acts on an empty state
//! before the first snapshot arrives, so a restart leaves traffic alone.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use compiler::protocol::{
    Change, HEARTBEAT_SECONDS, HostRegistration, HostState, PROTOCOL_VERSION, PortStatusReport,
    Revision, StreamMessage,
};
use tokio::sync::watch;

use crate::dhcp::{DhcpServer, Ipv6Server, ServeHints, Served, dhcpv6};
use crate::garp;
use crate::linux::{self, LinkEvent, LinkEvents, LinuxConfig, Reconciler};
use crate::mappings::{self, Mappings};
use crate::nft::{Hints, NftConfig, NftReconciler, WHOLE_PLANS_ENV};
use crate::router::{RouterConfig, RouterError, RouterReconciler};
use crate::sync::{Backoff, Server, SyncError};

/// Re-read the kernel this often even when nothing arrives, to repair what
/// was changed behind the agent's back. Devices coming and going are link
/// events, acted on at once; a full read is costly at scale (tens to
/// hundreds of ms), and a change arriving meanwhile waits for it.
const RESYNC: Duration = Duration::from_secs(30);

/// A router operation the kernel refused is tried again this soon (a
/// namespace may be busy being torn down, a device not yet gone).
const ROUTER_RETRY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The API server, `http://HOST:PORT`, or its replicas comma-separated.
    pub server: String,
    /// This host's name: ports are bound to it with `binding:host_id`.
    pub host: String,
    /// This host's VXLAN tunnel endpoint.
    pub underlay_ip: IpAddr,
    /// The server's agent token, when it requires one (`X-Vnet-Agent-Token`).
    pub token: Option<String>,
    /// How this host's router namespaces are named.
    pub router: RouterConfig,
    /// Physical network name → this host's interface on it.
    pub physical_networks: Mappings,
    /// This host may run routers' default SNAT (`--gateway`).
    pub gateway: bool,
    /// Its availability zone (`--availability-zone`).
    pub availability_zone: String,
    /// The domain its DHCPv6 replies give (`--dns-domain`).
    pub dns_domain: dhcpv6::DnsDomain,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error("the kernel backend failed to start")]
    Linux(#[from] linux::Error),
    #[error("the router backend failed to start")]
    Router(#[from] RouterError),
    #[error("cannot open the packet socket gratuitous ARPs leave by")]
    Announcer(#[source] std::io::Error),
}

/// The desired state as the stream left it, shared (never copied) with the
/// main loop: the stream's task changes it in place, or copies it once if
/// the main loop still holds the previous one.
#[derive(Clone, Debug, Default)]
struct Target {
    revision: Revision,
    state: Arc<HostState>,
    /// Bumped by every change to what links, DHCP and router
    /// advertisements are made of (networks with their subnets and ports,
    /// routers, floating IPs): a change to security alone leaves it, and
    /// then the link reconcile has nothing to do.
    wiring: u64,
    /// Bumped likewise by the changes DHCP and router advertisements are
    /// made of: the wiring's but other hosts' ports (which every port
    /// created on one of a network's hosts sends to all the others).
    serving: u64,
    /// The `wiring` of each network's last change, by network id.
    networks_changed: BTreeMap<String, u64>,
    /// The `wiring` of the last snapshot: every network may have changed.
    snapshot_at: u64,
    /// What the deltas changed since the main loop last took them, for
    /// nftables (everything after a snapshot). Taken under the watch's
    /// read lock, so always those of the state it reads with them.
    hints: Arc<Mutex<Hints>>,
    /// The same for DHCP and router advertisements.
    serve_hints: Arc<Mutex<ServeHints>>,
}

impl Target {
    /// Takes in one stream message; whether the state changed (an idle
    /// message, or a snapshot of the state already held, changes nothing to
    /// reconcile), or `first`.
    fn absorb(target: &mut Option<Target>, message: StreamMessage, first: bool) -> bool {
        match message {
            StreamMessage::Snapshot { revision, state } => {
                if !first && target.as_ref().is_some_and(|t| *t.state == state) {
                    return false;
                }
                let wiring = target.as_ref().map_or(0, |t| t.wiring + 1);
                let serving = target.as_ref().map_or(0, |t| t.serving + 1);
                *target = Some(Target {
                    revision,
                    state: Arc::new(state),
                    wiring,
                    serving,
                    networks_changed: BTreeMap::new(),
                    snapshot_at: wiring,
                    hints: Arc::new(Mutex::new(Hints::everything())),
                    serve_hints: Arc::new(Mutex::new(ServeHints::everything())),
                });
                true
            }
            StreamMessage::Delta { revision, changes } => {
                let t = target.get_or_insert_with(Target::default);
                t.revision = revision;
                if changes.iter().any(changes_wiring) {
                    t.wiring += 1;
                }
                if changes.iter().any(changes_serving) {
                    t.serving += 1;
                }
                for network in changes.iter().filter_map(network_of) {
                    t.networks_changed.insert(network.to_owned(), t.wiring);
                }
                let mut hints = lock(&t.hints);
                for change in &changes {
                    hints.note(change);
                }
                drop(hints);
                let mut serve_hints = lock(&t.serve_hints);
                let state = Arc::make_mut(&mut t.state);
                for change in changes {
                    serve_hints.note(&change, state);
                    state.apply(change);
                }
                true
            }
            StreamMessage::Idle { revision } => {
                if first {
                    target.get_or_insert_with(Target::default).revision = revision;
                }
                first
            }
        }
    }
}

impl Target {
    /// What changed since the last call, for nftables.
    fn take_hints(&self) -> Hints {
        std::mem::take(&mut *lock(&self.hints))
    }

    /// What changed since the last call, for DHCP and router advertisements.
    fn take_serve_hints(&self) -> ServeHints {
        std::mem::take(&mut *lock(&self.serve_hints))
    }

    /// The networks changed since `wiring` was reconciled; `None`: any
    /// may have.
    fn networks_changed_since(&self, wiring: Option<u64>) -> Option<BTreeSet<String>> {
        let since = wiring.filter(|w| *w >= self.snapshot_at)?;
        Some(
            self.networks_changed
                .iter()
                .filter(|(_, at)| **at > since)
                .map(|(id, _)| id.clone())
                .collect(),
        )
    }
}

fn lock<T>(hints: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    hints
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The network a change is to, if any.
fn network_of(change: &Change) -> Option<&str> {
    match change {
        Change::NetworkUpsert { network_id, .. }
        | Change::NetworkRemove { network_id }
        | Change::SubnetUpsert { network_id, .. }
        | Change::SubnetRemove { network_id, .. }
        | Change::LocalPortUpsert { network_id, .. }
        | Change::LocalPortRemove { network_id, .. }
        | Change::RemotePortUpsert { network_id, .. }
        | Change::RemotePortRemove { network_id, .. } => Some(network_id),
        _ => None,
    }
}

/// Whether a change touches what the links, DHCP or router advertisements
/// are made of (anything but security).
fn changes_wiring(change: &Change) -> bool {
    !matches!(
        change,
        Change::PortSecurityUpsert { .. }
            | Change::PortSecurityRemove { .. }
            | Change::SecurityGroupUpsert { .. }
            | Change::SecurityGroupRemove { .. }
            | Change::SecurityGroupRuleUpsert { .. }
            | Change::SecurityGroupRuleRemove { .. }
            | Change::RemoteGroupUpsert { .. }
            | Change::RemoteGroupRemove { .. }
            | Change::RemoteGroupMemberAdd { .. }
            | Change::RemoteGroupMemberRemove { .. }
            | Change::AddressGroupUpsert { .. }
            | Change::AddressGroupRemove { .. }
            | Change::AddressGroupAddressAdd { .. }
            | Change::AddressGroupAddressRemove { .. }
    )
}

/// Whether a change touches what DHCP or router advertisements are made of.
fn changes_serving(change: &Change) -> bool {
    changes_wiring(change)
        && !matches!(
            change,
            Change::RemotePortUpsert { .. } | Change::RemotePortRemove { .. }
        )
}

/// Run the agent until `shutdown` resolves.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let server = Server::parse(&config.server)?.with_token(config.token.clone());
    let registration = HostRegistration {
        protocol_version: PROTOCOL_VERSION,
        name: config.host.clone(),
        underlay_ip: config.underlay_ip,
        capabilities: vec![
            "linux-bridge-vxlan".into(),
            "linux-bridge-flat".into(),
            "dhcpv4".into(),
            "ipv6-ra".into(),
            "dhcpv6".into(),
        ],
        physical_networks: config.physical_networks.keys().cloned().collect(),
        gateway: config.gateway,
        availability_zone: config.availability_zone.clone(),
    };
    let reconciler = Reconciler::new(
        LinuxConfig::new(config.underlay_ip)
            .with_physical_networks(config.physical_networks.clone())
            .with_host(&config.host),
    )?;
    let mut routers = RouterReconciler::new(RouterConfig {
        host: config.host.clone(),
        ..config.router.clone()
    })?;
    let announcer = garp::Announcer::open().map_err(AgentError::Announcer)?;
    let mut dhcp = DhcpServer::new();
    let mut ipv6 = Ipv6Server::new();
    // Blocking netlink sockets: off the async threads.
    let nft = Arc::new(NftReconciler::new(NftConfig {
        physical_networks: config.physical_networks.clone(),
        ..NftConfig::default()
    }));
    // The flat networks last reported as unrealisable, so each is logged once.
    let mut unmapped_logged = BTreeSet::new();
    let (desired_tx, mut desired) = watch::channel(None::<Target>);
    let heartbeat = tokio::spawn(heartbeat(server.clone(), registration));
    let follow = tokio::spawn(follow_state(
        server.clone(),
        config.host.clone(),
        desired_tx,
    ));
    tracing::info!(
        host = %config.host,
        underlay = %config.underlay_ip,
        physical_networks = ?config.physical_networks,
        gateway = config.gateway,
        "vnet agent started"
    );

    let mut links = LinkEvents::new().await?;

    tokio::pin!(shutdown);
    let mut resync = tokio::time::interval(RESYNC);
    let mut router_retry: Option<tokio::time::Instant> = None;
    // The first reconcile reads every router namespace, to remove those of
    // routers deleted while the agent was away.
    let mut routers_read = false;
    // The `Target::wiring` the links, DHCP and router advertisements were
    // last fully reconciled to, and the ports then wired.
    let mut wired_at: Option<u64> = None;
    // The baseline of the incremental path: every delta planned whole.
    let whole_plans = std::env::var_os(WHOLE_PLANS_ENV).is_some();
    let mut wired_ports: Vec<String> = vec![];
    // The `Target::serving` DHCP and router advertisements were last set to,
    // what they were handed, and what changed since (kept until they are
    // set again: a round may stop short of them).
    let mut served_at: Option<u64> = None;
    let mut served = Served::default();
    let mut serve_hints = ServeHints::everything();
    let mut served_unmappable = false;
    loop {
        // A new desired state is planned against the kernel as the last
        // reconcile left it (no dumps: milliseconds at any scale); a device
        // appearing or vanishing is read again by name and reconciles the
        // networks whose ports name it (nothing when none does: a VM's
        // device often comes before its port), and the resync timer
        // re-reads the links and nftables (rules name devices by name: a
        // device coming or going changes nothing there, and reading a
        // thousand ports' chains costs hundreds of ms).
        let mut device = None;
        let (full, resynced) = tokio::select! {
            () = &mut shutdown => break,
            changed = desired.changed() => {
                if changed.is_err() {
                    break;
                }
                (false, false)
            }
            event = links.next() => match event {
                // Our own bridges and VXLAN devices come and go by our hand.
                Some(LinkEvent::Added(name) | LinkEvent::Removed(name)) if linux::is_owned(&name) => continue,
                Some(LinkEvent::Added(name) | LinkEvent::Removed(name)) => {
                    if let Err(e) = reconciler.devices_changed(std::slice::from_ref(&name)).await {
                        tracing::warn!(error = %e, device = %name, "device not read; reconciling all");
                        (true, false)
                    } else {
                        let named = desired
                            .borrow()
                            .as_ref()
                            .is_some_and(|t| !networks_naming(&t.state, &name).is_empty());
                        if !named && !desired.has_changed().unwrap_or(false) {
                            continue;
                        }
                        device = Some(name);
                        (false, false)
                    }
                }
                None => {
                    links = LinkEvents::new().await?;
                    (true, false)
                }
            },
            _ = resync.tick() => (true, true),
            () = sleep_until(router_retry) => (false, false),
        };
        router_retry = None;
        let (revision, state, wiring, serving, mut changed, hints) =
            match &*desired.borrow_and_update() {
                Some(t) => {
                    serve_hints.merge(t.take_serve_hints());
                    (
                        t.revision,
                        t.state.clone(),
                        t.wiring,
                        t.serving,
                        t.networks_changed_since(wired_at.filter(|_| !whole_plans)),
                        t.take_hints(),
                    )
                }
                None => continue, // no snapshot yet: act on nothing
            };
        // The networks whose ports name a device that came or went.
        let device_networks = device
            .as_deref()
            .map_or_else(BTreeSet::new, |d| networks_naming(&state, d));
        if let Some(changed) = &mut changed {
            changed.extend(device_networks.iter().cloned());
        }
        let unmappable = state.networks.values().any(|net| {
            net.physical_network
                .as_ref()
                .is_some_and(|p| !config.physical_networks.contains_key(p))
        });
        // The realisable state drops whole networks the hints know nothing
        // of: every piece is looked at then, and again once it is whole.
        if unmappable || served_unmappable {
            serve_hints = ServeHints::everything();
        }
        served_unmappable = unmappable;
        let (state, hints) = if unmappable {
            let (state, unmapped) = mappings::realisable(&state, &config.physical_networks);
            log_unmapped(&config.host, &unmapped, &mut unmapped_logged);
            (Arc::new(state), Hints::everything())
        } else {
            log_unmapped(&config.host, &[], &mut unmapped_logged);
            (state, hints)
        };
        // Each step's time, logged at debug level: where a change's
        // latency goes on a loaded host.
        let mut took = Took::start();
        // Security first: its rules name port devices, so a port attached by
        // the link reconcile below is filtered from its first frame (and a
        // bridge it creates is born filtered). The first round reads the
        // kernel's tables (the reconciler has no view yet).
        if let Err(e) = secure(&nft, &state, resynced, hints).await {
            tracing::warn!(error = %e, "security groups not applied; retrying");
            continue;
        }
        // Routers before links: the link reconcile attaches the host ends of
        // the veth pairs this makes.
        let secure_us = took.lap();
        let routed = routers.reconcile(&state, full || !routers_read).await;
        let routers_us = took.lap();
        routers_read = true;
        if !routed.failed.is_empty() {
            router_retry = Some(tokio::time::Instant::now() + ROUTER_RETRY);
        }
        // A change to security alone leaves the links, DHCP and router
        // advertisements as the last full reconcile of them left them.
        if full || whole_plans || wired_at != Some(wiring) || !device_networks.is_empty() {
            wired_at = None;
            let reconciled = if full {
                reconciler.reconcile(&state).await
            } else {
                reconciler.reconcile_changed(&state, changed.as_ref()).await
            };
            let report = match reconciled {
                Ok(report) => report,
                Err(e) => {
                    tracing::warn!(error = %e, "reconcile failed; retrying");
                    continue;
                }
            };
            wired_ports = report.wired();
            // Other hosts' ports this host just learnt: local VMs that asked
            // for them already hear now, not at their next ARP. Not on a
            // full reconcile (a start would announce every remote port).
            if !full {
                announce(
                    &announcer,
                    linux::remote_arrivals(&state, &report.applied, changed.as_ref()),
                );
            }
            took.links = took.lap();
            // Another host's port changes no lease or advertisement.
            if full || whole_plans || served_at != Some(serving) {
                let plugged = changed.as_ref().filter(|_| !full);
                let mut to_serve = std::mem::take(&mut serve_hints);
                if full || whole_plans {
                    to_serve = ServeHints::everything();
                }
                let servers = (&mut dhcp, &mut ipv6);
                serve_ports(
                    servers,
                    &mut served,
                    &state,
                    &config.dns_domain,
                    plugged,
                    &to_serve,
                );
                served_at = Some(serving);
            }
            // A device that came (back) is served at once, not at its task's
            // next look.
            if let Some(d) = device.as_deref().filter(|_| !device_networks.is_empty()) {
                dhcp.wake(d);
                ipv6.wake(d);
            }
            took.serve = took.lap();
            // Bridges made here are born filtered: those no secured port
            // needs are turned off now, as a full reconcile would.
            let (made, deleted) = bridges_changed(&report.applied);
            if !made.is_empty() || !deleted.is_empty() {
                nft.bridges_changed(&made, &deleted);
                if let Err(e) = secure(&nft, &state, false, Hints::default()).await {
                    tracing::warn!(error = %e, "bridge netfilter switches not set; retrying");
                    continue;
                }
            }
            if report.failed.is_empty() {
                wired_at = Some(wiring);
            }
        }
        // New router addresses are announced once their host ends are on
        // their bridges (the link reconcile attaches them).
        routers.announce(&wired_ports).await;
        let announce_us = took.lap();
        // A router interface or uplink is wired once its bridge end is and
        // its router is right; a floating IP once its router is right.
        let router_ports: BTreeSet<&String> = state
            .routers
            .values()
            .flat_map(|r| {
                r.interfaces
                    .keys()
                    .chain(r.gateway.iter().map(|g| &g.port_id))
            })
            .collect();
        let wired = PortStatusReport {
            revision,
            wired: wired_ports
                .iter()
                .filter(|id| !router_ports.contains(id) || routed.realised.contains(*id))
                .cloned()
                .chain(routed.floating.iter().cloned())
                .collect(),
        };
        // The stream's task may change the state in place again.
        drop(router_ports);
        drop(state);
        let wired_count = wired.wired.len();
        if let Err(e) = server.report_ports(&config.host, &wired).await {
            tracing::warn!(error = %e, "port status report failed; next reconcile retries");
        }
        let report_us = took.lap();
        tracing::debug!(
            revision,
            secure_us,
            routers_us,
            links_us = took.links,
            serve_us = took.serve,
            announce_us,
            report_us,
            wired = wired_count,
            "reconciled"
        );
    }
    heartbeat.abort();
    follow.abort();
    Ok(())
}

/// Microseconds between laps of one round of the main loop.
struct Took {
    lap: std::time::Instant,
    links: u128,
    serve: u128,
}

impl Took {
    fn start() -> Self {
        Took {
            lap: std::time::Instant::now(),
            links: 0,
            serve: 0,
        }
    }

    /// Since the last lap.
    fn lap(&mut self) -> u128 {
        let now = std::time::Instant::now();
        let us = (now - self.lap).as_micros();
        self.lap = now;
        us
    }
}

/// The networks of `state` with a local port naming `device`.
fn networks_naming(state: &HostState, device: &str) -> BTreeSet<String> {
    state
        .networks
        .iter()
        .filter(|(_, net)| net.local_ports.values().any(|p| p.device == device))
        .map(|(id, _)| id.clone())
        .collect()
}

/// The bridges link operations made and deleted.
fn bridges_changed(ops: &[linux::Op]) -> (Vec<String>, Vec<String>) {
    let mut made = vec![];
    let mut deleted = vec![];
    for op in ops {
        match op {
            linux::Op::CreateBridge { name, .. } => made.push(name.clone()),
            linux::Op::DeleteLink { name } if name.starts_with(linux::BRIDGE_PREFIX) => {
                deleted.push(name.clone());
            }
            _ => {}
        }
    }
    (made, deleted)
}

/// Serves DHCP and router advertisements on every local port of `state`:
/// the leases and advertisements of the ports `hints` name (of every port
/// when they say anything may have changed) are rebuilt, and the servers
/// are handed those whose entries changed, the rest being as `served`
/// holds them. Only the ports of the `plugged` networks (`None`: of all),
/// whose devices the link reconcile may have just attached, are woken to
/// look for their device at once: the others' tasks sleep on (a thousand
/// tasks woken per port created would each make a system call).
fn serve_ports(
    (dhcp, ipv6): (&mut DhcpServer, &mut Ipv6Server),
    served: &mut Served,
    state: &HostState,
    dns_domain: &dhcpv6::DnsDomain,
    plugged: Option<&BTreeSet<String>>,
    hints: &ServeHints,
) {
    let woken: Option<BTreeSet<&str>> = plugged.map(|networks| {
        networks
            .iter()
            .filter_map(|id| state.networks.get(id))
            .flat_map(|net| net.local_ports.values().map(|p| p.device.as_str()))
            .collect()
    });
    let is_woken = |device: &str| woken.as_ref().is_none_or(|w| w.contains(device));
    let edits = served.update(state, dns_domain, hints);
    let edited: BTreeSet<String> = edits.dhcp.iter().map(|(d, _)| d.clone()).collect();
    dhcp.update_ports(edits.dhcp, is_woken);
    ipv6.update_ports(edits.ipv6, is_woken);
    // The devices not edited that handing every port's lease would have
    // woken.
    match &woken {
        Some(woken) => {
            for device in woken.iter().filter(|d| !edited.contains(**d)) {
                dhcp.wake(device);
                ipv6.wake(device);
            }
        }
        None => {
            dhcp.wake_where(|d| !edited.contains(d));
            ipv6.wake_where(|d| !edited.contains(d));
        }
    }
}

/// Resolves at `at`, or never.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Says once per network (until it is realisable or gone) why a flat
/// network's ports on this host stay DOWN.
fn log_unmapped(host: &str, unmapped: &[mappings::Unmapped], logged: &mut BTreeSet<String>) {
    let now: BTreeSet<String> = unmapped.iter().map(|u| u.network_id.clone()).collect();
    for u in unmapped {
        if !logged.contains(&u.network_id) {
            tracing::warn!(
                network = %u.network_id,
                physical_network = %u.physical_network,
                ports = ?u.ports,
                "binding failed: host {host} maps no interface to physical network {} \
                 (vnet agent --physical-network {}:IFACE); its ports stay DOWN",
                u.physical_network,
                u.physical_network,
            );
        }
    }
    *logged = now;
}

/// Sends a gratuitous ARP for each of `arrivals` (bridge, address, MAC)
/// from its bridge, on the host's packet socket (opened at start: one
/// opened per announcement would cost its close, a grace period). A frame
/// not sent only leaves a VM to its own next ARP.
fn announce(
    announcer: &garp::Announcer,
    arrivals: Vec<(String, std::net::Ipv4Addr, model::MacAddr)>,
) {
    for (bridge, ip, mac) in arrivals {
        let sent = garp::ifindex(&bridge).and_then(|index| announcer.announce(index, ip, mac));
        if let Err(e) = sent {
            tracing::debug!(%bridge, %ip, error = %e, "remote port not announced");
        }
    }
}

/// Apply the security groups of `state` (blocking netlink sockets: off the
/// async threads). `full` re-reads nftables first; otherwise the plan is
/// made against what the last reconcile left, of what `hints` name
/// changed since.
async fn secure(
    nft: &Arc<NftReconciler>,
    state: &Arc<HostState>,
    full: bool,
    hints: Hints,
) -> Result<(), String> {
    let (nft, state) = (nft.clone(), state.clone());
    let result = tokio::task::spawn_blocking(move || {
        if full {
            nft.reconcile(&state)
        } else {
            nft.reconcile_hinted(&state, &hints)
        }
    })
    .await;
    match result {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("the security group reconcile panicked: {e}")),
    }
}

/// Register, then renew every HEARTBEAT_SECONDS; failures are logged and retried.
async fn heartbeat(server: Server, registration: HostRegistration) {
    let mut tick = tokio::time::interval(Duration::from_secs(HEARTBEAT_SECONDS));
    let mut failing = false;
    loop {
        tick.tick().await;
        match server.register(&registration).await {
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed");
                failing = true;
            }
            // Said once, so that a log shows when the outage ended.
            Ok(_) if failing => {
                tracing::info!("heartbeat: the server answers again");
                failing = false;
            }
            Ok(_) => {}
        }
    }
}

/// Follow the host's state stream forever, reconnecting after failures and
/// resuming from the last revision seen.
async fn follow_state(server: Server, host: String, desired: watch::Sender<Option<Target>>) {
    let mut revision: Option<Revision> = None;
    let mut backoff = Backoff::default();
    // The stream was lost: the next one opened is a reconnection, logged
    // as such so that an outage has an end in the log.
    let mut lost = false;
    loop {
        match server.stream(&host, revision).await {
            Ok(mut stream) => loop {
                if lost {
                    tracing::info!(
                        revision = ?revision,
                        "reconnected to the server's state stream"
                    );
                    lost = false;
                }
                match stream.next().await {
                    Ok(Some(message)) => {
                        backoff.reset();
                        let first = revision.is_none();
                        revision = Some(match &message {
                            StreamMessage::Snapshot { revision, .. }
                            | StreamMessage::Delta { revision, .. }
                            | StreamMessage::Idle { revision } => *revision,
                        });
                        desired.send_if_modified(|target| Target::absorb(target, message, first));
                    }
                    Ok(None) => {
                        tracing::info!("the server ended the state stream; reconnecting");
                        lost = true;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "state stream broke; reconnecting");
                        lost = true;
                        break;
                    }
                }
            },
            Err(e) => {
                if !lost {
                    tracing::warn!(error = %e, "cannot open the state stream");
                }
                lost = true;
            }
        }
        backoff.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member_add(member: &str) -> Change {
        Change::RemoteGroupMemberAdd {
            group_id: "g".into(),
            member: member.parse().unwrap_or_else(|_| unreachable!()),
        }
    }

    #[test]
    fn the_target_is_changed_in_place_and_counts_changes_to_wiring() {
        let mut target = None;
        let mut state = HostState::default();
        state.remote_groups.insert("g".into(), Default::default());
        let snapshot = StreamMessage::Snapshot {
            revision: 1,
            state: state.clone(),
        };
        assert!(Target::absorb(&mut target, snapshot.clone(), true));
        // The same snapshot again (a reconnection) has nothing to reconcile.
        assert!(!Target::absorb(&mut target, snapshot, false));
        let held = target.clone().map(|t| t.state);
        // After a snapshot nftables looks at everything, then at what the
        // deltas since name, each change once.
        let hints = || target.as_ref().map(Target::take_hints);
        assert_eq!(hints(), Some(Hints::everything()));
        assert_eq!(hints(), Some(Hints::default()));
        let delta = StreamMessage::Delta {
            revision: 2,
            changes: vec![member_add("10.0.0.1/32")],
        };
        assert!(Target::absorb(&mut target, delta, false));
        let mut want = Hints::default();
        want.note(&member_add("10.0.0.1/32"));
        assert_eq!(target.as_ref().map(Target::take_hints), Some(want));
        let Some(t) = &target else { unreachable!() };
        // Security alone: the links have nothing to do.
        assert_eq!((t.revision, t.wiring), (2, 0));
        assert_eq!(t.state.remote_groups["g"].len(), 1);
        // What the main loop held is as it was (copied on write).
        assert_eq!(held.map(|s| s.remote_groups["g"].len()), Some(0));
        let delta = StreamMessage::Delta {
            revision: 3,
            changes: vec![Change::NetworkRemove {
                network_id: "n".into(),
            }],
        };
        assert!(Target::absorb(&mut target, delta, false));
        let Some(t) = &target else { unreachable!() };
        assert_eq!((t.wiring, t.serving), (1, 1));
        // DHCP and router advertisements: everything since the snapshot,
        // then that network's ports only.
        assert_eq!(t.take_serve_hints(), ServeHints::everything());
        let delta = StreamMessage::Delta {
            revision: 3,
            changes: vec![Change::NetworkRemove {
                network_id: "n".into(),
            }],
        };
        assert!(Target::absorb(&mut target, delta, false));
        let Some(t) = &target else { unreachable!() };
        assert_eq!((t.wiring, t.serving), (2, 2));
        let mut want = ServeHints::default();
        want.networks.insert("n".into());
        assert_eq!(t.take_serve_hints(), want);
        // Another host's port: the links change, no lease or advertisement.
        let delta = StreamMessage::Delta {
            revision: 4,
            changes: vec![Change::RemotePortRemove {
                network_id: "n".into(),
                port_id: "p".into(),
            }],
        };
        assert!(Target::absorb(&mut target, delta, false));
        let Some(t) = target else { unreachable!() };
        assert_eq!((t.wiring, t.serving), (3, 2));
        assert_eq!(t.take_serve_hints(), ServeHints::default());
        // The links reconciled at 0 rebuild that network alone; unknown
        // (a failure), or before the snapshot, every network.
        let n: BTreeSet<String> = ["n".to_owned()].into();
        assert_eq!(t.networks_changed_since(Some(0)), Some(n.clone()));
        assert_eq!(t.networks_changed_since(Some(2)), Some(n));
        assert_eq!(t.networks_changed_since(Some(3)), Some(BTreeSet::new()));
        assert_eq!(t.networks_changed_since(None), None);
        assert!(!Target::absorb(
            &mut None,
            StreamMessage::Idle { revision: 4 },
            false
        ));
    }
}
