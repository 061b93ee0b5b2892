//! Networks: an isolated L2 segment, realised as one VXLAN VNI, or (flat
//! provider networks) as a physical network that hosts map to an interface.

use serde::{Deserialize, Serialize};

use crate::Standard;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub std: Standard,
    pub admin_state_up: bool,
    pub mtu: u32,
    // Whether a network is shared (`shared`) or external (`router:external`)
    // is its RBAC policies' to say, and nothing else's (`cloud/rbac.rs`).
    // Records written before policies existed carried the two flags here:
    // they are read, never written, and `Cloud::upgrade` turns them into
    // the wildcard policies they stand for when the server loads the store.
    #[serde(default, rename = "shared", skip_serializing)]
    pub legacy_shared: bool,
    #[serde(default, rename = "external", skip_serializing)]
    pub legacy_external: bool,
    pub port_security_enabled: bool,
    /// `provider:network_type`: `vxlan` (the default) or `flat`.
    pub network_type: String,
    /// `provider:segmentation_id`: the VXLAN VNI; 0 for a flat network.
    pub segmentation_id: u32,
    /// `provider:physical_network`: set exactly when the network is flat.
    #[serde(default)]
    pub physical_network: Option<String>,
    pub availability_zone_hints: Vec<String>,
    /// The external network auto-allocated topologies get their gateway on
    /// (auto-allocated-topology); one at most.
    #[serde(default)]
    pub is_default: bool,
}

/// A create request; `None` means "not given, use the default".
#[derive(Clone, Debug, Default)]
pub struct NetworkCreate {
    pub project_id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
    pub admin_state_up: Option<bool>,
    pub mtu: Option<u32>,
    /// A wildcard `access_as_shared` policy.
    pub shared: Option<bool>,
    /// `router:external`: floating IPs and router gateways come from it (a
    /// wildcard `access_as_external` policy).
    pub external: Option<bool>,
    pub port_security_enabled: Option<bool>,
    pub network_type: Option<String>,
    pub segmentation_id: Option<u32>,
    pub physical_network: Option<String>,
    pub availability_zone_hints: Option<Vec<String>>,
    pub is_default: Option<bool>,
}

#[derive(Clone, Debug, Default)]
pub struct NetworkUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    pub mtu: Option<u32>,
    pub shared: Option<bool>,
    pub external: Option<bool>,
    pub port_security_enabled: Option<bool>,
    pub is_default: Option<bool>,
}

/// `provider:network_type` of a VXLAN network (the default).
pub const VXLAN: &str = "vxlan";
/// `provider:network_type` of a flat provider network.
pub const FLAT: &str = "flat";

impl Network {
    /// Whether the network is a flat provider network (no VNI, no overlay).
    pub fn is_flat(&self) -> bool {
        self.physical_network.is_some()
    }
}
