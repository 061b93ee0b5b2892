//! Tests only: a cloud made of network namespaces, after aya's netns test
//! harness. A [`Fabric`] is the underlay switch, a [`Host`] a hypervisor
//! plugged into it (where an agent runs), a [`Vm`] a namespace plugged into
//! its host by a veth named as the port's device. Every namespace gets a
//! unique name (caller's prefix + pid + counter) and is deleted when its guard
//! drops, also when a test panics; traffic never leaves these namespaces.
//!
//! Needs root. Never touches the namespace the tests run in, except to create
//! and delete its own namespaces.

pub mod capture;
pub mod netns;
pub mod world;

pub use capture::{
    Capture, ICMPV6_NEIGHBOUR_SOLICITATION, InnerIpv4, InnerIpv6, VxlanFrame, parse_pcap,
    vxlan_frames,
};
pub use netns::{CmdError, Netns, run_cmd, veth};
pub use world::{
    EXTERNAL_BRIDGE, EXTERNAL_DEV, Fabric, Host, OUTSIDE_IP, Outside, VM_DEV, VM_MTU, Vm,
};
