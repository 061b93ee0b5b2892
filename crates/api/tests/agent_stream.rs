//! The agent protocol in-process: hosts register, ports bind, and a host's
//! state stream (snapshot, then deltas, resumable) carries exactly its view.

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

mod common;

use std::sync::Arc;
use std::time::Duration;

use api::App;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use compiler::protocol::{HostState, StreamMessage};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn call(app: &Arc<App>, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = api::router(app.clone(), None).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Read a host's stream into a HostState until `done` holds for it.
async fn follow_until(
    app: &Arc<App>,
    path: &str,
    mut state: HostState,
    done: impl Fn(&HostState) -> bool,
) -> (HostState, i64, Vec<StreamMessage>) {
    let req = Request::builder().uri(path).body(Body::empty()).unwrap();
    let resp = api::router(app.clone(), None).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut buffer = Vec::new();
    let mut seen = Vec::new();
    let mut revision = 0;
    let read = async {
        loop {
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let message: StreamMessage = serde_json::from_slice(&line[..end]).unwrap();
                match &message {
                    StreamMessage::Snapshot {
                        revision: r,
                        state: s,
                    } => {
                        state = s.clone();
                        revision = *r;
                    }
                    StreamMessage::Delta {
                        revision: r,
                        changes,
                    } => {
                        for c in changes.clone() {
                            state.apply(c);
                        }
                        revision = *r;
                    }
                    StreamMessage::Idle { revision: r } => revision = *r,
                }
                seen.push(message);
                if done(&state) {
                    return;
                }
            }
            let frame = body.frame().await.unwrap().unwrap();
            buffer.extend_from_slice(frame.data_ref().unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("stream reached the expected state");
    (state, revision, seen)
}

#[tokio::test]
async fn each_host_streams_its_own_view_and_resumes_from_a_revision() {
    let dir = tempfile::tempdir().unwrap();
    let app = common::app(dir.path()).await;
    app.start_background();
    for (host, ip) in [("h1", "192.0.2.1"), ("h2", "192.0.2.2")] {
        let reg = json!({"protocol_version": compiler::protocol::PROTOCOL_VERSION, "name": host, "underlay_ip": ip, "capabilities": []});
        assert_eq!(
            call(&app, "PUT", &format!("/vnet/v1/hosts/{host}"), reg)
                .await
                .0,
            StatusCode::OK
        );
    }
    let (_, net) = call(&app, "POST", "/v2.0/networks", json!({"network": {}})).await;
    let net = net["network"]["id"].as_str().unwrap().to_owned();
    call(
        &app,
        "POST",
        "/v2.0/subnets",
        json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.0.0.0/24"}}),
    )
    .await;
    let port = |host: &str| json!({"port": {"network_id": net, "binding:host_id": host}});
    let (_, p1) = call(&app, "POST", "/v2.0/ports", port("h1")).await;
    let (_, p2) = call(&app, "POST", "/v2.0/ports", port("h2")).await;
    let (p1, p2) = (
        p1["port"]["id"].as_str().unwrap(),
        p2["port"]["id"].as_str().unwrap(),
    );

    let (h1, revision, _) =
        follow_until(&app, "/vnet/v1/hosts/h1/state", HostState::default(), |s| {
            s.networks.values().any(|n| n.remote_ports.contains_key(p2))
        })
        .await;
    let view = &h1.networks[&net];
    assert_eq!(view.local_ports.keys().collect::<Vec<_>>(), [p1]);
    assert_eq!(view.remote_ports[p2].vtep.to_string(), "192.0.2.2");
    assert_eq!(view.dhcp_lease(p1).unwrap().prefix_len, 24);

    // Another port on h2 while h1 is away: h1 resumes with just that delta.
    let (_, p3) = call(&app, "POST", "/v2.0/ports", port("h2")).await;
    let p3 = p3["port"]["id"].as_str().unwrap();
    let path = format!("/vnet/v1/hosts/h1/state?revision={revision}");
    let (h1, _, seen) = follow_until(&app, &path, h1, |s| {
        s.networks[&net].remote_ports.contains_key(p3)
    })
    .await;
    assert!(
        !seen
            .iter()
            .any(|m| matches!(m, StreamMessage::Snapshot { .. })),
        "resumed without a snapshot: {seen:?}"
    );
    assert_eq!(h1.networks[&net].remote_ports.len(), 2);

    // A host with no ports carries nothing; a revision from the future gets a snapshot.
    let (h3, _, seen) = follow_until(
        &app,
        "/vnet/v1/hosts/h3/state?revision=999999",
        HostState::default(),
        |_| true,
    )
    .await;
    assert!(h3.networks.is_empty());
    assert!(matches!(seen[0], StreamMessage::Snapshot { .. }));
}

#[tokio::test]
async fn a_change_wakes_only_the_streams_of_the_hosts_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let app = common::app(dir.path()).await;
    app.start_background();
    for (host, ip) in [("h1", "192.0.2.1"), ("h2", "192.0.2.2")] {
        let reg = json!({"protocol_version": compiler::protocol::PROTOCOL_VERSION, "name": host, "underlay_ip": ip, "capabilities": []});
        call(&app, "PUT", &format!("/vnet/v1/hosts/{host}"), reg).await;
    }
    let network = |name: &str| json!({"network": {"name": name}});
    let (_, a) = call(&app, "POST", "/v2.0/networks", network("a")).await;
    let (_, b) = call(&app, "POST", "/v2.0/networks", network("b")).await;
    let port = |net: &Value, host: &str| json!({"port": {"network_id": net["network"]["id"], "binding:host_id": host}});
    // h1 on network a, h2 on network b: nothing in common.
    call(&app, "POST", "/v2.0/ports", port(&a, "h1")).await;
    let (_, last) = call(&app, "POST", "/v2.0/ports", port(&b, "h2")).await;
    let last = last["port"]["id"].as_str().unwrap().to_owned();
    follow_until(&app, "/vnet/v1/hosts/h2/state", HostState::default(), |s| {
        s.networks
            .values()
            .any(|n| n.local_ports.contains_key(&last))
    })
    .await;

    let (_, mut h1) = app.fabric.open("h1", None);
    let (_, h2) = app.fabric.open("h2", None);
    let (_, p) = call(&app, "POST", "/v2.0/ports", port(&a, "h1")).await;
    let p = p["port"]["id"].as_str().unwrap().to_owned();
    tokio::time::timeout(Duration::from_secs(10), h1.changed())
        .await
        .expect("h1's stream is woken")
        .unwrap();
    // The fabric applied the port's revision (h1 has it), and h2 was not woken.
    let (first, _) = app.fabric.open("h1", None);
    assert!(matches!(&first[0], StreamMessage::Snapshot { state, .. }
        if state.networks.values().any(|n| n.local_ports.contains_key(&p))));
    assert!(
        !h2.has_changed().unwrap(),
        "h2's stream was woken by h1's change"
    );
}
