//! Durable transactions per second, with and without group commit, in one run so
//! the gain is a ratio on the same disk. Ignored by default (it measures, it does
//! not check much); run it with
//! `cargo test -p store --release --test bench -- --ignored --nocapture`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use store::Store;
use store::embedded::{EmbeddedStore, Options};
use store::testing::{ops, put};

/// How long each scenario writes.
const RUN: Duration = Duration::from_secs(3);

struct Figures {
    txns: u64,
    batches: u64,
    elapsed: Duration,
}

async fn run(callers: usize, max_batch: usize) -> Figures {
    // Under the work tree's disk, not a tmpfs, so the fsyncs are real.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let store = Arc::new(
        EmbeddedStore::open_with(
            dir.path(),
            Options {
                max_batch,
                ..Options::default()
            },
        )
        .expect("open store"),
    );
    let value = vec![7u8; 200];
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let (store, value) = (Arc::clone(&store), value.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while start.elapsed() < RUN {
                    store
                        .txn(ops(vec![put(&format!("bench/{c}/{}", i % 1000), &value)]))
                        .await
                        .expect("txn");
                    i += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller task");
    }
    let elapsed = start.elapsed();
    let stats = store.commit_stats();
    Figures {
        txns: stats.txns,
        batches: stats.batches,
        elapsed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture, preferably --release"]
async fn group_commit_throughput() {
    let scenarios = [
        ("fsync per txn (max_batch 1), 1 caller", 1, 1),
        ("fsync per txn (max_batch 1), 64 callers", 64, 1),
        ("group commit, 1 caller", 1, 1024),
        ("group commit, 8 callers", 8, 1024),
        ("group commit, 64 callers", 64, 1024),
    ];
    let mut baseline = None;
    println!(
        "{:<42} {:>10} {:>10} {:>10} {:>8}",
        "scenario", "txns/s", "fsyncs/s", "txn/batch", "gain"
    );
    for (name, callers, max_batch) in scenarios {
        let f = run(callers, max_batch).await;
        let secs = f.elapsed.as_secs_f64();
        let rate = f.txns as f64 / secs;
        let base = *baseline.get_or_insert(rate);
        println!(
            "{name:<42} {rate:>10.0} {:>10.0} {:>10.1} {:>7.1}x",
            f.batches as f64 / secs,
            f.txns as f64 / f.batches.max(1) as f64,
            rate / base,
        );
        assert!(f.txns > 0);
    }
}
