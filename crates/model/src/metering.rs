//! Metering labels and their rules (Neutron's `metering` extension): what an
//! admin asks to be counted on the routers' uplinks, and the checks Neutron
//! makes of a rule. Plain data and validation; which routers a label applies
//! to is the compiler's business, and counting the agent's.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{Direction, ModelError, Standard};

/// A label: the counters of one project's routers (or, shared, of every
/// router). Its `std` carries no tags or meaningful revision: Neutron's
/// labels have no standard attributes beyond id, name, description and
/// project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeteringLabel {
    pub std: Standard,
    pub shared: bool,
}

/// A rule of a label: which traffic through a router's uplink it counts
/// (or, `excluded`, keeps from being counted by the label's other rules).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeteringLabelRule {
    /// `project_id` is the label's; `name` and `description` stay empty.
    pub std: Standard,
    pub metering_label_id: String,
    pub direction: Direction,
    pub excluded: bool,
    /// Neutron's deprecated prefix: despite its name, the tenant side of the
    /// traffic (the source of egress, the destination of ingress).
    pub remote_ip_prefix: Option<IpNet>,
    pub source_ip_prefix: Option<IpNet>,
    pub destination_ip_prefix: Option<IpNet>,
}

#[derive(Clone, Debug, Default)]
pub struct MeteringLabelCreate {
    pub project_id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub shared: Option<bool>,
}

#[derive(Clone, Debug, Default)]
pub struct MeteringLabelRuleCreate {
    pub project_id: Option<String>,
    pub metering_label_id: String,
    pub direction: String,
    pub excluded: Option<bool>,
    pub remote_ip_prefix: Option<String>,
    pub source_ip_prefix: Option<String>,
    pub destination_ip_prefix: Option<String>,
}

/// A prefix as Neutron's metering plugin takes it (`ipaddress.ip_interface`):
/// an address, or an address with a prefix length.
fn prefix(field: &str, value: Option<&str>) -> Result<Option<IpNet>, ModelError> {
    let Some(s) = value.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let net = s
        .parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| {
            ModelError::MeteringInvalid(format!(
                "{field}: {s} is invalid ['{s}' does not appear to be an IPv4 or IPv6 interface]."
            ))
        })?;
    // Kept as written (Neutron shows `10.0.0.5/24` back); users truncate.
    Ok(Some(net))
}

/// The rule `req` describes, checked as Neutron's metering plugin checks it
/// (before looking at the label's other rules).
pub(crate) fn build_rule(
    std: Standard,
    req: &MeteringLabelRuleCreate,
) -> Result<MeteringLabelRule, ModelError> {
    let direction = Direction::parse(&req.direction).ok_or_else(|| {
        ModelError::invalid(format!(
            "'{}' is not in ['ingress', 'egress']",
            req.direction
        ))
    })?;
    let remote_ip_prefix = prefix("remote_ip_prefix", req.remote_ip_prefix.as_deref())?;
    let source_ip_prefix = prefix("source_ip_prefix", req.source_ip_prefix.as_deref())?;
    let destination_ip_prefix = prefix(
        "destination_ip_prefix",
        req.destination_ip_prefix.as_deref(),
    )?;
    if remote_ip_prefix.is_some() && (source_ip_prefix.is_some() || destination_ip_prefix.is_some())
    {
        return Err(ModelError::MeteringInvalid(
            "Cannot use 'remote-ip-prefix' in conjunction with 'source-ip-prefix' or 'destination-ip-prefix'."
                .into(),
        ));
    }
    if remote_ip_prefix.is_none() && source_ip_prefix.is_none() && destination_ip_prefix.is_none() {
        return Err(ModelError::MeteringInvalid(
            "You must define at least one of the following parameters 'remote_ip_prefix', or 'source_ip_prefix' or 'destination_ip_prefix'."
                .into(),
        ));
    }
    Ok(MeteringLabelRule {
        std,
        metering_label_id: req.metering_label_id.clone(),
        direction,
        excluded: req.excluded.unwrap_or(false),
        remote_ip_prefix,
        source_ip_prefix,
        destination_ip_prefix,
    })
}

/// Whether two prefixes share an address (one contains the other).
pub(crate) fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}
