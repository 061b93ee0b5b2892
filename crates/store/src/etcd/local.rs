//! A throw-away etcd member on loopback, for tests, benchmarks and trying vnet
//! out: its own free ports, its data in a directory the caller owns, killed when
//! dropped (a panicking test included). It must not be used for anything that
//! should outlive the process that started it.

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

    /// The transaction limits every local member is started with.
    pub const LIMITS: crate::TxnLimits = crate::TxnLimits {
        max_ops: MAX_TXN_OPS,
        max_bytes: MAX_REQUEST_BYTES,
    };

    /// The transaction limits this member was started with.
    pub fn limits(&self) -> crate::TxnLimits {
        Self::LIMITS
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
        let [client_port, peer_port] = free_ports().map_err(|source| LocalEtcdError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let member = Member {
            name: "vnet".into(),
            dir: dir.to_owned(),
            client_port,
            peer_port,
        };
        let initial_cluster = member.initial_cluster_entry();
        member.spawn(&initial_cluster, keep_data)
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

/// Where one member of a local cluster lives.
#[derive(Clone, Debug)]
struct Member {
    name: String,
    /// Its data (`dir/etcd`) and log (`dir/etcd.log`).
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

impl Member {
    fn initial_cluster_entry(&self) -> String {
        format!("{}=http://127.0.0.1:{}", self.name, self.peer_port)
    }

    fn spawn(&self, initial_cluster: &str, keep_data: bool) -> Result<LocalEtcd, LocalEtcdError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| LocalEtcdError::Io { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let data_dir = self.dir.join("etcd");
        let log = self.dir.join("etcd.log");
        // A member that failed to start may have left a half-made data dir.
        if !keep_data && data_dir.exists() {
            std::fs::remove_dir_all(&data_dir).map_err(io(&data_dir))?;
        }
        let client_url = format!("http://127.0.0.1:{}", self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(&log))?;
        let log_err = log_file.try_clone().map_err(io(&log))?;
        let binary = etcd_binary();
        let child = Command::new(&binary)
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={initial_cluster}"))
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
}

/// A throw-away cluster of etcd members on loopback (fault tests: a member
/// killed, restarted, quorum lost). Members are killed on drop.
pub struct LocalCluster {
    members: Vec<Member>,
    running: Vec<Option<LocalEtcd>>,
    initial_cluster: String,
}

impl LocalCluster {
    /// Starts `size` members, member `i` in `dir/m<i>`, and waits until each
    /// serves (a read needs a quorum: the cluster has formed).
    pub async fn start(dir: &Path, size: usize) -> Result<Self, LocalEtcdError> {
        let io = |source| LocalEtcdError::Io {
            path: dir.display().to_string(),
            source,
        };
        // All ports held at once, so that they differ.
        let holders = (0..2 * size)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?;
        let ports = holders
            .iter()
            .map(|h| h.local_addr().map(|a| a.port()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?;
        drop(holders);
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                dir: dir.join(format!("m{i}")),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(Member::initial_cluster_entry)
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = LocalCluster {
            running: Vec::new(),
            members,
            initial_cluster,
        };
        for member in &cluster.members {
            cluster
                .running
                .push(Some(member.spawn(&cluster.initial_cluster, false)?));
        }
        for etcd in cluster.running.iter_mut().flatten() {
            etcd.wait_ready(Duration::from_secs(30)).await?;
        }
        Ok(cluster)
    }

    /// The running members' process ids (for their CPU time).
    pub fn pids(&self) -> Vec<u32> {
        self.running.iter().flatten().map(LocalEtcd::pid).collect()
    }

    /// Every member's client URL, running or not.
    pub fn client_urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// Kills member `i` (SIGKILL), keeping its data.
    pub fn kill(&mut self, i: usize) {
        if let Some(slot) = self.running.get_mut(i) {
            drop(slot.take());
        }
    }

    /// Starts member `i` again on its data and ports. It rejoins the
    /// others; it is not waited for (alone it cannot serve).
    pub fn restart(&mut self, i: usize) -> Result<(), LocalEtcdError> {
        let Some(member) = self.members.get(i) else {
            return Ok(());
        };
        let etcd = member.spawn(&self.initial_cluster, true)?;
        self.running[i] = Some(etcd);
        Ok(())
    }

    /// The member that leads now, as the running members say.
    pub async fn leader(&self) -> Option<usize> {
        // (member, its id, the leader's id it knows) of each that answers.
        let mut statuses = Vec::new();
        for (i, etcd) in self.running.iter().enumerate() {
            let Some(etcd) = etcd else { continue };
            let Ok(mut client) = etcd_client::Client::connect([etcd.client_url()], None).await
            else {
                continue;
            };
            if let Ok(status) = client.status().await {
                let id = status.header().map(|h| h.member_id());
                statuses.push((i, id, status.leader()));
            }
        }
        let leader = statuses.iter().map(|(_, _, l)| *l).find(|l| *l != 0)?;
        statuses
            .iter()
            .find(|(_, id, _)| *id == Some(leader))
            .map(|(i, _, _)| *i)
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
