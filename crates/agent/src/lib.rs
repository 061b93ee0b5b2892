//! The per-host agent: turns its host's desired state (from the compiler, over
//! the protocol) into kernel state by diff, serves DHCP to its local ports, and
//! reports which ports are wired. `linux` is the kernel backend (netlink);
//! `router` the distributed routers (a namespace each); `nft` security
//! groups; `dhcp` the DHCPv4 server. Never flushes: it reads what exists and changes
//! only what differs, so a restart does not interrupt traffic.

pub mod daemon;
pub mod dhcp;
pub mod garp;
pub mod linux;
pub mod mappings;
pub mod nft;
pub mod router;
pub mod sync;
