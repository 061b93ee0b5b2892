//! `vnet agent`'s main loop: registers its host and keeps it alive, follows
//! the host's desired-state stream, reconciles the kernel and the DHCP server
//! to it, and reports which ports are wired. It never acts on an empty state
//! before the first snapshot arrives, so a restart leaves traffic alone.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use compiler::protocol::{
    HEARTBEAT_SECONDS, HostRegistration, HostState, PROTOCOL_VERSION, PortStatusReport, Revision,
    StreamMessage,
};
use tokio::sync::watch;

use crate::dhcp::{DhcpServer, Ipv6Server, Ipv6Service, dhcpv6, router_advert};
use crate::linux::{self, LinkEvent, LinkEvents, LinuxConfig, Reconciler};
use crate::mappings::{self, Mappings};
use crate::nft::{NftConfig, NftReconciler};
use crate::router::{RouterConfig, RouterError, RouterReconciler};
use crate::sync::{Server, SyncError};

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
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error("the kernel backend failed to start")]
    Linux(#[from] linux::Error),
    #[error("the router backend failed to start")]
    Router(#[from] RouterError),
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
    let mut dhcp = DhcpServer::new();
    let mut ipv6 = Ipv6Server::new();
    // `nft` runs as a child process: off the async threads.
    let nft = Arc::new(NftReconciler::new(NftConfig {
        physical_networks: config.physical_networks.clone(),
        ..NftConfig::default()
    }));
    // The flat networks last reported as unrealisable, so each is logged once.
    let mut unmapped_logged = BTreeSet::new();
    let (desired_tx, mut desired) = watch::channel(None::<(Revision, HostState)>);
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
    loop {
        // A new desired state is planned against the kernel as the last
        // reconcile left it (no dumps: milliseconds at any scale); a device
        // appearing or vanishing, and the resync timer, re-read the kernel.
        let full = tokio::select! {
            () = &mut shutdown => break,
            changed = desired.changed() => {
                if changed.is_err() {
                    break;
                }
                false
            }
            event = links.next() => match event {
                // Our own bridges and VXLAN devices come and go by our hand.
                Some(LinkEvent::Added(name) | LinkEvent::Removed(name)) if linux::is_owned(&name) => continue,
                Some(_) => true,
                None => {
                    links = LinkEvents::new().await?;
                    true
                }
            },
            _ = resync.tick() => true,
            () = sleep_until(router_retry) => false,
        };
        router_retry = None;
        let Some((revision, state)) = desired.borrow_and_update().clone() else {
            continue; // no snapshot yet: act on nothing
        };
        let (state, unmapped) = mappings::realisable(&state, &config.physical_networks);
        log_unmapped(&config.host, &unmapped, &mut unmapped_logged);
        // Security first: its rules name port devices, so a port attached by
        // the link reconcile below is filtered from its first frame (and a
        // bridge it creates is born filtered).
        if let Err(e) = secure(&nft, &state, full).await {
            tracing::warn!(error = %e, "security groups not applied; retrying");
            continue;
        }
        // Routers before links: the link reconcile attaches the host ends of
        // the veth pairs this makes.
        let routed = routers.reconcile(&state, full || !routers_read).await;
        routers_read = true;
        if !routed.failed.is_empty() {
            router_retry = Some(tokio::time::Instant::now() + ROUTER_RETRY);
        }
        let reconciled = if full {
            reconciler.reconcile(&state).await
        } else {
            reconciler.reconcile_cached(&state).await
        };
        let report = match reconciled {
            Ok(report) => report,
            Err(e) => {
                tracing::warn!(error = %e, "reconcile failed; retrying");
                continue;
            }
        };
        dhcp.set_ports(state.networks.values().flat_map(|net| {
            net.local_ports
                .iter()
                .filter_map(|(id, port)| Some((port.device.clone(), net.dhcp_lease(id)?)))
        }));
        ipv6.set_ports(state.networks.iter().flat_map(|(network_id, net)| {
            let state = &state;
            net.local_ports.iter().map(move |(id, port)| {
                let service = Ipv6Service {
                    adverts: router_advert::port_adverts(state, network_id, id),
                    dhcpv6: dhcpv6::port_lease(net, id),
                };
                (port.device.clone(), service)
            })
        }));
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
            wired: report
                .wired()
                .into_iter()
                .filter(|id| !router_ports.contains(id) || routed.realised.contains(id))
                .chain(routed.floating.iter().cloned())
                .collect(),
        };
        if let Err(e) = server.report_ports(&config.host, &wired).await {
            tracing::warn!(error = %e, "port status report failed; next reconcile retries");
        }
    }
    heartbeat.abort();
    follow.abort();
    Ok(())
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

/// Apply the security groups of `state` (blocking netlink sockets and, for
/// rule changes, an `nft` child process: off the async threads). `full` re-reads nftables first; otherwise the
/// plan is made against what the last reconcile left.
async fn secure(nft: &Arc<NftReconciler>, state: &HostState, full: bool) -> Result<(), String> {
    let (nft, state) = (nft.clone(), state.clone());
    let result = tokio::task::spawn_blocking(move || {
        if full {
            nft.reconcile(&state)
        } else {
            nft.reconcile_cached(&state)
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
async fn follow_state(
    server: Server,
    host: String,
    desired: watch::Sender<Option<(Revision, HostState)>>,
) {
    let mut state = HostState::default();
    let mut revision: Option<Revision> = None;
    let mut backoff = Duration::from_millis(100);
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
                        backoff = Duration::from_millis(100);
                        let r = match message {
                            StreamMessage::Snapshot { revision, state: s } => {
                                state = s;
                                revision
                            }
                            StreamMessage::Delta { revision, changes } => {
                                for change in changes {
                                    state.apply(change);
                                }
                                revision
                            }
                            StreamMessage::Idle { revision } => revision,
                        };
                        let first = revision.is_none();
                        revision = Some(r);
                        // An idle message changes nothing to reconcile.
                        if first || desired.borrow().as_ref().is_none_or(|(_, s)| *s != state) {
                            let _ = desired.send(Some((r, state.clone())));
                        }
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
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
