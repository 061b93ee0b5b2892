//! What the API's in-process tests share: a fresh server state on a real
//! embedded store in a directory of the test's own.

use std::path::Path;
use std::sync::Arc;

use api::App;

/// An `App` on a new embedded store in `dir`, as `vnet server` loads it
/// (default project `admin`); background tasks not started.
pub async fn app(dir: &Path) -> Arc<App> {
    let store = store::embedded::EmbeddedStore::open(dir).unwrap();
    App::load(
        Arc::new(store),
        model::CloudConfig::default(),
        "admin".into(),
        String::new(),
    )
    .await
    .unwrap()
}
