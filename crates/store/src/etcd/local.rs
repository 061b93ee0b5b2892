//! A throw-away etcd member on loopback, for tests, benchmarks and trying vnet
//! out: its own free ports, its data in a directory the caller owns, killed when
//! dropped (a panicking test included). It must not be used for anything that
//! should outlive the process that started it.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary: `$VNET_ETCD_BIN`, else `etcd` on the PATH (Debian's
/// `etcd-server` puts it at /usr/bin/etcd).
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("VNET_ETCD_BIN").map_or_else(|| PathBuf::from("etcd"), PathBuf::from)
}

/// Most operations in one transaction the local member accepts: vnet's committer
/// merges many API writes into one transaction, far past etcd's default of 128.
pub const MAX_TXN_OPS: usize = 16384;

/// Largest request the local member accepts (etcd's default is 1.5 MiB).
pub const MAX_REQUEST_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LocalEtcdError {
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("etcd did not become ready within {waited:?}; its log ({log}) ends with:\n{tail}")]
    NotReady {
        waited: Duration,
        log: String,
        tail: String,
    },
}

/// One running etcd member; killed (and waited for) on drop.
pub struct LocalEtcd {
    child: Child,
    client_url: String,
    data_dir: PathBuf,
    log: PathBuf,
}

impl LocalEtcd {
    /// Starts a one-member cluster keeping its data in `dir/etcd` and its log in
    /// `dir/etcd.log`, and waits until it serves requests. Ports are picked free;
    /// if another process takes one first, it tries again with new ones.
    pub async fn start(dir: &Path) -> Result<Self, LocalEtcdError> {
        Self::start_with(dir, false).await
    }

    /// Starts a member again on the data `dir` kept from an earlier [`start`]
    /// (after it was dropped, i.e. killed), on new ports.
    ///
    /// [`start`]: LocalEtcd::start
    pub async fn restart(dir: &Path) -> Result<Self, LocalEtcdError> {
        Self::start_with(dir, true).await
    }

    async fn start_with(dir: &Path, keep_data: bool) -> Result<Self, LocalEtcdError> {
        let mut last = None;
        for _ in 0..3 {
            let mut etcd = Self::spawn(dir, keep_data)?;
            match etcd.wait_ready(Duration::from_secs(30)).await {
                Ok(()) => return Ok(etcd),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| LocalEtcdError::NotReady {
            waited: Duration::ZERO,
            log: String::new(),
            tail: String::new(),
        }))
    }

    /// The URL clients connect to.
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// The transaction limits this member was started with.
    pub fn limits(&self) -> crate::TxnLimits {
        crate::TxnLimits {
            max_ops: MAX_TXN_OPS,
            max_bytes: MAX_REQUEST_BYTES,
        }
    }

    /// The member's data directory (its write-ahead log and database).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The process id, for measuring the member's CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn spawn(dir: &Path, keep_data: bool) -> Result<Self, LocalEtcdError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| LocalEtcdError::Io { path, source }
        };
        let data_dir = dir.join("etcd");
        let log = dir.join("etcd.log");
        // A member that failed to start may have left a half-made data dir.
        if !keep_data && data_dir.exists() {
            std::fs::remove_dir_all(&data_dir).map_err(io(&data_dir))?;
        }
        let [client_port, peer_port] = free_ports().map_err(io(dir))?;
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log_file = File::create(&log).map_err(io(&log))?;
        let log_err = log_file.try_clone().map_err(io(&log))?;
        let binary = etcd_binary();
        let child = Command::new(&binary)
            .arg("--name=vnet")
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=vnet={peer_url}"))
            .arg("--initial-cluster-state=new")
            .arg(format!("--max-txn-ops={MAX_TXN_OPS}"))
            .arg(format!("--max-request-bytes={MAX_REQUEST_BYTES}"))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(|source| LocalEtcdError::Spawn {
                binary: binary.display().to_string(),
                source,
            })?;
        Ok(LocalEtcd {
            child,
            client_url,
            data_dir,
            log,
        })
    }

    /// Waits until the member answers a read: the fact that it serves, not a delay.
    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), LocalEtcdError> {
        let deadline = Instant::now() + timeout;
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(1));
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if let Ok(mut client) =
                etcd_client::Client::connect([&self.client_url], Some(options.clone())).await
                && client.get("health", None).await.is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(LocalEtcdError::NotReady {
            waited: timeout,
            log: self.log.display().to_string(),
            tail: log_tail(&self.log),
        })
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two ports free on loopback right now (held together so they differ).
fn free_ports() -> std::io::Result<[u16; 2]> {
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok([a.local_addr()?.port(), b.local_addr()?.port()])
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
