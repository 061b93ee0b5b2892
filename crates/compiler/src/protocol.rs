//! The agent wire protocol: the desired state the server streams to each
//! host's agent (a snapshot, then deltas, each tagged with a revision) and what
//! an agent reports back. Plain data with serde; no I/O. Bump
//! [`PROTOCOL_VERSION`] on any change to these types' meaning or shape.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use model::{Ipv6Mode, MacAddr};
use serde::{Deserialize, Serialize};

pub const PROTOCOL_VERSION: u32 = 8;

/// How often an agent re-registers (its heartbeat).
pub const HEARTBEAT_SECONDS: u64 = 2;

/// A host whose agent missed this many heartbeats in a row is dead: its ports
/// go DOWN until it comes back.
pub const MISSED_HEARTBEATS_DEAD: u32 = 3;

/// The header that carries an agent's token, when the server requires one
/// (`vnet server --agent-token`).
pub const AGENT_TOKEN_HEADER: &str = "x-vnet-agent-token";

/// A store revision, as the server's stream tags its messages.
pub type Revision = i64;

/// Everything one host must realise: the networks that have a port bound to
/// it, and the security of its local ports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// By network id.
    pub networks: BTreeMap<String, NetworkSpec>,
    /// Port security of every local port, by port id: every port bound to
    /// the host, whether or not the host carries its network yet (its device
    /// is the one its network's `local_ports` names, once it does).
    #[serde(default)]
    pub port_security: BTreeMap<String, PortSecuritySpec>,
    /// The security groups the local ports with port security enabled use,
    /// by group id; only groups that exist (a port may name one that does
    /// not, yet or any more: it allows nothing).
    #[serde(default)]
    pub security_groups: BTreeMap<String, SecurityGroupSpec>,
    /// Member addresses of every group that a rule above names as its
    /// remote group, by group id: a port joining or leaving the group is one
    /// element added or removed here. The members are the fixed IPs (as /32
    /// or /128) and the address-pair prefixes (truncated to their network) of
    /// every port in the group with port security enabled, bound anywhere or
    /// not bound; IPv4 and IPv6 together (a rule uses those of its ethertype).
    /// Prefixes may overlap.
    #[serde(default)]
    pub remote_groups: BTreeMap<String, BTreeSet<IpNet>>,
    /// The addresses (normalised CIDRs, IPv4 and IPv6 together) of every
    /// address group that a rule above names as its remote, by address group
    /// id: an address added to or removed from the group is one element here.
    /// An address group the cloud does not have (any more) is empty.
    #[serde(default)]
    pub address_groups: BTreeMap<String, BTreeSet<IpNet>>,
    /// The routers with an interface on a network that has a port bound to
    /// this host, by router id: each is realised here whole (distributed
    /// routing), and the host carries every network it has an interface on.
    #[serde(default)]
    pub routers: BTreeMap<String, RouterSpec>,
    /// The floating IPs whose NAT happens on this host, by floating IP id:
    /// those associated with a port bound here, and those whose port
    /// forwardings lead to one (the host of its first forwarding's port).
    /// Their router is one this host holds.
    #[serde(default)]
    pub floating_ips: BTreeMap<String, FloatingIpSpec>,
}

/// A distributed router: the same on every host that holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterSpec {
    /// By interface port id.
    pub interfaces: BTreeMap<String, RouterInterfaceSpec>,
    /// Extra routes (Neutron's `routes`), in the order the router holds them.
    pub routes: Vec<RouteSpec>,
    /// Its uplink to an external (flat) network, if it has one.
    #[serde(default)]
    pub gateway: Option<RouterGatewaySpec>,
    /// The metering labels that apply to it (its project's and the shared
    /// ones), by label id: counted on its uplink.
    #[serde(default)]
    pub metering: BTreeMap<String, MeteringLabelSpec>,
}

/// A metering label as a router counts it: its rules, by rule id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeteringLabelSpec {
    pub rules: BTreeMap<String, MeteringRuleSpec>,
}

/// Which traffic through a router's uplink a label counts (or, `excluded`,
/// keeps from being counted by the label's other rules). Ingress enters by
/// the uplink, egress leaves by it; the prefixes match the packet as the
/// router forwards it (after the DNAT of what comes in, before the SNAT of
/// what goes out). `remote_ip_prefix` is Neutron's: the tenant side (the
/// source of egress, the destination of ingress).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeteringRuleSpec {
    pub direction: RuleDirection,
    pub excluded: bool,
    pub remote_ip_prefix: Option<IpNet>,
    pub source_ip_prefix: Option<IpNet>,
    pub destination_ip_prefix: Option<IpNet>,
}

/// A router's uplink. Every host holding the router joins the external
/// network there (for the floating IPs it holds, and to reach the gateway
/// host); only the gateway host holds the gateway's addresses and runs the
/// default SNAT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterGatewaySpec {
    /// The external network: one the host carries while it holds the router.
    pub network_id: String,
    /// The gateway port (`network:router_gateway`).
    pub port_id: String,
    /// The gateway port's MAC: the gateway host's uplink answers with it, so
    /// that the other hosts' static neighbour entry survives a failover.
    pub mac: MacAddr,
    /// The gateway port's fixed IPs, at their subnets' prefix lengths.
    pub addresses: Vec<IpNet>,
    /// The external subnets' gateway (the upstream router), if they name one:
    /// the IPv4 one if there is one.
    pub nexthop: Option<IpAddr>,
    /// The external IPv6 subnets' gateway, if they name one: IPv6 leaves
    /// unNATed to it (Neutron does not NAT IPv6).
    #[serde(default)]
    pub ipv6_nexthop: Option<IpAddr>,
    pub enable_snat: bool,
    /// The host that runs the default SNAT: a live gateway host (`vnet
    /// agent --gateway`) mapping the external network's physical network,
    /// chosen per router; `None` while there is none.
    pub host: Option<String>,
}

/// A floating IP as the host where its NAT happens sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIpSpec {
    /// The router it is reached through (held by this host).
    pub router_id: String,
    /// Its `network:floatingip` port, reported realised once it is.
    pub port_id: String,
    pub address: IpAddr,
    /// The fixed IP it is associated with (one-to-one NAT), if any.
    pub fixed_ip: Option<IpAddr>,
    /// Its port forwardings, by id.
    pub port_forwardings: BTreeMap<String, PortForwardingSpec>,
}

/// DNAT of (floating IP, protocol, external port) to an internal address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForwardingSpec {
    /// IP protocol number (TCP 6, UDP 17, UDP-Lite 136, SCTP 132).
    pub protocol: u8,
    pub external_port: u16,
    pub internal_ip: IpAddr,
    pub internal_port: u16,
}

/// One router interface: the gateway of its subnets on one network, with
/// the same MAC and addresses on every host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterInterfaceSpec {
    pub network_id: String,
    pub mac: MacAddr,
    /// Its fixed IPs with their subnet's prefix length (`10.0.0.1/24`).
    pub addresses: Vec<IpNet>,
}

/// What a local port may send and which groups filter its traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSecuritySpec {
    /// `false` lifts both anti-spoofing and the security groups.
    pub enabled: bool,
    /// The groups whose rules allow its traffic (none: everything is dropped
    /// but replies, DHCP and neighbour discovery, as in Neutron). Sorted,
    /// unique; empty when disabled.
    pub security_groups: Vec<String>,
    /// Source (MAC, IP or prefix) pairs the port may send from: its MAC with
    /// each fixed IP (as /32 or /128), and its allowed address pairs (prefix
    /// truncated to its network). Sorted, unique; kept when disabled.
    pub allowed_sources: Vec<AllowedSource>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AllowedSource {
    pub mac: MacAddr,
    pub ip: IpNet,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroupSpec {
    /// Stateless groups allow no replies by themselves (Neutron's
    /// `stateful: false`).
    pub stateful: bool,
    /// Sorted by rule id.
    pub rules: Vec<RuleSpec>,
}

/// One rule, normalised: protocols by number, ICMP type/code apart from ports.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RuleSpec {
    /// The Neutron rule id, so a verdict can name the rule that decided it.
    pub id: String,
    pub direction: RuleDirection,
    pub ethertype: RuleEthertype,
    /// IP protocol number; `None` for any.
    pub protocol: Option<u8>,
    /// Destination port range (TCP, UDP, SCTP, DCCP, UDP-Lite), inclusive;
    /// `None` for any port (a rule with a maximum but no minimum included, as
    /// Neutron's drivers read it).
    pub ports: Option<(u16, u16)>,
    /// ICMP/ICMPv6 type and optional code.
    pub icmp: Option<(u8, Option<u8>)>,
    pub remote: RuleRemote,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleDirection {
    Ingress,
    Egress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RuleEthertype {
    IPv4,
    IPv6,
}

/// Whom a rule allows: anyone, a prefix, the members of a group (looked
/// up in `HostState::remote_groups`), or the addresses of an address group
/// (in `HostState::address_groups`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleRemote {
    Any,
    Prefix(IpNet),
    Group(String),
    AddressGroup(String),
}

/// One tenant network as a host carries it: a bridge plus a VXLAN device,
/// or (flat) a bridge enslaving the host's interface of a physical network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// The VXLAN VNI; 0 when flat.
    pub vni: u32,
    pub mtu: u32,
    /// `None`: VXLAN with `vni`. `Some(name)`: flat on the physical network
    /// `name`, which each agent maps to an interface of its own
    /// (`vnet agent --physical-network NAME:IFACE`).
    #[serde(default)]
    pub physical_network: Option<String>,
    /// By subnet id.
    pub subnets: BTreeMap<String, SubnetSpec>,
    /// Ports bound to this host, by port id.
    pub local_ports: BTreeMap<String, LocalPortSpec>,
    /// Ports of this network bound to other hosts, by port id.
    pub remote_ports: BTreeMap<String, RemotePortSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetSpec {
    pub cidr: IpNet,
    pub gateway_ip: Option<IpAddr>,
    pub dns_nameservers: Vec<IpAddr>,
    pub host_routes: Vec<RouteSpec>,
    pub enable_dhcp: bool,
    /// IPv6 only: what the host's router advertisements say of the subnet
    /// (Neutron's `ipv6_ra_mode`); `None`: vnet advertises nothing for it (an
    /// external router may).
    #[serde(default)]
    pub ipv6_ra_mode: Option<Ipv6Mode>,
    /// IPv6 only: how ports get their address (Neutron's
    /// `ipv6_address_mode`); `Dhcpv6Stateful` or `Dhcpv6Stateless` make the
    /// host answer DHCPv6.
    #[serde(default)]
    pub ipv6_address_mode: Option<Ipv6Mode>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub destination: IpNet,
    pub nexthop: IpAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedIpSpec {
    pub subnet_id: String,
    pub ip_address: IpAddr,
}

/// A port whose device is on this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPortSpec {
    pub mac: MacAddr,
    pub fixed_ips: Vec<FixedIpSpec>,
    /// The kernel device that is this port: `tap` + the first 11 characters of
    /// the port id (as Nova names taps), unless the binding names another.
    pub device: String,
    pub admin_state_up: bool,
    /// Its `extra_dhcp_opts` of `ip_version` 4, in the API's order, for
    /// the host's DHCPv4 server (which knows their names). Left out of the
    /// JSON when empty, as for most ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dhcpv4_options: Vec<DhcpOptionSpec>,
    /// The same, of `ip_version` 6, for the host's DHCPv6 server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dhcpv6_options: Vec<DhcpOptionSpec>,
}

/// One of a port's `extra_dhcp_opts`, as the API holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpOptionSpec {
    pub name: String,
    pub value: String,
}

/// A port on another host: where its frames go, and which addresses it answers for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemotePortSpec {
    pub mac: MacAddr,
    pub ips: Vec<IpAddr>,
    /// Underlay IP of the port's host (the VXLAN tunnel endpoint).
    pub vtep: IpAddr,
}

/// What the agent's DHCP server hands one local port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpLease {
    pub mac: MacAddr,
    pub ip: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub dns_nameservers: Vec<IpAddr>,
    /// Sent as classless static routes (option 121).
    pub host_routes: Vec<RouteSpec>,
    pub mtu: u32,
    pub lease_seconds: u32,
    /// The port's own options (`extra_dhcp_opts` of `ip_version` 4), which
    /// the server reads by dnsmasq's names and adds, or puts in place of
    /// its own of the same code.
    pub extra_options: Vec<DhcpOptionSpec>,
}

/// How long a DHCP lease lasts. Addresses never change under a lease (the API
/// owns them), so renewals are cheap and a long lease is safe.
pub const LEASE_SECONDS: u32 = 86_400;

impl NetworkSpec {
    /// Every address on the network with its MAC: the neighbour (ARP/ND)
    /// answers a host gives locally so that no ARP crosses the overlay.
    pub fn neighbours(&self) -> impl Iterator<Item = (IpAddr, MacAddr)> + '_ {
        let local = self
            .local_ports
            .values()
            .flat_map(|p| p.fixed_ips.iter().map(|f| (f.ip_address, p.mac)));
        let remote = self
            .remote_ports
            .values()
            .flat_map(|p| p.ips.iter().map(|ip| (*ip, p.mac)));
        local.chain(remote)
    }

    /// The IPv4 DHCP lease of a local port: its first IPv4 address on a subnet
    /// with DHCP enabled. `None` if it has none (then nothing answers it).
    pub fn dhcp_lease(&self, port_id: &str) -> Option<DhcpLease> {
        let port = self.local_ports.get(port_id)?;
        port.fixed_ips.iter().find_map(|f| {
            let subnet = self.subnets.get(&f.subnet_id)?;
            (f.ip_address.is_ipv4() && subnet.enable_dhcp).then(|| DhcpLease {
                mac: port.mac,
                ip: f.ip_address,
                prefix_len: subnet.cidr.prefix_len(),
                gateway: subnet.gateway_ip,
                dns_nameservers: subnet.dns_nameservers.clone(),
                host_routes: subnet.host_routes.clone(),
                mtu: self.mtu,
                lease_seconds: LEASE_SECONDS,
                extra_options: port.dhcpv4_options.clone(),
            })
        })
    }
}

/// One change to a host's desired state. Applying the changes of a delta, in
/// order, to the state they were computed against gives the new state.
/// Within a delta, a member set (or an address group's addresses) comes
/// before the rules that start naming it and goes after the rules that
/// stopped naming it; a group comes before the
/// port security that starts using it and goes after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// Add the network, or change its VNI/MTU (its subnets and ports stay).
    NetworkUpsert {
        network_id: String,
        vni: u32,
        mtu: u32,
        /// As [`NetworkSpec::physical_network`].
        #[serde(default)]
        physical_network: Option<String>,
    },
    /// Drop the network with everything under it.
    NetworkRemove {
        network_id: String,
    },
    SubnetUpsert {
        network_id: String,
        subnet_id: String,
        spec: SubnetSpec,
    },
    SubnetRemove {
        network_id: String,
        subnet_id: String,
    },
    LocalPortUpsert {
        network_id: String,
        port_id: String,
        spec: LocalPortSpec,
    },
    LocalPortRemove {
        network_id: String,
        port_id: String,
    },
    RemotePortUpsert {
        network_id: String,
        port_id: String,
        spec: RemotePortSpec,
    },
    RemotePortRemove {
        network_id: String,
        port_id: String,
    },
    /// Set (add or replace) the port security of a local port.
    PortSecurityUpsert {
        port_id: String,
        spec: PortSecuritySpec,
    },
    /// The port is no longer local: forget its port security.
    PortSecurityRemove {
        port_id: String,
    },
    /// Add or replace a whole group: its statefulness and all its rules.
    /// Sent when a host starts using a group or its statefulness changes;
    /// a rule change is one rule (below), so a group of N rules costs O(1)
    /// per change, not O(N).
    SecurityGroupUpsert {
        group_id: String,
        spec: SecurityGroupSpec,
    },
    SecurityGroupRemove {
        group_id: String,
    },
    /// Add or replace one rule (by its id) of a group the host holds.
    SecurityGroupRuleUpsert {
        group_id: String,
        rule: RuleSpec,
    },
    /// Remove one rule (by its id) from a group the host holds.
    SecurityGroupRuleRemove {
        group_id: String,
        rule_id: String,
    },
    /// Set (add or replace) a whole remote-group member set: sent when a host
    /// starts needing it; afterwards it changes one element at a time.
    RemoteGroupUpsert {
        group_id: String,
        members: BTreeSet<IpNet>,
    },
    RemoteGroupRemove {
        group_id: String,
    },
    /// One address joins a member set the host has.
    RemoteGroupMemberAdd {
        group_id: String,
        member: IpNet,
    },
    /// One address leaves a member set the host has.
    RemoteGroupMemberRemove {
        group_id: String,
        member: IpNet,
    },
    /// Set (add or replace) the whole address list of an address group:
    /// sent when a host starts needing it; afterwards it changes one address
    /// at a time.
    AddressGroupUpsert {
        address_group_id: String,
        addresses: BTreeSet<IpNet>,
    },
    AddressGroupRemove {
        address_group_id: String,
    },
    /// One address joins an address group the host has.
    AddressGroupAddressAdd {
        address_group_id: String,
        address: IpNet,
    },
    /// One address leaves an address group the host has.
    AddressGroupAddressRemove {
        address_group_id: String,
        address: IpNet,
    },
    /// Add or replace a whole router (it is small: its interfaces and routes).
    RouterUpsert {
        router_id: String,
        spec: RouterSpec,
    },
    RouterRemove {
        router_id: String,
    },
    /// Add or replace a floating IP whose NAT happens on this host.
    FloatingIpUpsert {
        floating_ip_id: String,
        spec: FloatingIpSpec,
    },
    FloatingIpRemove {
        floating_ip_id: String,
    },
}

impl HostState {
    /// Apply one change. Changes naming a network or a member set the state
    /// does not have (other than the upserts) are ignored: they cannot occur
    /// in a well-formed stream, and ignoring them keeps `apply` total.
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::NetworkUpsert {
                network_id,
                vni,
                mtu,
                physical_network,
            } => {
                let net = self
                    .networks
                    .entry(network_id)
                    .or_insert_with(|| NetworkSpec {
                        vni,
                        mtu,
                        physical_network: physical_network.clone(),
                        subnets: BTreeMap::new(),
                        local_ports: BTreeMap::new(),
                        remote_ports: BTreeMap::new(),
                    });
                net.vni = vni;
                net.mtu = mtu;
                net.physical_network = physical_network;
            }
            Change::NetworkRemove { network_id } => {
                self.networks.remove(&network_id);
            }
            Change::SubnetUpsert {
                network_id,
                subnet_id,
                spec,
            } => {
                if let Some(net) = self.networks.get_mut(&network_id) {
                    net.subnets.insert(subnet_id, spec);
                }
            }
            Change::SubnetRemove {
                network_id,
                subnet_id,
            } => {
                if let Some(net) = self.networks.get_mut(&network_id) {
                    net.subnets.remove(&subnet_id);
                }
            }
            Change::LocalPortUpsert {
                network_id,
                port_id,
                spec,
            } => {
                if let Some(net) = self.networks.get_mut(&network_id) {
                    net.local_ports.insert(port_id, spec);
                }
            }
            Change::LocalPortRemove {
                network_id,
                port_id,
            } => {
                if let Some(net) = self.networks.get_mut(&network_id) {
                    net.local_ports.remove(&port_id);
                }
            }
            Change::RemotePortUpsert {
                network_id,
                port_id,
                spec,
            } => {
                if let Some(net) = self.networks.get_mut(&network_id) {
                    net.remote_ports.insert(port_id, spec);
                }
            }
            Change::RemotePortRemove {
                network_id,
                port_id,
            } => {
                if let Some(net) = self.networks.get_mut(&network_id) {
                    net.remote_ports.remove(&port_id);
                }
            }
            Change::PortSecurityUpsert { port_id, spec } => {
                self.port_security.insert(port_id, spec);
            }
            Change::PortSecurityRemove { port_id } => {
                self.port_security.remove(&port_id);
            }
            Change::SecurityGroupUpsert { group_id, spec } => {
                self.security_groups.insert(group_id, spec);
            }
            Change::SecurityGroupRemove { group_id } => {
                self.security_groups.remove(&group_id);
            }
            // A group's rules are kept sorted by id: a rule is found by binary search.
            Change::SecurityGroupRuleUpsert { group_id, rule } => {
                if let Some(group) = self.security_groups.get_mut(&group_id) {
                    match group.rules.binary_search_by(|r| r.id.cmp(&rule.id)) {
                        Ok(at) => group.rules[at] = rule,
                        Err(at) => group.rules.insert(at, rule),
                    }
                }
            }
            Change::SecurityGroupRuleRemove { group_id, rule_id } => {
                if let Some(group) = self.security_groups.get_mut(&group_id)
                    && let Ok(at) = group.rules.binary_search_by(|r| r.id.cmp(&rule_id))
                {
                    group.rules.remove(at);
                }
            }
            Change::RemoteGroupUpsert { group_id, members } => {
                self.remote_groups.insert(group_id, members);
            }
            Change::RemoteGroupRemove { group_id } => {
                self.remote_groups.remove(&group_id);
            }
            Change::RemoteGroupMemberAdd { group_id, member } => {
                if let Some(members) = self.remote_groups.get_mut(&group_id) {
                    members.insert(member);
                }
            }
            Change::RemoteGroupMemberRemove { group_id, member } => {
                if let Some(members) = self.remote_groups.get_mut(&group_id) {
                    members.remove(&member);
                }
            }
            Change::AddressGroupUpsert {
                address_group_id,
                addresses,
            } => {
                self.address_groups.insert(address_group_id, addresses);
            }
            Change::AddressGroupRemove { address_group_id } => {
                self.address_groups.remove(&address_group_id);
            }
            Change::AddressGroupAddressAdd {
                address_group_id,
                address,
            } => {
                if let Some(addresses) = self.address_groups.get_mut(&address_group_id) {
                    addresses.insert(address);
                }
            }
            Change::AddressGroupAddressRemove {
                address_group_id,
                address,
            } => {
                if let Some(addresses) = self.address_groups.get_mut(&address_group_id) {
                    addresses.remove(&address);
                }
            }
            Change::RouterUpsert { router_id, spec } => {
                self.routers.insert(router_id, spec);
            }
            Change::RouterRemove { router_id } => {
                self.routers.remove(&router_id);
            }
            Change::FloatingIpUpsert {
                floating_ip_id,
                spec,
            } => {
                self.floating_ips.insert(floating_ip_id, spec);
            }
            Change::FloatingIpRemove { floating_ip_id } => {
                self.floating_ips.remove(&floating_ip_id);
            }
        }
    }
}

/// One message of the server → agent stream (newline-delimited JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamMessage {
    /// The whole state at `revision`: replaces whatever the agent had.
    Snapshot {
        revision: Revision,
        state: HostState,
    },
    /// Changes that take the state from the previous message's revision to this one.
    Delta {
        revision: Revision,
        changes: Vec<Change>,
    },
    /// Nothing changed for this host up to `revision` (keeps the stream alive
    /// and lets the agent resume from a recent revision).
    Idle { revision: Revision },
}

/// What an agent says about its host when it starts and on every heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRegistration {
    pub protocol_version: u32,
    pub name: String,
    /// The host's VXLAN tunnel endpoint address.
    pub underlay_ip: IpAddr,
    pub capabilities: Vec<String>,
    /// The physical networks this host maps to an interface (names only:
    /// which interface is the agent's own business). A port of a flat
    /// network binds only to a host that maps its physical network.
    #[serde(default)]
    pub physical_networks: Vec<String>,
    /// This host may run default SNAT for routers (`vnet agent --gateway`).
    #[serde(default)]
    pub gateway: bool,
    /// Its availability zone (`vnet agent --availability-zone`); routers
    /// with zone hints take gateway hosts of those zones only.
    #[serde(default = "default_zone")]
    pub availability_zone: String,
}

/// Neutron's default availability zone, for hosts that name none.
pub const DEFAULT_ZONE: &str = "nova";

fn default_zone() -> String {
    DEFAULT_ZONE.to_owned()
}

/// The agent's account of its local ports: the ids it has wired. Ports it
/// should have but does not list are not wired (DOWN).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatusReport {
    pub revision: Revision,
    pub wired: Vec<String>,
}

/// The device of a port: Nova's tap naming rule.
pub fn tap_name(port_id: &str) -> String {
    let prefix: String = port_id.chars().take(11).collect();
    format!("tap{prefix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    #[test]
    fn deltas_applied_in_order_rebuild_the_state() {
        let mut s = HostState::default();
        s.apply(Change::NetworkUpsert {
            network_id: "n".into(),
            vni: 7,
            mtu: 1450,
            physical_network: None,
        });
        s.apply(Change::SubnetUpsert {
            network_id: "n".into(),
            subnet_id: "s".into(),
            spec: SubnetSpec {
                cidr: "10.0.0.0/24".parse().unwrap(),
                gateway_ip: Some("10.0.0.1".parse().unwrap()),
                dns_nameservers: vec![],
                host_routes: vec![],
                enable_dhcp: true,
                ipv6_ra_mode: None,
                ipv6_address_mode: None,
            },
        });
        s.apply(Change::LocalPortUpsert {
            network_id: "n".into(),
            port_id: "p".into(),
            spec: LocalPortSpec {
                mac: mac("fa:16:3e:00:00:01"),
                fixed_ips: vec![FixedIpSpec {
                    subnet_id: "s".into(),
                    ip_address: "10.0.0.5".parse().unwrap(),
                }],
                device: tap_name("p"),
                admin_state_up: true,
                dhcpv4_options: vec![],
                dhcpv6_options: vec![],
            },
        });
        s.apply(Change::RemotePortUpsert {
            network_id: "n".into(),
            port_id: "q".into(),
            spec: RemotePortSpec {
                mac: mac("fa:16:3e:00:00:02"),
                ips: vec!["10.0.0.6".parse().unwrap()],
                vtep: "192.0.2.2".parse().unwrap(),
            },
        });
        let net = &s.networks["n"];
        assert_eq!(net.neighbours().count(), 2);
        let lease = net.dhcp_lease("p").unwrap();
        assert_eq!(
            (lease.ip.to_string(), lease.prefix_len, lease.mtu),
            ("10.0.0.5".into(), 24, 1450)
        );
        assert!(
            net.dhcp_lease("q").is_none(),
            "remote ports get no lease here"
        );

        // JSON round trip of a stream message.
        let msg = StreamMessage::Snapshot {
            revision: 3,
            state: s.clone(),
        };
        let text = serde_json::to_string(&msg).unwrap();
        assert_eq!(serde_json::from_str::<StreamMessage>(&text).unwrap(), msg);

        s.apply(Change::NetworkRemove {
            network_id: "n".into(),
        });
        assert!(s.networks.is_empty());
    }

    #[test]
    fn member_sets_change_one_element_at_a_time() {
        let net = |s: &str| -> IpNet { s.parse().unwrap() };
        let mut s = HostState::default();
        let changes = vec![
            Change::RemoteGroupUpsert {
                group_id: "g".into(),
                members: [net("10.0.0.5/32")].into(),
            },
            Change::RemoteGroupMemberAdd {
                group_id: "g".into(),
                member: net("10.0.1.0/24"),
            },
            Change::RemoteGroupMemberRemove {
                group_id: "g".into(),
                member: net("10.0.0.5/32"),
            },
            // A set the host does not have: ignored.
            Change::RemoteGroupMemberAdd {
                group_id: "other".into(),
                member: net("10.0.0.9/32"),
            },
            Change::SecurityGroupUpsert {
                group_id: "g".into(),
                spec: SecurityGroupSpec {
                    stateful: true,
                    rules: vec![RuleSpec {
                        id: "r".into(),
                        direction: RuleDirection::Ingress,
                        ethertype: RuleEthertype::IPv4,
                        protocol: Some(6),
                        ports: Some((22, 22)),
                        icmp: None,
                        remote: RuleRemote::Group("g".into()),
                    }],
                },
            },
            Change::PortSecurityUpsert {
                port_id: "p".into(),
                spec: PortSecuritySpec {
                    enabled: true,
                    security_groups: vec!["g".into()],
                    allowed_sources: vec![AllowedSource {
                        mac: mac("fa:16:3e:00:00:01"),
                        ip: net("10.0.0.5/32"),
                    }],
                },
            },
        ];
        for change in changes.clone() {
            // Every change survives JSON.
            let text = serde_json::to_string(&change).unwrap();
            assert_eq!(serde_json::from_str::<Change>(&text).unwrap(), change);
            s.apply(change);
        }
        assert_eq!(
            s.remote_groups,
            BTreeMap::from([("g".to_owned(), BTreeSet::from([net("10.0.1.0/24")]))])
        );
        assert_eq!(s.security_groups["g"].rules.len(), 1);
        assert!(s.port_security["p"].enabled);
        for change in [
            Change::PortSecurityRemove {
                port_id: "p".into(),
            },
            Change::SecurityGroupRemove {
                group_id: "g".into(),
            },
            Change::RemoteGroupRemove {
                group_id: "g".into(),
            },
        ] {
            s.apply(change);
        }
        assert_eq!(s, HostState::default());
    }

    /// Version 8's fields are optional: version 7's messages (the fuzz
    /// corpus's first inputs) still read, and the new ones read back.
    #[test]
    fn the_fuzz_corpus_streams_read_and_version_8_fields_round_trip() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus/agent_protocol");
        let mut streams = Vec::new();
        for entry in std::fs::read_dir(corpus).unwrap() {
            let input = std::fs::read(entry.unwrap().path()).unwrap();
            // The target's first byte picks the decoder, as the target does.
            if input.first().is_none_or(|which| which % 3 != 0) {
                continue; // a registration or a status report
            }
            let mut state = HostState::default();
            for line in input[1..].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                match serde_json::from_slice::<StreamMessage>(line).unwrap() {
                    StreamMessage::Snapshot { state: s, .. } => state = s,
                    StreamMessage::Delta { changes, .. } => {
                        changes.into_iter().for_each(|c| state.apply(c));
                    }
                    StreamMessage::Idle { .. } => {}
                }
            }
            streams.push(state);
        }
        let state = streams
            .iter()
            .find(|s| {
                s.routers
                    .values()
                    .any(|r| r.gateway.as_ref().is_some_and(|g| g.ipv6_nexthop.is_some()))
            })
            .expect("the input with version 8's fields");
        let network = &state.networks["a831667c-bbba-40e2-aeef-42402724143c"];
        let port = &network.local_ports["83523da2-54f8-42b5-8889-415b03424970"];
        assert_eq!(port.dhcpv6_options.len(), 2);
        let gateway = state.routers["955e0be8-aad1-4ea7-992b-2a1eaef0b460"]
            .gateway
            .clone()
            .unwrap();
        assert_eq!(gateway.ipv6_nexthop, Some("2001:db8:e::1".parse().unwrap()));
        let text = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<HostState>(&text).unwrap(), *state);
    }

    #[test]
    fn taps_are_named_as_nova_names_them() {
        assert_eq!(
            tap_name("2edab4ec-d2b5-40f2-b37c-da8d89eb9259"),
            "tap2edab4ec-d2"
        );
        assert!(
            tap_name("2edab4ec-d2b5-40f2-b37c-da8d89eb9259").len() <= 15,
            "IFNAMSIZ"
        );
    }
}
