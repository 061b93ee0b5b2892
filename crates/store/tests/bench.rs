//! Durable transactions per second, with and without group commit, in one run so
//! the gain is a ratio on the same disk; then the same callers on an etcd member
//! (on the same disk), whose one-caller line is etcd's fsync-per-transaction
//! floor. Ignored by default (it measures, it does not check much); run it with
//! `cargo test -p store --release --test bench -- --ignored --nocapture`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use store::Store;
use store::embedded::{EmbeddedStore, Options};
use store::etcd::EtcdStore;
use store::etcd::local::LocalEtcd;
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
    let (txns, elapsed) = drive(store.clone(), callers).await;
    let stats = store.commit_stats();
    Figures {
        txns,
        batches: stats.batches,
        elapsed,
    }
}

/// `callers` tasks writing one key per transaction for [`RUN`]; returns the
/// transactions acknowledged and the time they took.
async fn drive(store: Arc<dyn Store>, callers: usize) -> (u64, Duration) {
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
                i
            })
        })
        .collect();
    let mut txns = 0;
    for task in tasks {
        txns += task.await.expect("caller task");
    }
    (txns, start.elapsed())
}

/// The same callers on one etcd member; its WAL fsyncs are read from its own
/// metrics (`etcd_disk_wal_fsync_duration_seconds_count`).
async fn run_etcd(etcd: &LocalEtcd, callers: usize) -> Figures {
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(store::etcd::Options::new(vec![
            etcd.client_url().to_owned(),
        ]))
        .await
        .expect("connect"),
    );
    let before = wal_fsyncs(etcd.client_url());
    let (txns, elapsed) = drive(store, callers).await;
    Figures {
        txns,
        batches: wal_fsyncs(etcd.client_url()) - before,
        elapsed,
    }
}

fn wal_fsyncs(url: &str) -> u64 {
    let addr = url.trim_start_matches("http://");
    let mut conn = TcpStream::connect(addr).expect("etcd metrics");
    write!(conn, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut reply = String::new();
    conn.read_to_string(&mut reply).expect("metrics");
    reply
        .lines()
        .find_map(|l| l.strip_prefix("etcd_disk_wal_fsync_duration_seconds_count "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .map_or(0, |n| n as u64)
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
    let mut results = Vec::new();
    for (name, callers, max_batch) in scenarios {
        results.push((name, run(callers, max_batch).await));
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let etcd = LocalEtcd::start(dir.path()).await.expect("start etcd");
    for (name, callers) in [
        ("etcd (fsync per txn), 1 caller", 1),
        ("etcd, 8 callers", 8),
        ("etcd, 64 callers", 64),
    ] {
        results.push((name, run_etcd(&etcd, callers).await));
    }
    for (name, f) in results {
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
