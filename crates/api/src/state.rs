//! The server's shared state: the in-memory cloud behind one lock, and the
//! write path that keeps memory and store in the same order.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use model::{Caller, Cloud, CloudConfig, Kind, ModelError, Resource, Timestamp};
use store::{KeyRange, Store, StoreError};
use tokio::sync::watch;

use crate::commit::{CommitError, Committer};
use crate::error::ApiError;
use crate::replica::Replica;

pub struct App {
    pub(crate) cloud: RwLock<Cloud>,
    pub hosts: crate::hosts::Hosts,
    pub fabric: Arc<crate::fabric::Fabric>,
    pub store: Arc<dyn Store>,
    pub(crate) committer: Committer,
    pub default_project: String,
    pub failed: watch::Receiver<Option<CommitError>>,
    /// True once the server is stopping: state streams end, and the reaper
    /// no longer takes silent agents for dead (they are silent because we
    /// stopped listening, and their ports are as wired as they were).
    pub stopping: watch::Sender<bool>,
    pub replica: Replica,
    /// The allocator settings, for a follower that reloads.
    config: CloudConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("writing the default security group rules failed: {0}")]
    Seed(String),
    #[error("reading the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("catching up with the store before leading failed: {0}")]
    CatchUp(#[source] ApiError),
    #[error("bringing the stored records up to date failed: {0}")]
    Upgrade(#[source] ApiError),
    #[error("stored record {key} is unreadable")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The store key that says the cloud has had its default security group
/// rules (see `App::seed_default_rules`).
const DEFAULT_RULES_SEEDED: &str = "meta/default_security_group_rules_seeded";

/// Model changes as store writes. Our resource types always serialise (string
/// keys, no non-finite floats), so a failure here is a bug worth stopping for.
fn encode(changes: Vec<model::Change>) -> Vec<crate::commit::Write> {
    changes
        .into_iter()
        .map(|c| {
            let value = c
                .value
                .map(|r| serde_json::to_vec(&r).expect("model resources serialise to JSON"));
            (c.key, value)
        })
        .collect()
}

/// Wait for a submitted write to be durable; its revision is noted for the
/// answer (a follower that forwarded the request waits until it has it).
async fn wait_durable(
    durable: tokio::sync::oneshot::Receiver<Result<store::Revision, CommitError>>,
) -> Result<(), ApiError> {
    let revision = durable
        .await
        .map_err(|_| CommitError::Stopped)
        .and_then(|r| r)
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    crate::replica::note_commit(revision);
    Ok(())
}

pub fn now() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Everything the store holds, read at one revision.
pub(crate) struct Loaded {
    pub(crate) cloud: Cloud,
    hosts: Vec<crate::hosts::StoredHost>,
    revision: store::Revision,
}

/// The store's records, each parsed once: the model's resources and the
/// compiler's inputs (in key order, as a rebuild reads them) come from the
/// same parse.
struct Records {
    resources: Vec<Resource>,
    hosts: Vec<crate::hosts::StoredHost>,
    inputs: Vec<compiler::Input>,
    revision: store::Revision,
}

/// With `compiled`, the compiler's inputs too (a follower's reload keeps
/// its fabric and has no use for them).
async fn read_records(store: &dyn Store, compiled: bool) -> Result<Records, LoadError> {
    let started = Instant::now();
    // One range: a consistent snapshot of everything at one revision.
    let all = store.range(KeyRange::Prefix(String::new())).await?;
    let read = started.elapsed();
    let mut records = Records {
        resources: Vec::with_capacity(all.kvs.len()),
        hosts: Vec::new(),
        inputs: Vec::with_capacity(if compiled { all.kvs.len() } else { 0 }),
        revision: all.revision,
    };
    let count = all.kvs.len();
    for kv in all.kvs {
        let corrupt = |source| LoadError::Corrupt {
            key: kv.key.clone(),
            source,
        };
        if kv.key.starts_with(crate::hosts::KEY_PREFIX) {
            let host: crate::hosts::StoredHost =
                serde_json::from_slice(&kv.value).map_err(corrupt)?;
            if compiled {
                records.inputs.push(host.clone().input());
            }
            records.hosts.push(host);
        } else if Kind::of_key(&kv.key).is_some() {
            let resource = serde_json::from_slice::<Resource>(&kv.value).map_err(corrupt)?;
            if compiled {
                records
                    .inputs
                    .extend(compiler::Input::put(resource.clone()));
            }
            records.resources.push(resource);
        }
    }
    tracing::info!(
        records = count,
        resources = records.resources.len(),
        hosts = records.hosts.len(),
        revision = records.revision,
        read_ms = read.as_millis(),
        decode_ms = (started.elapsed() - read).as_millis(),
        "read the store"
    );
    Ok(records)
}

pub(crate) async fn read_all(store: &dyn Store, config: CloudConfig) -> Result<Loaded, LoadError> {
    let records = read_records(store, false).await?;
    Ok(Loaded {
        cloud: load_cloud(config, records.resources),
        hosts: records.hosts,
        revision: records.revision,
    })
}

fn load_cloud(config: CloudConfig, resources: Vec<Resource>) -> Cloud {
    let started = Instant::now();
    let count = resources.len();
    let cloud = Cloud::load(config, resources);
    tracing::info!(
        resources = count,
        ms = started.elapsed().as_millis(),
        "built the model and its indexes"
    );
    cloud
}

/// The model and the compiled fabric of the same records. They share
/// nothing, so the fabric compiles on a thread of its own meanwhile: at
/// 100,000 ports each takes about as long as the other.
fn build(config: CloudConfig, records: Records) -> (Cloud, crate::fabric::Fabric) {
    let Records {
        resources,
        inputs,
        revision,
        ..
    } = records;
    std::thread::scope(|scope| {
        let fabric = scope.spawn(move || {
            let started = Instant::now();
            let fabric = crate::fabric::Fabric::new(inputs, revision);
            tracing::info!(
                ms = started.elapsed().as_millis(),
                "compiled every host's state"
            );
            fabric
        });
        let cloud = load_cloud(config, resources);
        let fabric = fabric
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (cloud, fabric)
    })
}

impl App {
    /// Load every resource from the store, start the committer and try
    /// once to lead (on the embedded store, always won). A replica that
    /// leads has caught up and written what a new cloud needs; one that
    /// does not follows the leader named `advertise` in the claim, and
    /// [`App::start_background`] keeps trying.
    pub async fn load(
        store: Arc<dyn Store>,
        config: CloudConfig,
        default_project: String,
        advertise: String,
    ) -> Result<Arc<App>, LoadError> {
        let started = Instant::now();
        let mut records = read_records(store.as_ref(), true).await?;
        let (hosts, revision) = (std::mem::take(&mut records.hosts), records.revision);
        let (cloud, fabric) = build(config.clone(), records);
        let (failed_tx, failed) = watch::channel(None);
        let app = Arc::new(App {
            cloud: RwLock::new(cloud),
            hosts: crate::hosts::Hosts::load(hosts, Instant::now()),
            fabric: Arc::new(fabric),
            store: store.clone(),
            committer: Committer::spawn(store, failed_tx),
            default_project,
            failed,
            stopping: watch::Sender::new(false),
            replica: Replica::new(advertise, revision),
            config,
        });
        tokio::spawn(crate::replica::follow(Arc::downgrade(&app), Some(revision)));
        crate::replica::try_to_lead(&app).await?;
        tracing::info!(
            ms = started.elapsed().as_millis(),
            leader = app.replica.is_leader(),
            "loaded: the cloud and every host's state are ready"
        );
        Ok(app)
    }

    /// A follower whose watch broke (or a leader that stepped down) reads
    /// the store again; the revision it
    /// is at, or `None` once this replica leads (its cloud is then its own).
    pub(crate) async fn reload(&self) -> Result<Option<store::Revision>, StoreError> {
        let loaded = match read_all(self.store.as_ref(), self.config.clone()).await {
            Ok(loaded) => loaded,
            Err(LoadError::Store(e)) => return Err(e),
            Err(e) => return Err(StoreError::Backend(Box::new(e))),
        };
        let mut cloud = self.cloud.write().unwrap_or_else(PoisonError::into_inner);
        if self.replica.is_leader() {
            return Ok(None);
        }
        *cloud = loaded.cloud;
        for host in loaded.hosts {
            let name = host.registration.name.clone();
            self.hosts
                .replicate(&name, Some(host), std::time::Instant::now());
        }
        self.replica.reloaded(loaded.revision);
        Ok(Some(loaded.revision))
    }

    /// What a replica does once it leads, before it takes requests: records
    /// an older vnet wrote (sharing as flags) become what this one keeps
    /// (RBAC policies), and a new cloud gets its default rules.
    pub(crate) async fn lead(&self) -> Result<(), LoadError> {
        let now = now();
        self.write(|c| c.upgrade(now))
            .await
            .map_err(LoadError::Upgrade)?;
        let seeded = self
            .store
            .range(KeyRange::Key(DEFAULT_RULES_SEEDED.into()))
            .await?;
        if seeded.kvs.is_empty() {
            self.seed_default_rules().await?;
        }
        Ok(())
    }

    /// A new cloud starts with Neutron's templates of new groups' rules,
    /// once: the marker says it was done, so templates an admin deleted stay
    /// deleted. A crash between the two writes finds the templates there and
    /// only writes the marker.
    async fn seed_default_rules(&self) -> Result<(), LoadError> {
        let seed = |e: ApiError| LoadError::Seed(e.to_string());
        if self.read().default_rules().next().is_none() {
            self.write(|cloud| cloud.seed_default_rules(now()))
                .await
                .map_err(seed)?;
        }
        self.write_raw(vec![(DEFAULT_RULES_SEEDED.to_owned(), Some(b"1".to_vec()))])
            .await
            .map_err(seed)
    }

    /// Start what runs beside the requests: the compiler following the store,
    /// and the reaper of hosts whose agents went silent.
    pub fn start_background(self: &Arc<Self>) {
        if !self.replica.is_leader() {
            tokio::spawn(crate::replica::campaign(Arc::downgrade(self)));
        }
        tokio::spawn(crate::vnet_v1::reap_dead_hosts(Arc::downgrade(self)));
        tokio::spawn(crate::fabric::follow(
            self.fabric.clone(),
            self.store.clone(),
        ));
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Cloud> {
        self.cloud.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Apply `op` to the cloud atomically, then wait until its changes are
    /// durable. `if_match` checks a resource's revision in the same step.
    pub async fn write<T>(
        &self,
        op: impl FnOnce(&mut Cloud) -> Result<T, ModelError>,
    ) -> Result<T, ApiError> {
        if let Some(e) = self.failed.borrow().as_ref() {
            return Err(ApiError::unavailable(e.to_string()));
        }
        // A write the store could not take in one transaction is refused here,
        // undone, rather than failing the store (which stops the server).
        // One op of every transaction is the commit marker.
        let max_ops = self.store.txn_limits().max_ops.saturating_sub(1);
        let (value, durable) = {
            let mut cloud = self.cloud.write().unwrap_or_else(PoisonError::into_inner);
            // Under the lock: a leader steps down under it too.
            if !self.replica.is_leader() {
                return Err(self.replica.refuse_write());
            }
            let (value, changes) = cloud.apply(|c| {
                let value = op(c)?;
                match c.pending_changes() {
                    n if n > max_ops => Err(ModelError::InvalidInput(format!(
                        "this request writes {n} records, more than the store takes \
                         at once ({max_ops}): split it"
                    ))),
                    _ => Ok(value),
                }
            })?;
            // Submitted under the lock, so the store sees changes in apply order.
            let durable = (!changes.is_empty()).then(|| self.committer.submit(encode(changes)));
            (value, durable)
        };
        if let Some(durable) = durable {
            wait_durable(durable).await?;
        }
        Ok(value)
    }

    /// Write keys outside the cloud (hosts) through the same ordered, durable path.
    pub async fn write_raw(&self, writes: Vec<crate::commit::Write>) -> Result<(), ApiError> {
        let durable = {
            // Taken so these writes are ordered with the cloud's.
            let _cloud = self.cloud.write().unwrap_or_else(PoisonError::into_inner);
            if !self.replica.is_leader() {
                return Err(self.replica.refuse_write());
            }
            self.committer.submit(writes)
        };
        wait_durable(durable).await
    }

    /// Neutron gives each project its `default` security group on first use.
    pub async fn ensure_project(&self, caller: &Caller) -> Result<(), ApiError> {
        if self.read().default_group_of(&caller.project_id).is_some() {
            return Ok(());
        }
        let now = now();
        self.write(|c| {
            c.ensure_default_group(&caller.project_id, now);
            Ok(())
        })
        .await
    }
}
