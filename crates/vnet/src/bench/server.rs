//! The server under test: this same binary run as `vnet server` in a child
//! process, on a free loopback port with a fresh data dir, on the embedded
//! store or on an etcd member of its own. Dropping it kills the child (and the
//! etcd member) and removes the directory, on success and on error alike.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use store::etcd::local::LocalEtcd;

use super::client::Conn;
use super::stats::{self, Usage};
use crate::BoxError;

/// Polls of `GET /` while the server starts, and the pause between them.
const READY_POLLS: u32 = 200;
const READY_PAUSE: Duration = Duration::from_millis(25);

/// Which store the server under test runs on.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchStore {
    Embedded,
    /// One etcd member on loopback, started for the run (Debian's etcd-server).
    Etcd,
}

impl BenchStore {
    pub fn name(self) -> &'static str {
        match self {
            BenchStore::Embedded => "embedded",
            BenchStore::Etcd => "etcd",
        }
    }
}

pub struct Server {
    child: Child,
    /// The `vnet` binary the child runs.
    exe: PathBuf,
    /// The etcd member the server stores in (with `BenchStore::Etcd`).
    etcd: Option<LocalEtcd>,
    pub addr: SocketAddr,
    /// Holds `data/` (the store), `server.log` and the fsync probe file.
    root: PathBuf,
    /// Clock ticks per second of /proc's CPU times.
    clk_tck: f64,
}

impl Server {
    /// Start the child and wait until it answers `GET /`.
    pub async fn start(store: BenchStore) -> Result<Server, BoxError> {
        Server::start_binary(store, &std::env::current_exe()?).await
    }

    /// The same, the child run from `exe` (another build of vnet).
    pub async fn start_binary(store: BenchStore, exe: &Path) -> Result<Server, BoxError> {
        let root = fresh_dir()?;
        let etcd = match store {
            BenchStore::Embedded => None,
            BenchStore::Etcd => match LocalEtcd::start(&root).await {
                Ok(etcd) => Some(etcd),
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&root);
                    return Err(format!("cannot start etcd for the bench: {e}").into());
                }
            },
        };
        let addr = free_port()?;
        let child = match spawn(exe, &root, addr, etcd.as_ref()) {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&root);
                return Err(e);
            }
        };
        let mut server = Server {
            child,
            exe: exe.to_owned(),
            etcd,
            addr,
            root,
            clk_tck: clk_tck(),
        };
        server.wait_ready().await?;
        Ok(server)
    }

    /// kill -9 the child, start it again on the same store and address, and
    /// wait until it answers.
    pub async fn restart(&mut self) -> Result<(), BoxError> {
        self.child.kill()?;
        self.child.wait()?;
        self.child = spawn(&self.exe, &self.root, self.addr, self.etcd.as_ref())?;
        self.wait_ready().await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The etcd member's client URL and pid, when the server runs on etcd.
    pub fn etcd(&self) -> Option<(&str, u32)> {
        self.etcd.as_ref().map(|e| (e.client_url(), e.pid()))
    }

    /// The etcd member's CPU time and RSS now (`None` on the embedded store).
    pub fn etcd_usage(&self) -> Result<Option<Usage>, BoxError> {
        self.etcd
            .as_ref()
            .map(|e| stats::usage(e.pid(), self.clk_tck))
            .transpose()
    }

    pub fn clk_tck(&self) -> f64 {
        self.clk_tck
    }

    /// The data dir's parent: a file here is on the store's filesystem.
    pub fn scratch(&self) -> &Path {
        &self.root
    }

    /// The child's CPU time and RSS now; an error if it has exited.
    pub fn usage(&mut self) -> Result<Usage, BoxError> {
        self.check_alive()?;
        stats::usage(self.pid(), self.clk_tck)
    }

    /// This process's (the bench client's) CPU time and RSS now.
    pub fn client_usage(&self) -> Result<Usage, BoxError> {
        stats::usage(std::process::id(), self.clk_tck)
    }

    async fn wait_ready(&mut self) -> Result<(), BoxError> {
        for _ in 0..READY_POLLS {
            self.check_alive()?;
            if let Ok(mut conn) = Conn::connect(self.addr).await
                && conn.get("/").await.is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(READY_PAUSE).await;
        }
        Err(format!(
            "the server did not answer GET / within {:?}; its log:\n{}",
            READY_PAUSE * READY_POLLS,
            self.log_tail()
        )
        .into())
    }

    fn check_alive(&mut self) -> Result<(), BoxError> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(format!(
                "the server exited ({status}); its log:\n{}",
                self.log_tail()
            )
            .into()),
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(self.etcd.take());
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// `exe server` on `root/data` or on `etcd`, logging to `root/server.log`
/// (appended).
fn spawn(
    exe: &Path,
    root: &Path,
    addr: SocketAddr,
    etcd: Option<&LocalEtcd>,
) -> Result<Child, BoxError> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(root.join("server.log"))?;
    let mut command = Command::new(exe);
    command
        .arg("server")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(root.join("data"));
    if let Some(etcd) = etcd {
        let limits = etcd.limits();
        command
            .args(["--store", "etcd", "--etcd-endpoints", etcd.client_url()])
            .arg(format!("--etcd-max-txn-ops={}", limits.max_ops))
            .arg(format!("--etcd-max-request-bytes={}", limits.max_bytes));
    }
    command
        .args(crate::lab::unlimited_quotas())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start the server: {e}").into())
}

/// A new, empty directory under the system's temp dir.
fn fresh_dir() -> Result<PathBuf, BoxError> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("vnet-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// A loopback port free right now (the kernel's pick; freed for the child).
fn free_port() -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?)
}

/// `getconf CLK_TCK`, or Linux's usual 100 when getconf cannot say.
pub(super) fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}
