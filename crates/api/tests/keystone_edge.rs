//! The Keystone layer's answers that need no Keystone at all: version
//! discovery is open, a missing token is a 401 with keystonemiddleware's
//! shape, and an unreachable Keystone is a 503 (here a closed loopback port,
//! so nothing answers). Everything else runs against the real Keystone in
//! tests/compat/test_keystone.py.

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

mod common;

use std::time::Duration;

use api::{Keystone, KeystoneConfig};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

async fn router(dir: &tempfile::TempDir) -> axum::Router {
    let app = common::app(dir.path()).await;
    // Port 1 on loopback: nothing listens there, so connecting is refused.
    let keystone = Keystone::new(KeystoneConfig {
        url: "http://127.0.0.1:1/v3".into(),
        user: "vnet".into(),
        password: "secret".into(),
        project: "service".into(),
        user_domain: "Default".into(),
        project_domain: "Default".into(),
        cache_ttl: Duration::from_secs(300),
        cache_capacity: 100,
    })
    .unwrap();
    api::router_with_keystone(app, keystone, AGENT_TOKEN)
}

const AGENT_TOKEN: &str = "agents-only";

async fn get(
    router: &axum::Router,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let mut req = Request::builder().uri(path);
    if let Some(t) = token {
        req = req.header("x-auth-token", t);
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let www = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        www,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn version_discovery_needs_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let (status, _, body) = get(&router(&dir).await, "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["versions"][0]["id"], "v2.0");
}

#[tokio::test]
async fn no_token_is_401_with_where_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let (status, www, body) = get(&router(&dir).await, "/v2.0/networks", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(www.as_deref(), Some(r#"Keystone uri="http://127.0.0.1:1""#));
    assert_eq!(body["error"]["code"], 401);
    assert_eq!(body["error"]["title"], "Unauthorized");
}

#[tokio::test]
async fn unreachable_keystone_is_503_not_401() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(&dir).await;
    for _ in 0..2 {
        // Twice: the failure is not cached as a verdict on the token.
        let (status, www, body) = get(&router, "/v2.0/networks", Some("tok")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(www, None);
        assert_eq!(body["NeutronError"]["type"], "ServiceUnavailable");
    }
}

#[tokio::test]
async fn tenant_paths_need_a_token_and_agent_paths_the_agent_token() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(&dir).await;
    // The trace is a tenant call: behind Keystone like Neutron.
    let req = Request::builder()
        .method("POST")
        .uri("/vnet/v1/trace")
        .body(Body::from("{}"))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // The agents' API: refused without the agent token, a Keystone token
    // does not stand in for it, and with it the host list answers.
    for token in [None, Some("tok")] {
        let (status, _, _) = get(&router, "/vnet/v1/hosts", token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let req = Request::builder()
        .uri("/vnet/v1/hosts")
        .header("x-vnet-agent-token", AGENT_TOKEN)
        .body(Body::empty())
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
