//! What every collection's view shares: the standard attributes, timestamps,
//! and the JSON of values several resources hold (fixed IPs, routes). A
//! collection's own attributes are its module's (`Collection::own_attribute`).

use std::time::{Duration, UNIX_EPOCH};

use model::Standard;
use serde_json::{Map, Value, json};

pub type View = Map<String, Value>;

/// Attributes every kind shows (rules show all but `name`).
pub const STANDARD: [&str; 9] = [
    "id",
    "name",
    "project_id",
    "tenant_id",
    "description",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];

pub fn timestamp(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn standard_attribute(std: &Standard, name: &str) -> Option<Value> {
    Some(match name {
        "id" => json!(std.id),
        "name" => json!(std.name),
        "project_id" | "tenant_id" => json!(std.project_id),
        "description" => json!(std.description),
        "tags" => json!(std.tags),
        "created_at" => json!(timestamp(std.created_at)),
        "updated_at" => json!(timestamp(std.updated_at)),
        "revision_number" => json!(std.revision_number),
        _ => return None,
    })
}

pub fn fixed_ips_json(ips: &[model::FixedIp]) -> Value {
    json!(
        ips.iter()
            .map(|f| json!({"subnet_id": f.subnet_id, "ip_address": f.ip_address}))
            .collect::<Vec<_>>()
    )
}

pub fn routes_json(routes: &[model::HostRoute]) -> Value {
    json!(
        routes
            .iter()
            .map(|r| json!({"destination": r.destination.to_string(), "nexthop": r.nexthop}))
            .collect::<Vec<_>>()
    )
}
