//! A project's auto-allocated topology (Neutron's get-me-a-network): which
//! network and router were made for it. Making and removing them is the
//! cloud's (`cloud/auto_allocated_topology.rs`).

use serde::{Deserialize, Serialize};

use crate::Standard;

/// Keyed by its project: `std.id` is the project's id, as a project has one
/// topology at most.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoAllocatedTopology {
    pub std: Standard,
    pub network_id: String,
    pub router_id: String,
}
