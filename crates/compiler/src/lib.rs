//! The compiler: keeps the logical topology (networks, subnets, ports, hosts,
//! security groups and their rules) and derives each host's desired state,
//! incrementally: a change costs work in proportion to the hosts it touches,
//! not to the size of the cloud. A port joining or leaving a security group is
//! one member-set element added or removed on each host that holds the set.
//! Pure: no I/O, no clock. `protocol` holds the agent wire types.

mod compile;
mod input;
pub mod protocol;
pub mod spec;

pub use compile::{
    Compiler, GroupView, HostChanges, NetworkView, PortSeen, PortView, containing_member,
};
pub use input::Input;
