//! The simulated hosts of `vnet bench scale`, in a process of their own
//! (`vnet bench scale-agents`, hidden): each registers and heartbeats, follows
//! its state stream over the real protocol (`agent::sync`), applies it to a
//! `HostState` and reports its local ports wired at once. No kernel.
//!
//! It talks to the bench on stdin and stdout, a line per message. In:
//! `arm` / `disarm` (whether to print the per-event lines below), `stats`.
//! Out: `ready` once every host has its first snapshot; when armed,
//! `port HOST PORT_ID NS` (a port marked by the bench's MAC prefix reached a
//! host), `member HOST PREFIX NS` (a remote group member was added) and
//! `wired PORT_ID NS` (a marked port was reported wired, so ACTIVE);
//! always `resumed HOST NS` (a stream reopened after it broke) and
//! `stats BYTES MESSAGES SNAPSHOTS`. NS is CLOCK_MONOTONIC, shared with the
//! bench, so it times events without a round trip through this pipe.

use std::collections::BTreeSet;
use std::io::{BufRead, Write as _};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use agent::sync::{Backoff, Server};
use compiler::protocol::{
    Change, HEARTBEAT_SECONDS, HostRegistration, HostState, PROTOCOL_VERSION, PortStatusReport,
    Revision, StreamMessage,
};

use super::stats::monotonic_ns;
use crate::BoxError;

/// The MAC prefix of the ports the bench times (generated MACs use fa:16:3e).
pub const MARKED_MAC_PREFIX: &str = "fa:16:3f";

/// Simulated hosts per loopback source address: the server caps connections
/// per client address, and each host holds a stream plus short requests.
const HOSTS_PER_ADDRESS: usize = 100;

#[derive(clap::Args, Clone, Debug)]
pub struct ScaleAgentsArgs {
    /// The server, http://HOST:PORT.
    #[arg(long)]
    server: String,
    /// How many hosts to simulate.
    #[arg(long)]
    hosts: usize,
}

/// The name of simulated host `i`.
pub fn host_name(i: usize) -> String {
    format!("scale-h{i:05}")
}

#[derive(Default)]
struct Shared {
    armed: AtomicBool,
    bytes: AtomicU64,
    messages: AtomicU64,
    snapshots: AtomicU64,
    ready: AtomicUsize,
}

pub async fn run(args: ScaleAgentsArgs) -> Result<(), BoxError> {
    raise_descriptor_limit();
    let shared = Arc::new(Shared::default());
    let server = Server::parse(&args.server)?;
    for i in 0..args.hosts {
        let server = server.clone().with_local_address(source_address(i));
        tokio::spawn(simulate(i, args.hosts, server, shared.clone()));
    }
    // The bench closing stdin ends this process.
    tokio::task::spawn_blocking(move || obey(&shared)).await?
}

fn obey(shared: &Shared) -> Result<(), BoxError> {
    for line in std::io::stdin().lock().lines() {
        match line?.trim() {
            "arm" => shared.armed.store(true, Ordering::SeqCst),
            "disarm" => shared.armed.store(false, Ordering::SeqCst),
            "stats" => say(format_args!(
                "stats {} {} {}",
                shared.bytes.load(Ordering::SeqCst),
                shared.messages.load(Ordering::SeqCst),
                shared.snapshots.load(Ordering::SeqCst)
            )),
            other => return Err(format!("scale-agents: unknown command {other:?}").into()),
        }
    }
    Ok(())
}

/// 127.0.X.Y, a hundred hosts each, away from 127.0.0.1 (the bench's own).
fn source_address(i: usize) -> IpAddr {
    let block = i / HOSTS_PER_ADDRESS;
    IpAddr::V4(Ipv4Addr::new(
        127,
        1 + (block / 250) as u8,
        1 + (block % 250) as u8,
        1,
    ))
}

fn say(line: std::fmt::Arguments) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

/// One host: registration and heartbeats, then its stream, reopened from
/// its last revision whenever it breaks, with the real agent's backoff.
async fn simulate(i: usize, hosts: usize, server: Server, shared: Arc<Shared>) {
    let name = host_name(i);
    let registration = HostRegistration {
        protocol_version: PROTOCOL_VERSION,
        name: name.clone(),
        underlay_ip: IpAddr::V4(Ipv4Addr::new(
            10,
            200 + (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        )),
        capabilities: vec!["linux-bridge-vxlan".into()],
        physical_networks: vec![],
        gateway: false,
        availability_zone: compiler::protocol::DEFAULT_ZONE.into(),
    };
    let mut backoff = Backoff::default();
    while server.register(&registration).await.is_err() {
        backoff.wait().await;
    }
    backoff.reset();
    tokio::spawn({
        let server = server.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(HEARTBEAT_SECONDS));
            loop {
                tick.tick().await;
                let _ = server.register(&registration).await;
            }
        }
    });
    let mut host = Host::default();
    let mut broke = false;
    // As the agent's `follow_state`: a pause after every break or refusal,
    // the first one short again once a message arrived.
    loop {
        if let Ok(mut stream) = server.stream(&name, host.revision).await {
            if broke {
                say(format_args!("resumed {i} {}", monotonic_ns()));
            }
            let mut counted = 0;
            while let Ok(Some(message)) = stream.next().await {
                backoff.reset();
                shared
                    .bytes
                    .fetch_add(stream.bytes_read() - counted, Ordering::Relaxed);
                counted = stream.bytes_read();
                shared.messages.fetch_add(1, Ordering::Relaxed);
                let first = host.revision.is_none();
                let local_changed = host.receive(i, message, &shared);
                if first
                    && host.revision.is_some()
                    && shared.ready.fetch_add(1, Ordering::SeqCst) + 1 == hosts
                {
                    say(format_args!("ready"));
                }
                if local_changed || host.unreported {
                    host.report(&server, &name, &shared).await;
                }
            }
            broke = true;
        }
        backoff.wait().await;
    }
}

#[derive(Default)]
struct Host {
    state: HostState,
    revision: Option<Revision>,
    wired: BTreeSet<String>,
    /// The last report failed: send one with the next message.
    unreported: bool,
}

impl Host {
    /// Takes in one message; says whether the local ports may have changed.
    fn receive(&mut self, i: usize, message: StreamMessage, shared: &Shared) -> bool {
        let armed = shared.armed.load(Ordering::Relaxed);
        match message {
            StreamMessage::Snapshot { revision, state } => {
                shared.snapshots.fetch_add(1, Ordering::Relaxed);
                self.state = state;
                self.revision = Some(revision);
                true
            }
            StreamMessage::Delta { revision, changes } => {
                let now = monotonic_ns();
                let mut local_changed = false;
                for change in changes {
                    local_changed |= matches!(
                        change,
                        Change::LocalPortUpsert { .. }
                            | Change::LocalPortRemove { .. }
                            | Change::NetworkRemove { .. }
                    );
                    if armed {
                        match &change {
                            Change::LocalPortUpsert { port_id, spec, .. }
                                if spec.mac.to_string().starts_with(MARKED_MAC_PREFIX) =>
                            {
                                say(format_args!("port {i} {port_id} {now}"));
                            }
                            Change::RemotePortUpsert { port_id, spec, .. }
                                if spec.mac.to_string().starts_with(MARKED_MAC_PREFIX) =>
                            {
                                say(format_args!("port {i} {port_id} {now}"));
                            }
                            Change::RemoteGroupMemberAdd { member, .. } => {
                                say(format_args!("member {i} {member} {now}"));
                            }
                            _ => {}
                        }
                    }
                    self.state.apply(change);
                }
                self.revision = Some(revision);
                local_changed
            }
            StreamMessage::Idle { revision } => {
                self.revision = Some(revision);
                false
            }
        }
    }

    /// Report the local ports wired when they changed, as the agent does
    /// once its kernel holds them (here, at once).
    async fn report(&mut self, server: &Server, name: &str, shared: &Shared) {
        let local: BTreeSet<String> = self
            .state
            .networks
            .values()
            .flat_map(|n| n.local_ports.keys().cloned())
            .collect();
        if local == self.wired {
            return;
        }
        let report = PortStatusReport {
            revision: self.revision.unwrap_or_default(),
            wired: local.iter().cloned().collect(),
        };
        self.unreported = server.report_ports(name, &report).await.is_err();
        if self.unreported {
            return;
        }
        if shared.armed.load(Ordering::Relaxed) {
            let now = monotonic_ns();
            for network in self.state.networks.values() {
                for (id, port) in &network.local_ports {
                    if !self.wired.contains(id)
                        && port.mac.to_string().starts_with(MARKED_MAC_PREFIX)
                    {
                        say(format_args!("wired {id} {now}"));
                    }
                }
            }
        }
        self.wired = local;
    }
}

/// A thousand hosts hold several thousand sockets: lift the soft limit.
fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
