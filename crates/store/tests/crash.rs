//! kill -9 of a writing process loses no acknowledged transaction and leaves no
//! half-applied one. The test re-runs its own binary as the child: the ignored test
//! `crash_child_writer` writes in a loop and prints every acknowledged revision, and
//! the parent SIGKILLs it mid-stream, then checks the database it left.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use futures::StreamExt;
use store::embedded::EmbeddedStore;
use store::testing::{ops, put};
use store::{EventKind, KeyRange, Revision, Store};

const DIR_ENV: &str = "VNET_STORE_CRASH_DIR";
const ROUND_ENV: &str = "VNET_STORE_CRASH_ROUND";
const WRITERS: u64 = 8;
const ROUNDS: u64 = 12;

fn key(round: u64, id: u64, half: &str) -> String {
    format!("crash/{round}/{id:06}/{half}")
}

/// The child: writes until killed. Each txn puts two keys; each ack line is printed
/// only once the txn's future has resolved (so it is durable).
#[test]
#[ignore = "the child process of kill_9_loses_no_acknowledged_txn"]
fn crash_child_writer() {
    let (Ok(dir), Ok(round)) = (std::env::var(DIR_ENV), std::env::var(ROUND_ENV)) else {
        return;
    };
    let round: u64 = round.parse().expect("round number");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let store = Arc::new(EmbeddedStore::open(Path::new(&dir)).expect("open store"));
        let next_id = Arc::new(AtomicU64::new(0));
        for _ in 0..WRITERS {
            let (store, next_id) = (Arc::clone(&store), Arc::clone(&next_id));
            tokio::spawn(async move {
                loop {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let value = id.to_le_bytes();
                    let r = store
                        .txn(ops(vec![
                            put(&key(round, id, "a"), &value),
                            put(&key(round, id, "b"), &value),
                        ]))
                        .await
                        .expect("txn");
                    println!("ack {id} {}", r.revision);
                }
            });
        }
        // Until the parent's SIGKILL.
        std::future::pending::<()>().await;
    });
}

#[test]
fn kill_9_loses_no_acknowledged_txn() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("test binary path");
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["crash_child_writer", "--exact", "--ignored", "--nocapture"])
            .env(DIR_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });

        // Kill at a different point each round, while all writers are mid-flight.
        let kill_after = 100 + 50 * round as usize;
        let mut acked: BTreeMap<u64, Revision> = BTreeMap::new();
        while acked.len() < kill_after {
            match lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => record_ack(&line, &mut acked),
                Err(e) => {
                    let _ = child.kill();
                    panic!(
                        "child stopped acknowledging after {} acks: {e}",
                        acked.len()
                    );
                }
            }
        }
        child.kill().expect("SIGKILL the child");
        let status = child.wait().expect("wait for child");
        assert_eq!(
            status.signal(),
            Some(9),
            "child died of SIGKILL, not {status:?}"
        );
        // Lines printed before the kill landed were acknowledged too.
        while let Ok(line) = lines.recv_timeout(Duration::from_secs(10)) {
            record_ack(&line, &mut acked);
        }

        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(check_after_crash(dir.path(), round, &acked));
    }
}

fn record_ack(line: &str, acked: &mut BTreeMap<u64, Revision>) {
    // libtest's own lines, or a line cut by the kill, are not acks.
    let words: Vec<&str> = line.split_whitespace().collect();
    let parsed = match words.as_slice() {
        ["ack", id, revision] => id.parse().ok().zip(revision.parse().ok()),
        _ => None,
    };
    if let Some((id, revision)) = parsed {
        acked.insert(id, revision);
    }
}

/// One of the two keys of a txn: which half, its value and its revision.
type Half = (String, Vec<u8>, Revision);

async fn check_after_crash(dir: &Path, round: u64, acked: &BTreeMap<u64, Revision>) {
    let store = EmbeddedStore::open(dir).expect("reopen after crash");
    let all = store
        .range(KeyRange::Prefix("crash/".into()))
        .await
        .expect("range");

    // Both keys of every txn, or neither, at one revision.
    let mut txns: BTreeMap<(String, String), Vec<Half>> = BTreeMap::new();
    for kv in &all.kvs {
        let (txn, half) = kv.key.rsplit_once('/').expect("crash key");
        let (round_part, id) = txn
            .trim_start_matches("crash/")
            .split_once('/')
            .expect("crash key");
        txns.entry((round_part.to_owned(), id.to_owned()))
            .or_default()
            .push((half.to_owned(), kv.value.clone(), kv.mod_revision));
    }
    for ((r, id), halves) in &txns {
        let [(a, va, ra), (b, vb, rb)] = halves.as_slice() else {
            panic!("round {r} txn {id} is half applied: {halves:?}");
        };
        assert_eq!((a.as_str(), b.as_str()), ("a", "b"));
        assert_eq!((va, ra), (vb, rb), "round {r} txn {id}: halves differ");
    }

    for (id, revision) in acked {
        let a = all
            .kvs
            .iter()
            .find(|kv| kv.key == key(round, *id, "a"))
            .unwrap_or_else(|| panic!("round {round}: acknowledged txn {id} lost"));
        assert_eq!(a.mod_revision, *revision, "round {round}: txn {id}");
        assert_eq!(a.value, id.to_le_bytes());
    }

    // Every revision is one whole txn: nothing was skipped or bumped without data.
    let revision = all.revision;
    assert_eq!(
        txns.len() as Revision,
        revision,
        "one revision per surviving txn"
    );
    let max_acked = acked.values().max().copied().unwrap_or(0);
    assert!(revision >= max_acked);

    // The event log agrees with the keys.
    let mut history = store
        .watch(KeyRange::Prefix("crash/".into()), 1)
        .await
        .expect("watch");
    for expected in 1..=revision {
        let batch = tokio::time::timeout(Duration::from_secs(20), history.next())
            .await
            .expect("history replay stalled")
            .expect("history ended")
            .expect("history failed");
        assert_eq!(batch.len(), 2, "revision {expected}: {batch:?}");
        assert!(
            batch
                .iter()
                .all(|e| e.kind == EventKind::Put && e.kv.mod_revision == expected)
        );
    }
    println!(
        "round {round}: {} acks, {} txns survived, revision {revision}",
        acked.len(),
        txns.len()
    );
}
