//! The compiler inside the server. Fed by the store's watch (so every write,
//! from any server, reaches it in revision order), it keeps each host's
//! desired state and a log of the deltas of recent revisions, and hands each
//! agent's stream its own: a snapshot, then deltas, tagged with store
//! revisions. An agent that reconnects resumes after its last revision, or
//! gets a fresh snapshot when the log no longer reaches back that far.
//! A revision wakes only the streams of the hosts it changes: the work of a
//! change is in proportion to the hosts it reaches, not to all of them, and
//! so is its room in the log (hosts that get the same changes share them).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use compiler::protocol::{Change, Revision, StreamMessage};
use compiler::{Compiler, HostChanges, Input};
use model::{Kind, Resource};
use store::{Event, EventKind, KeyRange, Store};
use tokio::sync::watch;

use crate::hosts;

/// What the log may hold, in bytes across all hosts (as [`Log`] counts
/// them); past it, the oldest revisions go. A stream that has not sent a
/// revision that went ends, and its agent reconnects (resuming from the log,
/// or from a snapshot).
const LOG_BYTES: usize = 64 << 20;

/// The deltas of recent revisions, by host. Each revision's hosts that get
/// the same changes share one list (see [`shared_lists`]), so a change that
/// reaches a thousand hosts is kept once, and the log is bounded by what it
/// holds across hosts rather than by revisions per host.
struct Log {
    hosts: HashMap<Arc<str>, HostLog>,
    /// The revisions with an entry in some host's log, oldest first.
    revisions: VecDeque<LoggedRevision>,
    /// What `revisions` hold: each distinct list once (its changes' own size
    /// and their size on the wire, about what their strings hold), plus
    /// [`ENTRY_BYTES`] per host entry.
    bytes: usize,
    budget: usize,
}

struct HostLog {
    /// The log holds every change of this host after this revision.
    since: Revision,
    entries: VecDeque<(Revision, Arc<[Change]>)>,
}

struct LoggedRevision {
    revision: Revision,
    /// The hosts with an entry for it: the front entry of each, when it is
    /// the oldest revision.
    hosts: Vec<Arc<str>>,
    bytes: usize,
}

/// A host's entry for one revision, besides its changes: its place in the
/// host's log and the host's name in the revision's.
const ENTRY_BYTES: usize = size_of::<(Revision, Arc<[Change]>)>() + size_of::<Arc<str>>();

impl Log {
    fn new(budget: usize) -> Log {
        Log {
            hosts: HashMap::new(),
            revisions: VecDeque::new(),
            bytes: 0,
            budget,
        }
    }

    /// Log one revision's lists, then drop the oldest revisions past the
    /// budget. The newest one stays, whatever its size, so that a stream
    /// that keeps up never loses it. A revision that changes no host (a
    /// port's status, say) takes no room. A host new to the log has had no
    /// change since `built_at`.
    fn append(&mut self, revision: Revision, built_at: Revision, lists: SharedLists) {
        if lists.by_host.is_empty() {
            return;
        }
        let mut hosts = Vec::with_capacity(lists.by_host.len());
        for (host, changes) in lists.by_host {
            let name = match self.hosts.get_key_value(host.as_str()) {
                Some((name, _)) => name.clone(),
                None => Arc::from(host),
            };
            self.hosts
                .entry(name.clone())
                .or_insert_with(|| HostLog {
                    since: built_at,
                    entries: VecDeque::new(),
                })
                .entries
                .push_back((revision, changes));
            hosts.push(name);
        }
        let bytes = lists.bytes + hosts.len() * ENTRY_BYTES;
        self.bytes += bytes;
        self.revisions.push_back(LoggedRevision {
            revision,
            hosts,
            bytes,
        });
        while self.bytes > self.budget && self.revisions.len() > 1 {
            let Some(oldest) = self.revisions.pop_front() else {
                break;
            };
            self.bytes -= oldest.bytes;
            for host in &oldest.hosts {
                if let Some(log) = self.hosts.get_mut(host) {
                    log.entries.pop_front();
                    log.since = oldest.revision;
                }
            }
        }
    }
}

/// One revision's changes by host, each host's list shared with every other
/// host that gets the same one.
struct SharedLists {
    by_host: Vec<(String, Arc<[Change]>)>,
    /// What its distinct lists hold, as [`Log`] counts it.
    bytes: usize,
}

/// The compiler emits a change that reaches many hosts once per host, one
/// after another, so a change equal to the one before it is that one again;
/// a list is then shared when its changes are the same ones.
fn shared_lists(changes: HostChanges) -> SharedLists {
    let mut interned: HashMap<String, Vec<Arc<Change>>> = HashMap::new();
    let mut previous: Option<Arc<Change>> = None;
    for (host, change) in changes {
        let change = match previous.take() {
            Some(p) if *p == change => p,
            _ => Arc::new(change),
        };
        previous = Some(change.clone());
        interned.entry(host).or_default().push(change);
    }
    // Keyed by the changes' addresses, which `interned` keeps alive meanwhile.
    let mut distinct: HashMap<Vec<*const Change>, Arc<[Change]>> = HashMap::new();
    let mut bytes = 0;
    let by_host = interned
        .iter()
        .map(|(host, changes)| {
            let key = changes.iter().map(Arc::as_ptr).collect();
            let list = distinct.entry(key).or_insert_with(|| {
                let list: Arc<[Change]> = changes.iter().map(|c| Change::clone(c)).collect();
                bytes += size_of_val(&*list) + wire_size(&list);
                list
            });
            (host.clone(), list.clone())
        })
        .collect();
    SharedLists { by_host, bytes }
}

/// The size of `changes` in a delta on the stream.
fn wire_size(changes: &[Change]) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Changes always encode (plain data); one that did not would count 0.
    let _ = serde_json::to_writer(&mut count, changes);
    count.0
}

struct State {
    compiler: Compiler,
    revision: Revision,
    /// The revision the compiler was built at: a host with no log yet has had
    /// no change since.
    built_at: Revision,
    log: Log,
    /// The newest revision of each host's log, for the streams of hosts that
    /// have one open. Dropped with the state on a rebuild, which ends them.
    feeds: HashMap<String, watch::Sender<Revision>>,
}

/// What a host's stream has next, read from its log after its last revision.
pub enum Next {
    /// The host's deltas after that revision, in order (at least one).
    Deltas(Vec<StreamMessage>),
    /// None: the stream is up to date at this (the fabric's) revision.
    UpToDate(Revision),
    /// The log no longer reaches back that far: end the stream.
    Lost,
}

pub struct Fabric {
    state: Mutex<State>,
}

/// The compiler's input for a stored key and value (`None`: deleted), or
/// `None` for keys it does not compile.
pub fn input_of(key: &str, value: Option<&[u8]>) -> Result<Option<Input>, serde_json::Error> {
    if let Some(name) = key.strip_prefix(hosts::KEY_PREFIX) {
        return Ok(Some(match value {
            Some(v) => serde_json::from_slice::<hosts::StoredHost>(v)?.input(),
            None => Input::HostDeleted(name.to_owned()),
        }));
    }
    let Some(kind) = Kind::ALL
        .into_iter()
        .find(|k| key.starts_with(k.key_prefix()))
    else {
        return Ok(None);
    };
    Ok(match value {
        Some(v) => Input::put(serde_json::from_slice::<Resource>(v)?),
        None => Input::deleted(kind, key[kind.key_prefix().len()..].to_owned()),
    })
}

impl Fabric {
    /// A fabric compiled from `inputs`, the whole store at `revision`.
    pub fn new(inputs: impl IntoIterator<Item = Input>, revision: Revision) -> Fabric {
        Fabric {
            state: Mutex::new(build(inputs, revision)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Read the compiled state under the fabric's lock (a trace: a few
    /// lookups, microseconds); `f` must not block.
    pub fn read<R>(&self, f: impl FnOnce(&Compiler) -> R) -> R {
        f(&self.lock().compiler)
    }

    pub fn revision(&self) -> Revision {
        self.lock().revision
    }

    /// Start over from a fresh read of the store: every open stream ends and
    /// its agent reconnects to a snapshot.
    pub fn rebuild(&self, inputs: impl IntoIterator<Item = Input>, revision: Revision) {
        *self.lock() = build(inputs, revision);
    }

    /// Compile the inputs of one store revision and publish each host's changes.
    pub fn apply(&self, revision: Revision, inputs: Vec<Input>) {
        let mut state = self.lock();
        let mut changes = HostChanges::new();
        for input in inputs {
            changes.extend(state.compiler.apply(input));
        }
        state.revision = revision;
        let lists = shared_lists(changes);
        // Under the lock, so a stream opened under it sees no gap.
        for (host, _) in &lists.by_host {
            if let Some(feed) = state.feeds.get(host) {
                feed.send_replace(revision);
            }
        }
        let built_at = state.built_at;
        state.log.append(revision, built_at, lists);
    }

    /// What a stream of `host` starts with (a snapshot, or the deltas after
    /// `from`), and the feed that says when its log has more. Its first
    /// message's revision is where [`Fabric::next`] goes on from.
    pub fn open(
        &self,
        host: &str,
        from: Option<Revision>,
    ) -> (Vec<StreamMessage>, watch::Receiver<Revision>) {
        let mut state = self.lock();
        let revision = state.revision;
        let feed = state
            .feeds
            .entry(host.to_owned())
            .or_insert_with(|| watch::channel(revision).0)
            .subscribe();
        let first = match from.map(|r| next(&state, host, r)) {
            Some(Next::Deltas(deltas)) => deltas,
            Some(Next::UpToDate(_)) => vec![StreamMessage::Idle { revision }],
            None | Some(Next::Lost) => vec![StreamMessage::Snapshot {
                revision,
                state: state.compiler.snapshot(host),
            }],
        };
        (first, feed)
    }

    /// What a stream of `host` that has sent everything up to `seen` sends next.
    pub fn next(&self, host: &str, seen: Revision) -> Next {
        next(&self.lock(), host, seen)
    }
}

fn next(state: &State, host: &str, seen: Revision) -> Next {
    let log = state.log.hosts.get(host);
    if seen < log.map_or(state.built_at, |l| l.since) || seen > state.revision {
        return Next::Lost;
    }
    let deltas: Vec<StreamMessage> = log
        .into_iter()
        .flat_map(|l| {
            let first_unseen = l.entries.partition_point(|(rev, _)| *rev <= seen);
            l.entries.range(first_unseen..)
        })
        .map(|(rev, changes)| StreamMessage::Delta {
            revision: *rev,
            changes: changes.to_vec(),
        })
        .collect();
    if deltas.is_empty() {
        Next::UpToDate(state.revision)
    } else {
        Next::Deltas(deltas)
    }
}

fn build(inputs: impl IntoIterator<Item = Input>, revision: Revision) -> State {
    build_with_budget(inputs, revision, LOG_BYTES)
}

fn build_with_budget(
    inputs: impl IntoIterator<Item = Input>,
    revision: Revision,
    budget: usize,
) -> State {
    State {
        compiler: Compiler::build(inputs),
        revision,
        built_at: revision,
        log: Log::new(budget),
        feeds: HashMap::new(),
    }
}

/// The inputs of a store watch batch (one revision's events).
fn inputs_of(events: &[Event]) -> Vec<Input> {
    events
        .iter()
        .filter_map(|e| {
            let value = (e.kind == EventKind::Put).then_some(e.kv.value.as_slice());
            match input_of(&e.kv.key, value) {
                Ok(input) => input,
                Err(err) => {
                    tracing::error!(key = %e.kv.key, error = %err, "unreadable stored record skipped by the compiler");
                    None
                }
            }
        })
        .collect()
}

/// Read the whole store: the compiler's inputs and the revision they are at.
pub async fn read_inputs(store: &dyn Store) -> Result<(Vec<Input>, Revision), store::StoreError> {
    let all = store.range(KeyRange::Prefix(String::new())).await?;
    let mut inputs = Vec::new();
    for kv in &all.kvs {
        match input_of(&kv.key, Some(&kv.value)) {
            Ok(Some(input)) => inputs.push(input),
            Ok(None) => {}
            Err(err) => {
                tracing::error!(key = %kv.key, error = %err, "unreadable stored record skipped by the compiler")
            }
        }
    }
    Ok((inputs, all.revision))
}

/// Feed the fabric from the store's watch, forever. If the watch breaks (the
/// store compacted past a lagging watcher, say), rebuild from a fresh read.
pub async fn follow(fabric: Arc<Fabric>, store: Arc<dyn Store>) {
    loop {
        let from = fabric.revision() + 1;
        match store.watch(KeyRange::Prefix(String::new()), from).await {
            Ok(mut events) => {
                use futures::StreamExt;
                while let Some(batch) = events.next().await {
                    match batch {
                        Ok(batch) => {
                            let Some(revision) = batch.first().map(|e| e.kv.mod_revision) else {
                                continue;
                            };
                            fabric.apply(revision, inputs_of(&batch));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "store watch ended; rebuilding the compiler");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "store watch refused; rebuilding the compiler"),
        }
        match read_inputs(store.as_ref()).await {
            Ok((inputs, revision)) => fabric.rebuild(inputs, revision),
            Err(store::StoreError::Closed) => return,
            Err(e) => {
                tracing::error!(error = %e, "reading the store failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use compiler::protocol::{DEFAULT_ZONE, HostState};
    use model::{FixedIp, MacAddr, Network, Port, PortStatus, Standard, Subnet};

    use super::*;

    fn host(name: &str, last: u8) -> Input {
        Input::Host {
            name: name.into(),
            underlay_ip: IpAddr::from([192, 0, 2, last]),
            physical_networks: vec![],
            gateway: false,
            availability_zone: DEFAULT_ZONE.into(),
        }
    }

    fn network(id: &str) -> Input {
        Input::Network(Box::new(Network {
            std: Standard::new(id.into(), "p".into(), 0),
            admin_state_up: true,
            mtu: 1450,
            legacy_shared: false,
            legacy_external: false,
            port_security_enabled: true,
            network_type: "vxlan".into(),
            segmentation_id: 100,
            physical_network: None,
            availability_zone_hints: vec![],
            is_default: false,
        }))
    }

    fn subnet(id: &str, network: &str) -> Input {
        Input::Subnet(Box::new(Subnet {
            std: Standard::new(id.into(), "p".into(), 0),
            network_id: network.into(),
            ip_version: 4,
            cidr: "10.0.0.0/24".parse().expect("a CIDR"),
            gateway_ip: None,
            allocation_pools: vec![],
            dns_nameservers: vec![],
            host_routes: vec![],
            enable_dhcp: true,
            ipv6_ra_mode: None,
            ipv6_address_mode: None,
            subnetpool_id: None,
            service_types: vec![],
        }))
    }

    /// Port `n` of network `net`, bound to `host`, at 10.0.0.`n`.
    fn port(n: u8, net: &str, host: &str) -> Input {
        Input::Port(Box::new(Port {
            std: Standard::new(format!("p{n}"), "p".into(), 0),
            network_id: net.into(),
            mac_address: MacAddr([0xfa, 0x16, 0x3e, 0, 0, n]),
            admin_state_up: true,
            status: PortStatus::Down,
            device_id: String::new(),
            device_owner: String::new(),
            fixed_ips: vec![FixedIp {
                subnet_id: "s".into(),
                ip_address: IpAddr::from([10, 0, 0, n]),
            }],
            security_groups: vec![],
            port_security_enabled: true,
            allowed_address_pairs: vec![],
            extra_dhcp_opts: vec![],
            binding_host_id: host.into(),
            binding_vnic_type: "normal".into(),
            binding_profile: String::new(),
        }))
    }

    /// A fabric at revision 1 (hosts h1, h2, h3 and network n) whose log
    /// holds `budget` bytes, then revisions 2, 3, …: one port each, on h1,
    /// h2, h3, h1, h2, ….
    fn fabric(budget: usize, ports: u8) -> Fabric {
        let inputs = [host("h1", 1), host("h2", 2), host("h3", 3), network("n")];
        let fabric = Fabric {
            state: Mutex::new(build_with_budget(inputs, 1, budget)),
        };
        fabric.apply(2, vec![subnet("s", "n")]);
        for n in 1..=ports {
            let on = format!("h{}", 1 + (n - 1) % 3);
            fabric.apply(2 + Revision::from(n), vec![port(n, "n", &on)]);
        }
        fabric
    }

    /// The host's state replayed from its first snapshot and every delta
    /// after it, and the revision it is at.
    fn replay(fabric: &Fabric, name: &str) -> (HostState, Revision) {
        let (first, _) = fabric.open(name, None);
        let mut state = HostState::default();
        let mut seen = 0;
        let mut messages = first;
        loop {
            for message in messages {
                match message {
                    StreamMessage::Snapshot { revision, state: s } => (state, seen) = (s, revision),
                    StreamMessage::Delta { revision, changes } => {
                        changes.into_iter().for_each(|c| state.apply(c));
                        seen = revision;
                    }
                    StreamMessage::Idle { revision } => seen = revision,
                }
            }
            match fabric.next(name, seen) {
                Next::Deltas(more) => messages = more,
                Next::UpToDate(_) => return (state, seen),
                Next::Lost => panic!("{name} lost its stream at {seen}"),
            }
        }
    }

    #[test]
    fn hosts_that_get_the_same_changes_share_them() {
        let fabric = fabric(LOG_BYTES, 3);
        // p4 on h1: h2 and h3 see it remote, the same change for both.
        fabric.apply(6, vec![port(4, "n", "h1")]);
        let state = fabric.lock();
        let entry = |h: &str| {
            state.log.hosts[h]
                .entries
                .back()
                .cloned()
                .expect("an entry")
        };
        let (h1, h2, h3) = (entry("h1"), entry("h2"), entry("h3"));
        assert_eq!((h1.0, h2.0, h3.0), (6, 6, 6));
        assert!(Arc::ptr_eq(&h2.1, &h3.1), "h2 and h3 share one list");
        assert!(!Arc::ptr_eq(&h1.1, &h2.1), "h1 has its own");
        assert!(matches!(&h2.1[..], [Change::RemotePortUpsert { port_id, .. }] if port_id == "p4"));
        // The revision holds its two distinct lists once, and three entries.
        let logged = state.log.revisions.back().expect("revision 6");
        assert_eq!(
            logged.bytes,
            [&h1.1, &h2.1]
                .iter()
                .map(|l| size_of_val(&***l) + wire_size(l))
                .sum::<usize>()
                + 3 * ENTRY_BYTES
        );
        drop(state);
        for name in ["h1", "h2", "h3"] {
            // Resumed from before the first port: every delta, in order.
            let mut state = HostState::default();
            let Next::Deltas(deltas) = fabric.next(name, 1) else {
                panic!("{name} has deltas since revision 1");
            };
            for delta in deltas {
                let StreamMessage::Delta { changes, .. } = delta else {
                    panic!("a delta");
                };
                changes.into_iter().for_each(|c| state.apply(c));
            }
            assert_eq!(state, fabric.read(|c| c.snapshot(name)), "{name}");
        }
    }

    #[test]
    fn the_log_holds_its_budget_and_a_stream_behind_it_resumes_from_a_snapshot() {
        let full = fabric(LOG_BYTES, 30);
        // Room for about the last third of the revisions.
        let budget = full.lock().log.bytes / 3;
        let fabric = fabric(budget, 30);
        let state = fabric.lock();
        assert!(state.log.bytes <= budget);
        let oldest = state.log.revisions.front().expect("a revision").revision;
        assert!(oldest > 3 && oldest < 32, "the oldest kept is {oldest}");
        // Every host's log starts where the log's revisions do.
        for log in state.log.hosts.values() {
            assert!(log.since >= oldest - 3 && log.since < oldest);
            assert!(log.entries.front().is_some_and(|(r, _)| *r >= oldest));
        }
        drop(state);
        assert!(matches!(fabric.next("h1", 2), Next::Lost));
        assert!(matches!(fabric.next("h1", oldest), Next::Deltas(_)));
        assert!(matches!(fabric.next("h1", 32), Next::UpToDate(32)));
        // A host the log never named has had nothing since the build.
        assert!(matches!(fabric.next("h4", 1), Next::UpToDate(32)));
        for name in ["h1", "h2", "h3", "h4"] {
            assert_eq!(
                replay(&fabric, name),
                (fabric.read(|c| c.snapshot(name)), 32),
                "{name}"
            );
        }
    }

    #[test]
    fn a_revision_that_changes_no_host_takes_no_room() {
        let fabric = fabric(LOG_BYTES, 3);
        let before = fabric.lock().log.revisions.len();
        fabric.apply(6, vec![Input::PortDeleted("no-such-port".into())]);
        let state = fabric.lock();
        assert_eq!((state.revision, state.log.revisions.len()), (6, before));
        drop(state);
        assert!(matches!(fabric.next("h1", 5), Next::UpToDate(6)));
    }

    #[test]
    fn the_newest_revision_stays_whatever_its_size() {
        let fabric = fabric(0, 2);
        assert_eq!(fabric.lock().log.revisions.len(), 1);
        assert!(matches!(fabric.next("h2", 3), Next::Deltas(d) if d.len() == 1));
        assert!(matches!(fabric.next("h1", 2), Next::Lost));
    }
}
