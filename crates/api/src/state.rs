//! The server's shared state: the in-memory cloud behind one lock, and the
//! write path that keeps memory and store in the same order.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use model::{Caller, Cloud, CloudConfig, Kind, ModelError, Resource, Timestamp};
use store::{KeyRange, Store, StoreError};
use tokio::sync::watch;

use crate::commit::{CommitError, Committer};
use crate::error::ApiError;

pub struct App {
    cloud: RwLock<Cloud>,
    pub hosts: crate::hosts::Hosts,
    pub fabric: Arc<crate::fabric::Fabric>,
    pub store: Arc<dyn Store>,
    committer: Committer,
    pub default_project: String,
    pub failed: watch::Receiver<Option<CommitError>>,
    /// True once the server is stopping: state streams end, and the reaper
    /// no longer takes silent agents for dead (they are silent because we
    /// stopped listening, and their ports are as wired as they were).
    pub stopping: watch::Sender<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("writing the default security group rules failed: {0}")]
    Seed(String),
    #[error("reading the store failed")]
    Store(#[from] StoreError),
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

pub fn now() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl App {
    /// Load every resource from the store and start the committer.
    pub async fn load(
        store: Arc<dyn Store>,
        config: CloudConfig,
        default_project: String,
    ) -> Result<Arc<App>, LoadError> {
        // One range: a consistent snapshot of everything at one revision.
        let all = store.range(KeyRange::Prefix(String::new())).await?;
        let mut resources = Vec::new();
        let mut hosts = Vec::new();
        let mut inputs = Vec::new();
        let seeded = all.kvs.iter().any(|kv| kv.key == DEFAULT_RULES_SEEDED);
        for kv in all.kvs {
            if let Some(input) =
                crate::fabric::input_of(&kv.key, Some(&kv.value)).map_err(|source| {
                    LoadError::Corrupt {
                        key: kv.key.clone(),
                        source,
                    }
                })?
            {
                inputs.push(input);
            }
            let corrupt = |source| LoadError::Corrupt {
                key: kv.key.clone(),
                source,
            };
            if kv.key.starts_with(crate::hosts::KEY_PREFIX) {
                hosts.push(serde_json::from_slice(&kv.value).map_err(corrupt)?);
            } else if Kind::ALL.iter().any(|k| kv.key.starts_with(k.key_prefix())) {
                resources.push(serde_json::from_slice::<Resource>(&kv.value).map_err(corrupt)?);
            }
        }
        tracing::info!(
            resources = resources.len(),
            "loaded the cloud from the store"
        );
        let (failed_tx, failed) = watch::channel(None);
        let app = Arc::new(App {
            cloud: RwLock::new(Cloud::load(config, resources)),
            hosts: crate::hosts::Hosts::load(hosts, std::time::Instant::now()),
            fabric: Arc::new(crate::fabric::Fabric::new(inputs, all.revision)),
            store: store.clone(),
            committer: Committer::spawn(store, failed_tx),
            default_project,
            failed,
            stopping: watch::Sender::new(false),
        });
        // Records an older vnet wrote (sharing as flags) become what this
        // one keeps (RBAC policies), written before any request is served.
        let now = now();
        app.write(|c| c.upgrade(now))
            .await
            .map_err(LoadError::Upgrade)?;
        if !seeded {
            app.seed_default_rules().await?;
        }
        Ok(app)
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
        let max_ops = self.store.txn_limits().max_ops;
        let (value, durable) = {
            let mut cloud = self.cloud.write().unwrap_or_else(PoisonError::into_inner);
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
            durable
                .await
                .map_err(|_| CommitError::Stopped)
                .and_then(|r| r)
                .map_err(|e| ApiError::unavailable(e.to_string()))?;
        }
        Ok(value)
    }

    /// Write keys outside the cloud (hosts) through the same ordered, durable path.
    pub async fn write_raw(&self, writes: Vec<crate::commit::Write>) -> Result<(), ApiError> {
        let durable = {
            // Taken so these writes are ordered with the cloud's.
            let _cloud = self.cloud.write().unwrap_or_else(PoisonError::into_inner);
            self.committer.submit(writes)
        };
        durable
            .await
            .map_err(|_| CommitError::Stopped)
            .and_then(|r| r)
            .map(|_| ())
            .map_err(|e| ApiError::unavailable(e.to_string()))
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
