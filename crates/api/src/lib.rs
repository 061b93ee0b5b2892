//! vnet's HTTP API: Neutron v2.0 (networks, subnets, ports, security groups and
//! rules) over the in-memory cloud, made durable through the store.
//! The only crate that knows Neutron's JSON shapes and HTTP status codes; it
//! holds no domain rule of its own (those live in `model`).

mod auth;
mod binding;
mod commit;
mod error;
mod fabric;
mod hosts;
mod keystone;
pub mod listen;
mod neutron;
mod packet_trace;
mod replica;
mod state;
mod token_cache;
mod vnet_v1;

use std::future::Future;
use std::sync::Arc;

pub use error::ApiError;
pub use keystone::{Keystone, KeystoneConfig, KeystoneError};
/// For the fuzz targets in `fuzz/` only.
#[doc(hidden)]
pub use neutron::fuzzing;
pub use state::{App, LoadError};

use model::CloudConfig;
use store::Store;

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Project of requests that carry no `X-Project-Id` (they act as its admin).
    pub default_project: String,
    pub cloud: CloudConfig,
    pub auth: AuthConfig,
    /// When set, `/vnet/v1/hosts` (the agents' API) answers only requests
    /// carrying it in `X-Vnet-Agent-Token`.
    pub agent_token: Option<String>,
    /// The URL other replicas reach this one at (they forward writes to it
    /// while it leads).
    pub advertise: String,
}

/// Who vouches for callers.
#[derive(Clone, Debug)]
pub enum AuthConfig {
    /// Callers name their own project and roles (development only).
    NoAuth,
    /// Callers present Keystone tokens (`X-Auth-Token`).
    Keystone(KeystoneConfig),
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("serving HTTP failed")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Keystone(#[from] KeystoneError),
    #[error("keystone mode needs an agent token: the agents' API would be open")]
    AgentTokenRequired,
}

/// The whole API over `app` (Neutron v2.0 and /vnet/v1), for serving or for
/// in-process tests.
pub fn router(app: Arc<App>, agent_token: Option<&str>) -> axum::Router {
    neutron::router(app.clone())
        .merge(vnet_v1::tenant_router(app.clone()))
        .layer(axum::middleware::from_fn(auth::identity_headers))
        .merge(vnet_v1::agent_router(app.clone(), agent_token))
        .layer(axum::middleware::from_fn(error::neutron_shaped))
        .layer(axum::middleware::from_fn_with_state(app, replica::route))
}

/// The API with the tenants' part (Neutron and `/vnet/v1/trace`) behind
/// Keystone. The agents' part carries no Keystone token: it answers only
/// requests with the agent token.
pub fn router_with_keystone(
    app: Arc<App>,
    keystone: Arc<Keystone>,
    agent_token: &str,
) -> axum::Router {
    neutron::router(app.clone())
        .merge(vnet_v1::tenant_router(app.clone()))
        .layer(axum::middleware::from_fn(auth::identity_headers))
        .layer(axum::middleware::from_fn_with_state(
            keystone,
            auth::keystone,
        ))
        .merge(vnet_v1::agent_router(app.clone(), Some(agent_token)))
        .layer(axum::middleware::from_fn(error::neutron_shaped))
        .layer(axum::middleware::from_fn_with_state(app, replica::route))
}

/// How long a stopping server waits for open requests to finish.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Load the cloud from `store` and serve the API on every listener until
/// `shutdown` resolves. A store that fails makes a leading replica step down,
/// not stop (see `replica`).
/// Stopping ends the agents' state streams, never marks hosts dead, and
/// takes at most [`SHUTDOWN_GRACE`] once the listeners close.
pub async fn serve(
    listeners: Vec<tokio::net::TcpListener>,
    store: Arc<dyn Store>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let keystone = match config.auth {
        AuthConfig::NoAuth => None,
        AuthConfig::Keystone(k) => Some(Keystone::new(k)?),
    };
    let app = App::load(
        store,
        config.cloud,
        config.default_project,
        config.advertise,
    )
    .await?;
    app.start_background();
    if let Some(k) = &keystone {
        // Serving goes on when Keystone is down (requests then get 503), but
        // a wrong password is best reported at once.
        if let Err(e) = k.warm_up().await {
            tracing::error!(error = %e, "keystone: no service token yet");
        }
    }
    let agent_token = config.agent_token.as_deref();
    let api = match (&keystone, agent_token) {
        (Some(k), Some(token)) => router_with_keystone(app.clone(), k.clone(), token),
        (Some(_), None) => return Err(ServeError::AgentTokenRequired),
        (None, token) => router(app.clone(), token),
    };
    let mut stop_rx = app.stopping.subscribe();
    let stopper = app.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("vnet server stopping: ending the agents' state streams");
        // Before the listeners close: the reaper must not take the agents'
        // silence from here on for their death.
        stopper.stopping.send_replace(true);
    });
    let limits = listen::Limits::default().within_descriptors(listen::raise_descriptor_limit());
    tracing::info!(?limits, "connection limits");
    let servers = listeners
        .into_iter()
        .map(|listener| listen::serve(listener, api.clone(), limits.clone(), stop_rx.clone()));
    let serving = futures::future::join_all(servers);
    // Graceful, but bounded: a client that keeps a request open does not
    // keep the server from stopping. Every answered write is durable already.
    let bounded = async {
        let _ = stop_rx.wait_for(|s| *s).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        results = serving => {
            for result in results {
                result?;
            }
        }
        () = bounded => {
            tracing::warn!(
                grace = ?SHUTDOWN_GRACE,
                "requests still open after the shutdown grace period; stopping anyway"
            );
        }
    }
    if let Some(k) = &keystone {
        k.log_counters();
    }
    Ok(())
}
