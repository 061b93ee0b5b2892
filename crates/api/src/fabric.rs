//! The compiler inside the server. Fed by the store's watch (so every write,
//! from any server, reaches it in revision order), it keeps each host's
//! desired state and a bounded log of each host's deltas, and hands each
//! agent's stream its own: a snapshot, then deltas, tagged with store
//! revisions. An agent that reconnects resumes after its last revision, or
//! gets a fresh snapshot when the log no longer reaches back that far.
//! A revision wakes only the streams of the hosts it changes: the work of a
//! change is in proportion to the hosts it reaches, not to all of them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use compiler::protocol::{Change, Revision, StreamMessage};
use compiler::{Compiler, Input};
use model::{Kind, Resource};
use store::{Event, EventKind, KeyRange, Store};
use tokio::sync::watch;

use crate::hosts;

/// Deltas kept per host, for its stream to read and for resuming streams.
/// A stream that falls further behind ends, and its agent reconnects
/// (resuming from the log or a snapshot).
const LOG_LIMIT: usize = 1024;

#[derive(Default)]
struct HostLog {
    /// The log holds every change of this host after this revision.
    since: Revision,
    entries: VecDeque<(Revision, Vec<Change>)>,
}

struct State {
    compiler: Compiler,
    revision: Revision,
    /// The revision the compiler was built at: a host with no log yet has had
    /// no change since.
    built_at: Revision,
    logs: HashMap<String, HostLog>,
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
        let mut changes: HashMap<String, Vec<Change>> = HashMap::new();
        for input in inputs {
            for (host, change) in state.compiler.apply(input) {
                changes.entry(host).or_default().push(change);
            }
        }
        state.revision = revision;
        let built_at = state.built_at;
        for (host, host_changes) in &changes {
            let log = state.logs.entry(host.clone()).or_insert_with(|| HostLog {
                since: built_at,
                entries: VecDeque::new(),
            });
            log.entries.push_back((revision, host_changes.clone()));
            while log.entries.len() > LOG_LIMIT {
                if let Some((dropped, _)) = log.entries.pop_front() {
                    log.since = dropped;
                }
            }
        }
        // Under the lock, so a stream opened under it sees no gap.
        for host in changes.keys() {
            if let Some(feed) = state.feeds.get(host) {
                feed.send_replace(revision);
            }
        }
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
    let log = state.logs.get(host);
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
            changes: changes.clone(),
        })
        .collect();
    if deltas.is_empty() {
        Next::UpToDate(state.revision)
    } else {
        Next::Deltas(deltas)
    }
}

fn build(inputs: impl IntoIterator<Item = Input>, revision: Revision) -> State {
    let mut compiler = Compiler::new();
    for input in inputs {
        compiler.apply(input);
    }
    State {
        compiler,
        revision,
        built_at: revision,
        logs: HashMap::new(),
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
