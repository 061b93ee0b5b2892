//! DHCP (v4 and v6) and router advertisements for local ports: the agent
//! itself answers the DHCP requests and router solicitations of the ports
//! (VMs) bound to its host, each with exactly its port's fixed IP and
//! options ([`DhcpLease`](compiler::protocol::DhcpLease)). Nothing else
//! answers, and no DHCP or router advertisement frame crosses the overlay: requests are read from the
//! port's own device and replies written back to it.
//!
//! - [`responder`]: pure: a received frame plus the port's lease → the reply
//!   frame or nothing (all bytes through `smoltcp::wire`).
//! - [`server`]: the I/O: one packet socket per port device, driven by tokio.
//! - [`router_advert`]: pure: the router advertisements a port gets (its
//!   subnets' `ipv6_ra_mode`), as frames, and router solicitations.
//! - [`dhcpv6`]: pure: a received DHCPv6 frame plus the port's DHCPv6 lease
//!   (its fixed IPs on `dhcpv6-stateful` subnets, the DNS servers, the
//!   domain search list, its own `extra_dhcp_opts` of `ip_version` 6) → the
//!   reply frame or nothing (messages through `dhcproto`).
//! - [`served`]: pure: every local port's lease and IPv6 service as last
//!   handed to the servers, rebuilt whole or for the ports a delta names
//!   ([`ServeHints`]), with the devices whose service that changes.
//! - [`ipv6_server`]: the I/O for IPv6: a second packet socket per port
//!   device, sending its advertisements (periodic, and in answer to
//!   solicitations) and answering DHCPv6.
//!
//! The daemon's side:
//! ```no_run
//! # async fn f(state: compiler::protocol::HostState) {
//! use agent::dhcp::DhcpServer;
//! let mut dhcp = DhcpServer::new(); // in the host's netns, on a tokio runtime
//! // After each reconcile: every local port with a lease, by its device.
//! dhcp.set_ports(state.networks.values().flat_map(|net| {
//!     net.local_ports.iter().filter_map(|(id, port)| {
//!         Some((port.device.clone(), net.dhcp_lease(id)?))
//!     })
//! }));
//! // Dropping `dhcp` stops serving.
//! # }
//! ```

pub mod dhcpv6;
pub mod ipv6_server;
pub mod responder;
pub mod router_advert;
pub mod served;
pub mod server;
mod socket;

pub(crate) use socket::send_frame;

pub use ipv6_server::{Ipv6Server, Ipv6Service};
pub use served::{Edits, ServeHints, Served};
pub use server::{DhcpServer, PortStatus};
