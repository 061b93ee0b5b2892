//! The Neutron API in-process: the real router over the real embedded store in
//! a temporary directory, driven request by request.

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

mod common;

use std::sync::Arc;

use api::App;
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Server {
    app: Arc<App>,
    _dir: tempfile::TempDir,
    dir_path: std::path::PathBuf,
}

async fn start_in(dir: tempfile::TempDir) -> Server {
    let app = common::app(dir.path()).await;
    Server {
        app,
        dir_path: dir.path().to_owned(),
        _dir: dir,
    }
}

async fn start() -> Server {
    start_in(tempfile::tempdir().unwrap()).await
}

/// `project`: `None` is the default (admin) caller; `Some(p)` a member of p.
async fn call(
    s: &Server,
    method: &str,
    path: &str,
    project: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call_with(s, method, path, project, body, &[]).await
}

async fn call_with(
    s: &Server,
    method: &str,
    path: &str,
    project: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(p) = project {
        req = req.header("X-Project-Id", p).header("X-Roles", "member");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = body.map_or(Body::empty(), |b| Body::from(b.to_string()));
    let resp = api::router(s.app.clone(), None)
        .oneshot(
            req.header("content-type", "application/json")
                .body(body)
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, value)
}

fn error_type(v: &Value) -> &str {
    v["NeutronError"]["type"].as_str().unwrap_or("<none>")
}

async fn network_with_subnet(s: &Server, project: Option<&str>, cidr: &str) -> (String, String) {
    let (st, net) = call(
        s,
        "POST",
        "/v2.0/networks",
        project,
        Some(json!({"network": {"name": "n"}})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{net}");
    let net_id = net["network"]["id"].as_str().unwrap().to_owned();
    let (st, sub) = call(
        s,
        "POST",
        "/v2.0/subnets",
        project,
        Some(json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": cidr}})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{sub}");
    (net_id, sub["subnet"]["id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn projects_see_only_their_own_and_overlap_freely() {
    let s = start().await;
    let (net_a, _) = network_with_subnet(&s, Some("a"), "10.0.0.0/24").await;
    let (net_b, _) = network_with_subnet(&s, Some("b"), "10.0.0.0/24").await;

    let (_, list) = call(&s, "GET", "/v2.0/networks", Some("a"), None).await;
    let ids: Vec<&str> = list["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [net_a.as_str()]);
    // Provider attributes are for admins.
    assert!(
        list["networks"][0]
            .get("provider:segmentation_id")
            .is_none()
    );

    for (method, body) in [
        ("GET", None),
        ("PUT", Some(json!({"network": {"name": "x"}}))),
        ("DELETE", None),
    ] {
        let (st, err) = call(
            &s,
            method,
            &format!("/v2.0/networks/{net_b}"),
            Some("a"),
            body,
        )
        .await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{method}");
        assert_eq!(error_type(&err), "NetworkNotFound");
    }
    let (st, _) = call(
        &s,
        "POST",
        "/v2.0/ports",
        Some("a"),
        Some(json!({"port": {"network_id": net_b}})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // The admin sees both, and each project got its own default group.
    let (_, all) = call(&s, "GET", "/v2.0/networks", None, None).await;
    assert_eq!(all["networks"].as_array().unwrap().len(), 2);
    let (_, groups) = call(&s, "GET", "/v2.0/security-groups?name=default", None, None).await;
    let projects: std::collections::BTreeSet<&str> = groups["security_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["project_id"].as_str().unwrap())
        .collect();
    assert!(projects.contains("a") && projects.contains("b") && projects.contains("admin"));

    // A member may not create for another project; an admin may.
    let body = json!({"network": {"project_id": "b"}});
    let (st, _) = call(&s, "POST", "/v2.0/networks", Some("a"), Some(body.clone())).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, made) = call(&s, "POST", "/v2.0/networks", None, Some(body)).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(made["network"]["project_id"], "b");
}

#[tokio::test]
async fn refusals_carry_neutron_types_and_change_nothing() {
    let s = start().await;
    let (net, subnet) = network_with_subnet(&s, None, "10.20.30.0/24").await;
    let cases = [
        (
            "/v2.0/networks",
            json!({"network": {"name": "x", "bogus": 1}}),
            400,
            "HTTPBadRequest",
        ),
        ("/v2.0/networks", json!({"net": {}}), 400, "HTTPBadRequest"),
        (
            "/v2.0/subnets",
            json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.0.0.300/24"}}),
            400,
            "InvalidInput",
        ),
        (
            "/v2.0/subnets",
            json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.20.30.128/25"}}),
            400,
            "InvalidInput",
        ),
        (
            "/v2.0/ports",
            json!({"port": {"network_id": net, "fixed_ips": [{"subnet_id": subnet, "ip_address": "10.99.0.5"}]}}),
            400,
            "InvalidIpForSubnet",
        ),
        (
            "/v2.0/ports",
            json!({"port": {"network_id": "nope"}}),
            404,
            "NetworkNotFound",
        ),
    ];
    for (path, body, status, kind) in cases {
        let (st, err) = call(&s, "POST", path, None, Some(body.clone())).await;
        assert_eq!((st.as_u16(), error_type(&err)), (status, kind), "{body}");
    }
    let port = json!({"port": {"network_id": net, "fixed_ips": [{"subnet_id": subnet, "ip_address": "10.20.30.10"}]}});
    assert_eq!(
        call(&s, "POST", "/v2.0/ports", None, Some(port.clone()))
            .await
            .0,
        StatusCode::CREATED
    );
    let (st, err) = call(&s, "POST", "/v2.0/ports", None, Some(port)).await;
    assert_eq!(
        (st, error_type(&err)),
        (StatusCode::CONFLICT, "IpAddressAlreadyAllocated")
    );

    // A bulk create whose last item is bad creates none of them.
    let bulk =
        json!({"networks": [{"name": "ok1"}, {"name": "ok2"}, {"name": "bad", "mtu": 9000}]});
    let (st, _) = call(&s, "POST", "/v2.0/networks", None, Some(bulk)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (_, list) = call(&s, "GET", "/v2.0/networks", None, None).await;
    assert_eq!(list["networks"].as_array().unwrap().len(), 1);

    let (st, err) = call(&s, "DELETE", &format!("/v2.0/networks/{net}"), None, None).await;
    assert_eq!(
        (st, error_type(&err)),
        (StatusCode::CONFLICT, "NetworkInUse")
    );
    let (st, err) = call(&s, "DELETE", &format!("/v2.0/subnets/{subnet}"), None, None).await;
    assert_eq!(
        (st, error_type(&err)),
        (StatusCode::CONFLICT, "SubnetInUse")
    );
}

#[tokio::test]
async fn if_match_guards_updates_and_deletes() {
    let s = start().await;
    let (net, _) = network_with_subnet(&s, None, "10.0.0.0/24").await;
    let path = format!("/v2.0/networks/{net}");
    let (_, v) = call(&s, "GET", &path, None, None).await;
    let rev = v["network"]["revision_number"].as_u64().unwrap();
    assert_eq!(rev, 1, "adding the subnet bumped the network");
    let header = |r: u64| format!("revision_number={r}");
    let body = || Some(json!({"network": {"name": "renamed"}}));
    let stale = header(rev + 5);
    let (st, err) = call_with(&s, "PUT", &path, None, body(), &[("If-Match", &stale)]).await;
    assert_eq!(
        (st, error_type(&err)),
        (
            StatusCode::PRECONDITION_FAILED,
            "RevisionNumberConstraintFailed"
        )
    );
    let current = header(rev);
    let (st, v) = call_with(&s, "PUT", &path, None, body(), &[("If-Match", &current)]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["network"]["revision_number"], rev + 1);
    let (st, _) = call_with(&s, "DELETE", &path, None, None, &[("If-Match", &current)]).await;
    assert_eq!(st, StatusCode::PRECONDITION_FAILED);
    let next = header(rev + 1);
    let (st, _) = call_with(&s, "DELETE", &path, None, None, &[("If-Match", &next)]).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn what_was_acknowledged_is_there_after_a_restart() {
    let s = start().await;
    let (net, _) = network_with_subnet(&s, None, "10.0.0.0/24").await;
    let mut ports = Vec::new();
    for _ in 0..20 {
        let (st, p) = call(
            &s,
            "POST",
            "/v2.0/ports",
            None,
            Some(json!({"port": {"network_id": net}})),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED);
        ports.push(p["port"].clone());
    }
    let path = s.dir_path.clone();
    let Server { app, _dir, .. } = s;
    drop(app);
    // The store is released asynchronously by its writer thread; retry briefly.
    let again = loop {
        match store::embedded::EmbeddedStore::open(&path) {
            Ok(st) => break st,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    let app = App::load(
        Arc::new(again),
        model::CloudConfig::default(),
        "admin".into(),
        String::new(),
    )
    .await
    .unwrap();
    let s = Server {
        app,
        dir_path: path,
        _dir,
    };
    let (_, list) = call(&s, "GET", "/v2.0/ports", None, None).await;
    let listed = list["ports"].as_array().unwrap();
    assert_eq!(listed.len(), ports.len());
    for p in &ports {
        assert!(listed.contains(p), "port {} lost or changed", p["id"]);
    }
    // The reloaded IPAM still refuses the first port's address.
    let ip = ports[0]["fixed_ips"][0]["ip_address"].as_str().unwrap();
    let (st, _) = call(
        &s,
        "POST",
        "/v2.0/ports",
        None,
        Some(json!({"port": {"network_id": net, "fixed_ips": [{"ip_address": ip}]}})),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);
}

#[tokio::test]
async fn tags_can_be_set_filtered_and_removed() {
    let s = start().await;
    let (net, _) = network_with_subnet(&s, None, "10.0.0.0/24").await;
    let base = format!("/v2.0/networks/{net}/tags");
    let (st, v) = call(
        &s,
        "PUT",
        &base,
        None,
        Some(json!({"tags": ["red", "blue"]})),
    )
    .await;
    assert_eq!(
        (st, v["tags"].clone()),
        (StatusCode::OK, json!(["blue", "red"]))
    );
    assert_eq!(
        call(&s, "PUT", &format!("{base}/green"), None, None)
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        call(&s, "GET", &format!("{base}/green"), None, None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (_, list) = call(&s, "GET", "/v2.0/networks?tags=red,green", None, None).await;
    assert_eq!(list["networks"].as_array().unwrap().len(), 1);
    let (_, list) = call(&s, "GET", "/v2.0/networks?not-tags-any=red", None, None).await;
    assert_eq!(list["networks"].as_array().unwrap().len(), 0);
    assert_eq!(
        call(&s, "DELETE", &format!("{base}/red"), None, None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (st, err) = call(&s, "DELETE", &format!("{base}/red"), None, None).await;
    assert_eq!(
        (st, error_type(&err)),
        (StatusCode::NOT_FOUND, "TagNotFound")
    );
}

async fn register(s: &Server, host: &str, physical_networks: &[&str], gateway: bool) {
    let reg = json!({
        "protocol_version": compiler::protocol::PROTOCOL_VERSION,
        "name": host, "underlay_ip": "192.0.2.1", "capabilities": [],
        "physical_networks": physical_networks, "gateway": gateway,
    });
    let (status, body) = call(s, "PUT", &format!("/vnet/v1/hosts/{host}"), None, Some(reg)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn flat_provider_networks_are_admin_only_and_checked_as_in_neutron() {
    let s = start().await;
    let flat = json!({"network": {"name": "public", "router:external": true,
        "provider:network_type": "flat", "provider:physical_network": "external"}});
    let (status, body) = call(&s, "POST", "/v2.0/networks", Some("p"), Some(flat.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = call(&s, "POST", "/v2.0/networks", None, Some(flat.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let net = &body["network"];
    assert_eq!(net["provider:network_type"], "flat");
    assert_eq!(net["provider:physical_network"], "external");
    assert_eq!(net["provider:segmentation_id"], Value::Null);
    let id = net["id"].as_str().unwrap().to_owned();

    // One flat network per physical network.
    let (status, body) = call(&s, "POST", "/v2.0/networks", None, Some(flat)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_type(&body), "FlatNetworkInUse");
    assert_eq!(
        body["NeutronError"]["message"],
        "Unable to create the flat network. Physical network external is in use."
    );

    for (attrs, message) in [
        (
            json!({"provider:network_type": "flat"}),
            "physical_network required for flat provider network",
        ),
        (
            json!({"provider:network_type": "flat", "provider:physical_network": "p2",
                   "provider:segmentation_id": 7}),
            "segmentation_id prohibited for flat provider network",
        ),
        (
            json!({"provider:network_type": "vxlan", "provider:physical_network": "p2"}),
            "physical_network prohibited for vxlan provider network",
        ),
        (
            json!({"provider:physical_network": "p2"}),
            "network_type required",
        ),
    ] {
        let (status, body) = call(
            &s,
            "POST",
            "/v2.0/networks",
            None,
            Some(json!({ "network": attrs })),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{attrs}: {body}");
        assert_eq!(error_type(&body), "InvalidInput", "{attrs}");
        assert_eq!(
            body["NeutronError"]["message"],
            format!("Invalid input for operation: {message}."),
            "{attrs}"
        );
    }

    // A VXLAN network shows no physical network; non-admins see neither
    // attribute, of any network.
    let (_, vx) = call(
        &s,
        "POST",
        "/v2.0/networks",
        None,
        Some(json!({"network": {}})),
    )
    .await;
    assert_eq!(vx["network"]["provider:network_type"], "vxlan");
    assert_eq!(vx["network"]["provider:physical_network"], Value::Null);
    assert!(vx["network"]["provider:segmentation_id"].as_u64().is_some());
    let (status, shown) = call(&s, "GET", &format!("/v2.0/networks/{id}"), Some("p"), None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an external network is visible to all"
    );
    let shown = shown["network"].as_object().unwrap();
    assert!(!shown.contains_key("provider:physical_network"));
    assert!(!shown.contains_key("provider:network_type"));

    // Provider attributes do not change after creation.
    let (status, _) = call(
        &s,
        "PUT",
        &format!("/v2.0/networks/{id}"),
        None,
        Some(json!({"network": {"provider:physical_network": "other"}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_flat_port_binds_only_to_a_host_that_maps_its_physical_network() {
    let s = start().await;
    let (_, net) = call(
        &s,
        "POST",
        "/v2.0/networks",
        None,
        Some(json!({"network": {"provider:network_type": "flat",
                                 "provider:physical_network": "external"}})),
    )
    .await;
    let net = net["network"]["id"].as_str().unwrap().to_owned();
    let (_, vx) = call(
        &s,
        "POST",
        "/v2.0/networks",
        None,
        Some(json!({"network": {}})),
    )
    .await;
    let vx = vx["network"]["id"].as_str().unwrap().to_owned();
    register(&s, "mapped", &["external"], true).await;
    register(&s, "bare", &[], false).await;
    let port = |network: &str, host: &str| json!({"port": {"network_id": network, "binding:host_id": host}});
    let vif = |body: &Value| {
        body["port"]["binding:vif_type"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    let (_, ok) = call(&s, "POST", "/v2.0/ports", None, Some(port(&net, "mapped"))).await;
    assert_eq!(vif(&ok), "bridge");
    let (status, failed) = call(&s, "POST", "/v2.0/ports", None, Some(port(&net, "bare"))).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a failed binding is not a refusal"
    );
    assert_eq!(vif(&failed), "binding_failed");
    assert_eq!(failed["port"]["status"], "DOWN");
    let (_, nowhere) = call(&s, "POST", "/v2.0/ports", None, Some(port(&net, "unknown"))).await;
    assert_eq!(vif(&nowhere), "binding_failed", "no agent, no mapping");
    let (_, vxlan) = call(&s, "POST", "/v2.0/ports", None, Some(port(&vx, "bare"))).await;
    assert_eq!(vif(&vxlan), "bridge", "VXLAN binds anywhere");
    let failed_id = failed["port"]["id"].as_str().unwrap().to_owned();

    // Shown, listed and filtered alike.
    let (_, shown) = call(&s, "GET", &format!("/v2.0/ports/{failed_id}"), None, None).await;
    assert_eq!(vif(&shown), "binding_failed");
    let (_, listed) = call(
        &s,
        "GET",
        "/v2.0/ports?binding:vif_type=binding_failed",
        None,
        None,
    )
    .await;
    let mut ids: Vec<&str> = listed["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want = vec![failed_id.as_str(), nowhere["port"]["id"].as_str().unwrap()];
    want.sort_unstable();
    assert_eq!(ids, want);

    // The agent comes back with the mapping: the binding holds.
    register(&s, "bare", &["external"], false).await;
    let (_, shown) = call(&s, "GET", &format!("/v2.0/ports/{failed_id}"), None, None).await;
    assert_eq!(vif(&shown), "bridge");

    // Hosts and agents show their mappings and whether they are gateways.
    let (_, hosts) = call(&s, "GET", "/vnet/v1/hosts/mapped", None, None).await;
    assert_eq!(hosts["host"]["physical_networks"], json!(["external"]));
    assert_eq!(hosts["host"]["gateway"], true);
    let (_, agents) = call(&s, "GET", "/v2.0/agents?host=mapped", None, None).await;
    let conf = &agents["agents"][0]["configurations"];
    assert_eq!(conf["physical_networks"], json!(["external"]));
    assert_eq!(conf["gateway"], true);
}

#[tokio::test]
async fn an_unusable_identity_header_is_refused_never_made_admin() {
    let s = start().await;
    let revision = async || {
        let all = store::KeyRange::Key("/".into());
        s.app.store.range(all).await.unwrap().revision
    };
    let before = revision().await;
    for (name, value) in [
        ("X-Project-Id", &b"p\xc3\xa9"[..]),
        ("X-Project-Id", b"   "),
        ("X-Tenant-Id", b""),
        ("X-Project-Id", b"two words"),
    ] {
        for (method, path, body) in [
            ("GET", "/v2.0/quotas", None),
            ("POST", "/v2.0/networks", Some(json!({"network": {}}))),
        ] {
            let body = body.map_or(Body::empty(), |b: Value| Body::from(b.to_string()));
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header(name, HeaderValue::from_bytes(value).unwrap())
                .header("X-Roles", "member")
                .header("content-type", "application/json")
                .body(body)
                .unwrap();
            let resp = api::router(s.app.clone(), None).oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(
                (status, error_type(&v)),
                (StatusCode::BAD_REQUEST, "HTTPBadRequest"),
                "{method} {path} with {name}: {value:?}: {v}"
            );
        }
    }
    assert_eq!(revision().await, before, "a refused request wrote");
    // A usable project with roles that are not ASCII: refused too.
    let req = Request::builder()
        .uri("/v2.0/networks")
        .header("X-Project-Id", "p1")
        .header("X-Roles", HeaderValue::from_bytes(b"adm\xc3\xafn").unwrap())
        .body(Body::empty())
        .unwrap();
    let resp = api::router(s.app.clone(), None).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // And a plain member still works.
    let (status, _) = call(&s, "GET", "/v2.0/networks", Some("p1"), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_http_layers_refusals_are_neutron_errors_too() {
    let s = start().await;
    let send = async |req: Request<Body>| {
        let resp = api::router(s.app.clone(), None).oneshot(req).await.unwrap();
        let status = resp.status();
        let json = resp
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json, v)
    };
    for path in [
        "/v2.0/ports/%C0%AF",
        "/v2.0/networks/%C0%AF/tags",
        "/v2.0/floatingips/%C0%AF/port_forwardings",
    ] {
        let req = Request::builder().uri(path).body(Body::empty()).unwrap();
        let (status, json, v) = send(req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert!(json && error_type(&v) == "HTTPBadRequest", "{path}: {v}");
    }
    let huge = format!(
        "{{\"network\": {{\"name\": \"{}\"}}}}",
        "x".repeat(20 << 20)
    );
    let req = Request::builder()
        .method("POST")
        .uri("/v2.0/networks")
        .header("content-type", "application/json")
        .body(Body::from(huge))
        .unwrap();
    let (status, json, v) = send(req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(json && error_type(&v) == "HTTPRequestEntityTooLarge", "{v}");
}

#[tokio::test]
async fn if_match_on_another_projects_resource_is_a_plain_404() {
    let s = start().await;
    let (net, _) = network_with_subnet(&s, Some("p1"), "10.40.0.0/24").await;
    let (_, router) = call(
        &s,
        "POST",
        "/v2.0/routers",
        Some("p1"),
        Some(json!({"router": {"name": "r"}})),
    )
    .await;
    let router = router["router"]["id"].as_str().unwrap().to_owned();
    for (path, kind) in [
        (format!("/v2.0/networks/{net}"), "NetworkNotFound"),
        (format!("/v2.0/routers/{router}"), "RouterNotFound"),
    ] {
        for method in ["PUT", "DELETE"] {
            let body = (method == "PUT").then(|| {
                let singular = if kind == "RouterNotFound" {
                    "router"
                } else {
                    "network"
                };
                json!({ singular: {"name": "x"} })
            });
            let (status, v) = call_with(
                &s,
                method,
                &path,
                Some("p2"),
                body,
                &[("If-Match", "revision_number=999")],
            )
            .await;
            assert_eq!(
                (status, error_type(&v)),
                (StatusCode::NOT_FOUND, kind),
                "{method} {path}: {v}"
            );
            assert!(!v.to_string().contains("revision"), "{v}");
        }
    }
    // Its owner still gets the revision check.
    let (status, v) = call_with(
        &s,
        "PUT",
        &format!("/v2.0/networks/{net}"),
        Some("p1"),
        Some(json!({"network": {"name": "x"}})),
        &[("If-Match", "revision_number=999")],
    )
    .await;
    assert_eq!(
        (status, error_type(&v)),
        (
            StatusCode::PRECONDITION_FAILED,
            "RevisionNumberConstraintFailed"
        )
    );
}

#[tokio::test]
async fn a_new_projects_refused_requests_and_reads_write_nothing() {
    let s = start().await;
    let revision = async || {
        let all = store::KeyRange::Prefix(String::new());
        s.app.store.range(all).await.unwrap().revision
    };
    let before = revision().await;
    let (status, _) = call(
        &s,
        "POST",
        "/v2.0/networks",
        Some("fresh"),
        Some(json!({"network": {"bogus": 1}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(&s, "GET", "/v2.0/networks/nope", Some("fresh"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&s, "GET", "/v2.0/networks", Some("fresh"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(revision().await, before, "a refusal or a read wrote");
    // Listing its security groups gives it its default group, as Neutron does.
    let (_, groups) = call(&s, "GET", "/v2.0/security-groups", Some("fresh"), None).await;
    assert_eq!(groups["security_groups"][0]["name"], "default", "{groups}");
    // And the first write that needs it makes it in the same transaction.
    let (status, net) = call(
        &s,
        "POST",
        "/v2.0/networks",
        Some("other"),
        Some(json!({"network": {}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{net}");
    let (_, groups) = call(&s, "GET", "/v2.0/security-groups?name=default", None, None).await;
    let owners: Vec<&str> = groups["security_groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["project_id"].as_str())
        .collect();
    assert!(owners.contains(&"other"), "{groups}");
}

#[tokio::test]
async fn an_empty_fields_value_asks_for_every_attribute() {
    let s = start().await;
    let (net, _) = network_with_subnet(&s, None, "10.50.0.0/24").await;
    let (_, all) = call(&s, "GET", "/v2.0/networks?fields=", None, None).await;
    assert!(all["networks"][0]["name"].is_string(), "{all}");
    assert!(all["networks"][0]["id"].is_string(), "{all}");
    let (_, one) = call(
        &s,
        "GET",
        &format!("/v2.0/networks/{net}?fields="),
        None,
        None,
    )
    .await;
    assert_eq!(one["network"]["id"], net.as_str(), "{one}");
    assert!(one["network"]["subnets"].is_array(), "{one}");
    let (_, some) = call(&s, "GET", "/v2.0/networks?fields=id&fields=", None, None).await;
    let keys: Vec<&String> = some["networks"][0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id"], "{some}");
}

/// Every list a caller can grow is bounded, with Neutron's error where
/// Neutron has one, and a refusal leaves the resource as it was.
#[tokio::test]
async fn lists_a_caller_can_grow_are_bounded() {
    let s = start().await;
    let p = Some("p1");
    let (net, subnet) = network_with_subnet(&s, p, "10.60.0.0/16").await;
    let refused = |(st, v): (StatusCode, Value), kind: &str| {
        assert_eq!((st, error_type(&v)), (StatusCode::BAD_REQUEST, kind), "{v}");
    };

    // Tags: 50 per resource, by replacement or one by one.
    let tags = |n: usize| json!({"tags": (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>()});
    let base = format!("/v2.0/networks/{net}/tags");
    refused(
        call(&s, "PUT", &base, p, Some(tags(51))).await,
        "InvalidInput",
    );
    let (st, v) = call(&s, "PUT", &base, p, Some(tags(50))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    refused(
        call(&s, "PUT", &format!("{base}/one-more"), p, None).await,
        "InvalidInput",
    );
    let (_, v) = call(&s, "GET", &base, p, None).await;
    assert_eq!(v["tags"].as_array().map(Vec::len), Some(50));

    // A subnet's DNS servers (5) and host routes (20), at create and update.
    let servers = |n: u8| (1..=n).map(|i| format!("10.9.0.{i}")).collect::<Vec<_>>();
    let routes = |n: u8| {
        (1..=n)
            .map(|i| json!({"destination": format!("10.{i}.0.0/16"), "nexthop": "10.60.0.9"}))
            .collect::<Vec<_>>()
    };
    let subnet_with = |extra: Value| {
        let mut body = json!({"network_id": net, "ip_version": 4, "cidr": "10.61.0.0/24"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Some(json!({ "subnet": body }))
    };
    refused(
        call(
            &s,
            "POST",
            "/v2.0/subnets",
            p,
            subnet_with(json!({"dns_nameservers": servers(6)})),
        )
        .await,
        "DNSNameServersExhausted",
    );
    let path = format!("/v2.0/subnets/{subnet}");
    let (st, err) = call(
        &s,
        "PUT",
        &path,
        p,
        Some(json!({"subnet": {"dns_nameservers": servers(6)}})),
    )
    .await;
    refused((st, err.clone()), "DNSNameServersExhausted");
    assert!(
        err["NeutronError"]["message"]
            .as_str()
            .unwrap()
            .contains(&subnet),
        "{err}"
    );
    let (st, v) = call(
        &s,
        "PUT",
        &path,
        p,
        Some(json!({"subnet": {"dns_nameservers": servers(5)}})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    refused(
        call(
            &s,
            "PUT",
            &path,
            p,
            Some(json!({"subnet": {"host_routes": routes(21)}})),
        )
        .await,
        "HostRoutesExhausted",
    );
    let (_, v) = call(&s, "GET", &path, p, None).await;
    assert_eq!(v["subnet"]["host_routes"], json!([]), "{v}");

    // A port's address pairs (10), fixed IPs (32) and extra DHCP options (64).
    let port_with = |extra: Value| {
        let mut body = json!({"network_id": net});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Some(json!({ "port": body }))
    };
    let pairs = |n: u8| {
        (1..=n)
            .map(|i| json!({"ip_address": format!("10.70.0.{i}")}))
            .collect::<Vec<_>>()
    };
    refused(
        call(
            &s,
            "POST",
            "/v2.0/ports",
            p,
            port_with(json!({"allowed_address_pairs": pairs(11)})),
        )
        .await,
        "AllowedAddressPairExhausted",
    );
    let ips = (1..=33)
        .map(|i| json!({"ip_address": format!("10.60.1.{i}")}))
        .collect::<Vec<_>>();
    refused(
        call(
            &s,
            "POST",
            "/v2.0/ports",
            p,
            port_with(json!({"fixed_ips": ips})),
        )
        .await,
        "InvalidInput",
    );
    let opts = (0..65)
        .map(|i| json!({"opt_name": format!("{}", 200 + i), "opt_value": "x"}))
        .collect::<Vec<_>>();
    refused(
        call(
            &s,
            "POST",
            "/v2.0/ports",
            p,
            port_with(json!({"extra_dhcp_opts": opts})),
        )
        .await,
        "InvalidInput",
    );
    let (st, port) = call(
        &s,
        "POST",
        "/v2.0/ports",
        p,
        port_with(json!({"allowed_address_pairs": pairs(10)})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{port}");
    let port_path = format!("/v2.0/ports/{}", port["port"]["id"].as_str().unwrap());
    refused(
        call(
            &s,
            "PUT",
            &port_path,
            p,
            Some(json!({"port": {"allowed_address_pairs": pairs(11)}})),
        )
        .await,
        "AllowedAddressPairExhausted",
    );
    let (_, v) = call(&s, "GET", &port_path, p, None).await;
    assert_eq!(
        v["port"]["allowed_address_pairs"].as_array().map(Vec::len),
        Some(10)
    );
}

/// Neutron reads a request body as JSON whatever its Content-Type says
/// (neither pecan's routing nor its body hook looks at it), so vnet does.
#[tokio::test]
async fn a_json_body_is_read_whatever_its_content_type() {
    let s = start().await;
    for content_type in ["text/plain", "application/xml"] {
        let req = Request::builder()
            .method("POST")
            .uri("/v2.0/networks")
            .header("content-type", content_type)
            .body(Body::from(
                json!({"network": {"name": content_type}}).to_string(),
            ))
            .unwrap();
        let resp = api::router(s.app.clone(), None).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "{content_type}");
    }
}

#[tokio::test]
async fn subnets_come_from_pools_with_neutrons_errors() {
    let s = start().await;
    let (st, pool) = call(
        &s,
        "POST",
        "/v2.0/subnetpools",
        Some("a"),
        Some(
            json!({"subnetpool": {"name": "p", "prefixes": ["10.10.0.0/23", "10.10.2.0/24"],
                                   "default_prefixlen": 24}}),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{pool}");
    let pool = &pool["subnetpool"];
    assert_eq!(pool["prefixes"], json!(["10.10.0.0/23", "10.10.2.0/24"]));
    assert_eq!(pool["ip_version"], json!(4));
    assert_eq!(pool["min_prefixlen"], json!(8));
    assert_eq!(pool["max_prefixlen"], json!(32));
    assert_eq!(pool["address_scope_id"], Value::Null);
    let id = pool["id"].as_str().unwrap();
    let (_, net) = call(
        &s,
        "POST",
        "/v2.0/networks",
        Some("a"),
        Some(json!({"network": {}})),
    )
    .await;
    let net = net["network"]["id"].as_str().unwrap();
    let subnet = json!({"subnet": {"network_id": net, "ip_version": 4, "subnetpool_id": id}});
    let mut cidrs = Vec::new();
    for _ in 0..3 {
        let (st, made) = call(&s, "POST", "/v2.0/subnets", Some("a"), Some(subnet.clone())).await;
        assert_eq!(st, StatusCode::CREATED, "{made}");
        assert_eq!(made["subnet"]["subnetpool_id"], json!(id));
        cidrs.push(made["subnet"]["cidr"].clone());
    }
    assert_eq!(
        cidrs,
        [
            json!("10.10.2.0/24"),
            json!("10.10.0.0/24"),
            json!("10.10.1.0/24")
        ]
    );
    let (st, err) = call(&s, "POST", "/v2.0/subnets", Some("a"), Some(subnet.clone())).await;
    assert_eq!(
        (st, error_type(&err)),
        (StatusCode::CONFLICT, "SubnetAllocationError")
    );
    // Another project neither sees the pool nor allocates from it.
    let (st, err) = call(
        &s,
        "GET",
        &format!("/v2.0/subnetpools/{id}"),
        Some("b"),
        None,
    )
    .await;
    assert_eq!(
        (st, error_type(&err)),
        (StatusCode::NOT_FOUND, "SubnetPoolNotFound")
    );
    assert_eq!(
        err["NeutronError"]["message"],
        json!(format!("Subnet pool {id} could not be found."))
    );
    let (st, err) = call(
        &s,
        "DELETE",
        &format!("/v2.0/subnetpools/{id}"),
        Some("a"),
        None,
    )
    .await;
    assert_eq!(
        (st, error_type(&err)),
        (StatusCode::BAD_REQUEST, "SubnetPoolDeleteError")
    );
    let (st, err) = call(
        &s,
        "PUT",
        &format!("/v2.0/subnetpools/{id}/remove_prefixes"),
        Some("a"),
        Some(json!({"prefixes": ["10.10.1.0/24"]})),
    )
    .await;
    assert_eq!(
        (st, error_type(&err)),
        (StatusCode::BAD_REQUEST, "IllegalSubnetPoolPrefixUpdate")
    );
    let (st, added) = call(
        &s,
        "PUT",
        &format!("/v2.0/subnetpools/{id}/add_prefixes"),
        Some("a"),
        Some(json!({"prefixes": ["10.10.3.0/24"]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(added, json!({"prefixes": ["10.10.0.0/22"]}));
}
