//! `/v2.0/quotas` (per-project limits) and `/v2.0/network-ip-availabilities`
//! (addresses used per network and subnet): Neutron's JSON for what the model
//! counts. Admin-only where Neutron's default policy says so.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use model::{Caller, Cloud, Limits, ModelError, Network};
use serde_json::{Map, Value, json};

use super::request::{caller, query_pairs};
use crate::error::ApiError;
use crate::state::{App, now};

fn limits_json(limits: &Limits) -> Value {
    Value::Object(limits.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&app, &headers)?;
    let cloud = app.read();
    let quotas = cloud
        .quota_overrides(&caller)?
        .into_iter()
        .map(|project| {
            let mut q = match limits_json(&cloud.quota(&caller, &project)?) {
                Value::Object(map) => map,
                _ => Map::new(),
            };
            q.insert("project_id".into(), json!(project));
            q.insert("tenant_id".into(), json!(project));
            Ok(Value::Object(q))
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    Ok(Json(json!({ "quotas": quotas })))
}

/// `GET /v2.0/quotas/{project}`; `tenant` names the caller's own project.
pub async fn show(
    State(app): State<Arc<App>>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&app, &headers)?;
    if project == "tenant" {
        return Ok(Json(
            json!({"tenant": {"tenant_id": caller.project_id, "project_id": caller.project_id}}),
        ));
    }
    let limits = app.read().quota(&caller, &project)?;
    Ok(Json(json!({ "quota": limits_json(&limits) })))
}

/// `GET /v2.0/quotas/{project}/default` and `/details`.
pub async fn show_sub(
    State(app): State<Arc<App>>,
    Path((project, sub)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&app, &headers)?;
    let cloud = app.read();
    let limits = cloud.quota(&caller, &project)?;
    let quota = match sub.as_str() {
        "default" => limits_json(cloud.default_quota()),
        "details" => Value::Object(
            model::QUOTA_KINDS
                .iter()
                .map(|(name, kind)| {
                    let limit = limits.get(*name).copied().unwrap_or(-1);
                    let used = cloud.used(&project, *kind);
                    (
                        (*name).to_owned(),
                        json!({"limit": limit, "used": used, "reserved": 0}),
                    )
                })
                .collect(),
        ),
        _ => return Err(ApiError::not_found()),
    };
    Ok(Json(json!({ "quota": quota })))
}

pub async fn update(
    State(app): State<Arc<App>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&app, &headers)?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("Body contains invalid data"))?;
    let mut quota = body
        .get("quota")
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| ApiError::bad_request("Unable to find 'quota' in request body"))?;
    // The quota-check-limit extension: `check_limit` refuses a limit below
    // what the project already uses; `force` (the CLI's default) does not
    // check, which is also what no flag means.
    let check_limit = quota.remove("check_limit").is_some_and(|v| truthy(&v));
    quota.remove("force");
    let changes = quota
        .iter()
        .map(|(name, v)| {
            let limit = v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| {
                    ApiError::invalid_input(format!("'{v}' is not an integer for {name}"))
                })?;
            Ok((name.clone(), limit))
        })
        .collect::<Result<Limits, ApiError>>()?;
    let now = now();
    let limits = app
        .write(|cloud| cloud.update_quota(&caller, &project, changes, check_limit, now))
        .await?;
    Ok(Json(json!({ "quota": limits_json(&limits) })))
}

/// A flag as Python reads one: Neutron takes `check_limit` by truthiness.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

pub async fn reset(
    State(app): State<Arc<App>>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let caller = caller(&app, &headers)?;
    app.write(|cloud| cloud.delete_quota(&caller, &project))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// === network IP availability ===

fn admin_only(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_admin {
        Ok(())
    } else {
        Err(ModelError::Forbidden(
            "(rule:get_network_ip_availability) is disallowed by policy".into(),
        )
        .into())
    }
}

fn availability(cloud: &Cloud, n: &Network) -> Value {
    let subnets = cloud.ip_availability(&n.std.id);
    // JSON numbers hold 64 bits: an IPv6 pool is shown at most that big.
    let total = |t: u128| u64::try_from(t).unwrap_or(u64::MAX);
    json!({
        "network_id": n.std.id,
        "network_name": n.std.name,
        "project_id": n.std.project_id,
        "tenant_id": n.std.project_id,
        "total_ips": total(subnets.iter().map(|s| s.total_ips).sum()),
        "used_ips": subnets.iter().map(|s| s.used_ips).sum::<usize>(),
        "subnet_ip_availability": subnets.iter().map(|s| json!({
            "subnet_id": s.subnet_id,
            "subnet_name": s.subnet_name,
            "cidr": s.cidr,
            "ip_version": s.ip_version,
            "total_ips": total(s.total_ips),
            "used_ips": s.used_ips,
        })).collect::<Vec<_>>(),
    })
}

pub async fn availabilities(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&app, &headers)?;
    admin_only(&caller)?;
    let filters = query_pairs(raw)?;
    let wanted = |key: &str, value: &str| {
        let named: Vec<&str> = filters
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect();
        named.is_empty() || named.contains(&value)
    };
    let cloud = app.read();
    let mut networks: Vec<&Network> = cloud
        .networks()
        .filter(|n| {
            wanted("network_id", &n.std.id)
                && wanted("network_name", &n.std.name)
                && wanted("project_id", &n.std.project_id)
                && wanted("tenant_id", &n.std.project_id)
        })
        .collect();
    networks.sort_by(|a, b| a.std.id.cmp(&b.std.id));
    let mut out: Vec<Value> = networks.iter().map(|n| availability(&cloud, n)).collect();
    let versions: Vec<u64> = filters
        .iter()
        .filter(|(k, _)| k == "ip_version")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    if !versions.is_empty() {
        out.retain(|n| {
            n["subnet_ip_availability"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|s| versions.contains(&s["ip_version"].as_u64().unwrap_or(0)))
            })
        });
    }
    Ok(Json(json!({ "network_ip_availabilities": out })))
}

pub async fn availability_show(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&app, &headers)?;
    admin_only(&caller)?;
    let cloud = app.read();
    let network = cloud
        .network(&id)
        .ok_or_else(|| ModelError::not_found(model::Kind::Network, &id))?;
    Ok(Json(
        json!({ "network_ip_availability": availability(&cloud, network) }),
    ))
}
