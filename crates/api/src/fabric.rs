//! The compiler inside the server. Fed by the store's watch (so every write,
//! from any server, reaches it in revision order), it keeps each host's
//! desired state and a bounded log of each host's deltas, and hands each
//! agent's stream its own: a snapshot, then deltas, tagged with store
//! revisions. An agent that reconnects resumes after its last revision, or
//! gets a fresh snapshot when the log no longer reaches back that far.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use compiler::protocol::{Change, Revision, StreamMessage};
use compiler::{Compiler, Input};
use model::{Kind, Resource};
use store::{Event, EventKind, KeyRange, Store};
use tokio::sync::broadcast;

use crate::hosts;

/// Deltas kept per host for resuming streams.
const LOG_LIMIT: usize = 1024;

/// Published batches buffered per stream; a stream that falls further behind
/// ends, and its agent reconnects (resuming from the log or a snapshot).
const STREAM_BUFFER: usize = 4096;

/// The changes of one store revision, by host.
#[derive(Debug)]
pub struct Published {
    pub revision: Revision,
    pub changes: HashMap<String, Vec<Change>>,
}

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
    published: broadcast::Sender<Arc<Published>>,
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
        // Published under the lock, so a stream opened under it sees no gap.
        let _ = state
            .published
            .send(Arc::new(Published { revision, changes }));
    }

    /// What a stream of `host` starts with (a snapshot, or the deltas after
    /// `from`), and the feed of everything published after that.
    pub fn open(
        &self,
        host: &str,
        from: Option<Revision>,
    ) -> (Vec<StreamMessage>, broadcast::Receiver<Arc<Published>>) {
        let state = self.lock();
        let feed = state.published.subscribe();
        let since = state.logs.get(host).map_or(state.built_at, |l| l.since);
        let first = match from {
            Some(r) if r >= since && r <= state.revision => {
                let mut deltas: Vec<StreamMessage> = state
                    .logs
                    .get(host)
                    .into_iter()
                    .flat_map(|l| l.entries.iter())
                    .filter(|(rev, _)| *rev > r)
                    .map(|(rev, changes)| StreamMessage::Delta {
                        revision: *rev,
                        changes: changes.clone(),
                    })
                    .collect();
                if deltas.is_empty() {
                    deltas.push(StreamMessage::Idle {
                        revision: state.revision,
                    });
                }
                deltas
            }
            _ => vec![StreamMessage::Snapshot {
                revision: state.revision,
                state: state.compiler.snapshot(host),
            }],
        };
        (first, feed)
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
        published: broadcast::channel(STREAM_BUFFER).0,
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
