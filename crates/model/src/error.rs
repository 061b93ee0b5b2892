//! The model's one error type. Each variant is a distinct reason a request is
//! refused; the API maps them to Neutron's error types and HTTP status codes.

use crate::resource::Kind;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// Malformed or contradictory input (400).
    #[error("Invalid input for operation: {0}.")]
    InvalidInput(String),
    /// A request naming another project without being an admin (400).
    #[error(
        "Specifying 'project_id' or 'tenant_id' other than the authenticated project in request requires admin privileges"
    )]
    ForeignProject,
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Unknown id, or an id the caller may not see (404).
    #[error("{} {id} could not be found.", kind.title())]
    NotFound { kind: Kind, id: String },
    /// A quota update with `check_limit` below what the project uses (400).
    #[error(
        "Quota limit {limit} for {resource} must be greater than or equal to already used {used}"
    )]
    QuotaBelowUsage {
        resource: String,
        limit: i64,
        used: usize,
    },
    #[error("Default security group rule already exists. Rule id is {id}.")]
    DefaultSecurityGroupRuleExists { id: String },
    #[error("A default external network already exists: {id}.")]
    DefaultExternalNetworkExists { id: String },
    #[error("Deployment error: {reason}.")]
    AutoAllocationFailure { reason: String },
    #[error("Subnet service type {service_type} does not correspond to a valid device owner.")]
    InvalidSubnetServiceType { service_type: String },
    #[error(
        "No valid service subnet for the given device owner, network {network_id}, service type {service_type}."
    )]
    IpAddressGenerationFailureNoMatchingSubnet {
        network_id: String,
        service_type: String,
    },
    /// `If-Match: revision_number=N` did not hold (412).
    #[error("Constrained to {expected}, but current revision is {current}")]
    RevisionMismatch { expected: i64, current: u64 },
    #[error("IP address {ip} already allocated in subnet {subnet_id}")]
    IpAddressAlreadyAllocated { ip: String, subnet_id: String },
    #[error("No more IP addresses available on network {network_id}.")]
    IpAddressGenerationFailure { network_id: String },
    #[error("IP address {ip} is not a valid IP for the specified subnet.")]
    InvalidIpForSubnet { ip: String },
    #[error("IP address {ip} is not a valid IP for any of the subnets on the specified network.")]
    InvalidIpForNetwork { ip: String },
    #[error("The allocation pool {pool} is not valid.")]
    InvalidAllocationPool { pool: String },
    #[error("The allocation pool {pool} spans beyond the subnet cidr {cidr}.")]
    OutOfBoundsAllocationPool { pool: String, cidr: String },
    #[error("Found overlapping allocation pools: {first} and {second} for subnet {cidr}.")]
    OverlappingAllocationPools {
        first: String,
        second: String,
        cidr: String,
    },
    #[error(
        "Unable to complete operation for network {network_id}. The mac address {mac} is in use."
    )]
    MacAddressInUse { network_id: String, mac: String },
    #[error(
        "Unable to complete operation on network {id}. There are one or more ports still in use on the network, id for these ports is: {}.",
        ports.join(",")
    )]
    NetworkInUse { id: String, ports: Vec<String> },
    #[error(
        "Unable to complete operation on subnet {id}: One or more ports have an IP allocation from this subnet."
    )]
    SubnetInUse { id: String },
    #[error("Gateway ip {gateway} conflicts with allocation pool {pool}.")]
    GatewayConflictWithAllocationPools { gateway: String, pool: String },
    #[error("Security Group {id} in use.")]
    SecurityGroupInUse { id: String },
    #[error("Insufficient rights for removing default security group.")]
    SecurityGroupCannotRemoveDefault,
    #[error("Updating default security group not allowed.")]
    SecurityGroupCannotUpdateDefault,
    #[error("Security group rule already exists. Rule id is {id}.")]
    SecurityGroupRuleExists { id: String },
    #[error(
        "Only one of remote_ip_prefix or remote_group_id or remote_address_group_id may be provided."
    )]
    SecurityGroupMultipleRemoteEntites,
    #[error("Address group {id} is in use on one or more security group rules.")]
    AddressGroupInUse { id: String },
    /// `addresses`: as Neutron lists them, a Python list.
    #[error("Addresses {addresses} already exist in the address group {id}.")]
    AddressesAlreadyExist { addresses: String, id: String },
    #[error("Addresses {addresses} not found in the address group {id}.")]
    AddressesNotFound { addresses: String, id: String },
    #[error("Conflicting value ethertype {ethertype} for CIDR {cidr}")]
    SecurityGroupRuleParameterConflict { ethertype: String, cidr: String },
    #[error(
        "Invalid protocol {protocol} for port range, only supported for TCP, UDP, UDPLITE, SCTP and DCCP."
    )]
    InvalidProtocolForPortRange { protocol: String },
    #[error(
        "ICMP code (port-range-max) {code} is provided but ICMP type (port-range-min) is missing."
    )]
    SecurityGroupMissingIcmpType { code: u32 },
    #[error("Must also specify protocol if port range is given.")]
    SecurityGroupProtocolRequiredWithPorts,
    #[error("For TCP/UDP protocols, port_range_min must be <= port_range_max")]
    SecurityGroupInvalidPortRange,
    #[error("Invalid value for port {port}.")]
    SecurityGroupInvalidPortValue { port: u32 },
    #[error("Invalid value for ICMP {field} (port-range-{bound}): {value}. It must be 0 to 255.")]
    SecurityGroupInvalidIcmpValue {
        field: String,
        bound: String,
        value: u32,
    },
    #[error(
        "Port has security group associated. Cannot disable port security or ip address until security group is removed."
    )]
    PortSecurityPortHasSecurityGroup,
    #[error("Port Security must be enabled in order to have allowed address pairs on a port.")]
    AddressPairAndPortSecurityRequired,
    #[error(
        "Port security must be enabled and port must have an IP address in order to use security groups."
    )]
    PortSecurityAndIPRequiredForSecurityGroups,
    #[error(
        "Unable to complete operation on port {id}, port is already bound, port type: {vif_type}, old_mac {old_mac}, new_mac {new_mac}."
    )]
    PortBound {
        id: String,
        vif_type: String,
        old_mac: String,
        new_mac: String,
    },
    #[error("Unable to create the network. The tunnel ID {id} is in use.")]
    TunnelIdInUse { id: u32 },
    #[error("Unable to create the flat network. Physical network {physical_network} is in use.")]
    FlatNetworkInUse { physical_network: String },
    #[error("Unable to create the network. No tenant network is available for allocation.")]
    NoNetworkAvailable,
    #[error("Unable to generate unique mac on network {network_id}.")]
    MacAddressGenerationFailure { network_id: String },
    #[error("Default security group already exists.")]
    SecurityGroupDefaultAlreadyExists,
    #[error("Tag {tag} could not be found.")]
    TagNotFound { tag: String },
    /// A router or floating IP request that cannot be honoured as asked (400).
    #[error("Bad {resource} request: {message}.")]
    BadRequest {
        resource: &'static str,
        message: String,
    },
    #[error(
        "External network {id} cannot be updated to be made non-external, since it has existing gateway ports."
    )]
    ExternalNetworkInUse { id: String },
    #[error("Router {id} still has ports")]
    RouterInUse { id: String },
    #[error("Router {router_id} does not have an interface with id {port_id}")]
    RouterInterfaceNotFound { router_id: String, port_id: String },
    #[error("Router {router_id} has no interface on subnet {subnet_id}")]
    RouterInterfaceNotFoundForSubnet {
        router_id: String,
        subnet_id: String,
    },
    #[error(
        "Router interface for subnet {subnet_id} on router {router_id} cannot be deleted, as it is required by one or more {by}."
    )]
    RouterInterfaceInUse {
        router_id: String,
        subnet_id: String,
        /// "floating IPs" or "routes".
        by: &'static str,
    },
    #[error(
        "Gateway cannot be updated for router {router_id}, since a gateway to external network {network_id} is required by one or more floating IPs."
    )]
    RouterExternalGatewayInUseByFloatingIp {
        router_id: String,
        network_id: String,
    },
    #[error(
        "External network {network_id} is not reachable from subnet {subnet_id}.  Therefore, cannot associate Port {port_id} with a Floating IP."
    )]
    ExternalGatewayForFloatingIpNotFound {
        network_id: String,
        subnet_id: String,
        port_id: String,
    },
    #[error(
        "Cannot associate floating IP {floating_ip} ({fip_id}) with port {port_id} using fixed IP {fixed_ip}, as that fixed IP already has a floating IP on external network {network_id}."
    )]
    FloatingIpPortAlreadyAssociated {
        floating_ip: String,
        fip_id: String,
        port_id: String,
        fixed_ip: String,
        network_id: String,
    },
    #[error(
        "Port {port_id} has owner {device_owner} and therefore cannot be deleted directly via the port API."
    )]
    L3PortInUse {
        port_id: String,
        device_owner: String,
    },
    #[error(
        "Unable to complete operation on port {port_id} for network {network_id}. Port already has an attached device {device_id}."
    )]
    PortInUse {
        port_id: String,
        network_id: String,
        device_id: String,
    },
    #[error("Invalid format for routes: {routes}, {reason}")]
    InvalidRoutes { routes: String, reason: String },
    #[error(
        "Unable to complete operation for {router_id}. The number of routes exceeds the maximum {max}."
    )]
    RoutesExhausted { router_id: String, max: usize },
    #[error(
        "Unable to complete operation for {subnet_id}. The number of DNS nameservers exceeds the limit {max}."
    )]
    DnsNameServersExhausted { subnet_id: String, max: usize },
    #[error(
        "Unable to complete operation for {subnet_id}. The number of host routes exceeds the limit {max}."
    )]
    HostRoutesExhausted { subnet_id: String, max: usize },
    #[error("The number of allowed address pair exceeds the maximum {max}.")]
    AllowedAddressPairExhausted { max: usize },
    #[error("Port Forwarding {id} could not be found.")]
    PortForwardingNotFound { id: String },
    /// A metering label rule Neutron's metering plugin refuses (400).
    #[error("{0}")]
    MeteringInvalid(String),
    #[error("Metering label rule with remote_ip_prefix '{prefix}' overlaps another.")]
    MeteringLabelRuleOverlaps { prefix: String },
    #[error("Quota exceeded for resources: ['{resource}'].")]
    OverQuota { resource: &'static str },
    #[error("Empty subnet pool prefix list.")]
    EmptySubnetPoolPrefixList,
    #[error("Cannot mix IPv4 and IPv6 prefixes in a subnet pool.")]
    PrefixVersionMismatch,
    #[error(
        "Illegal prefix bounds: {prefix_type}={prefixlen}, {base_prefix_type}={base_prefixlen}."
    )]
    IllegalSubnetPoolPrefixBounds {
        prefix_type: &'static str,
        prefixlen: u32,
        base_prefix_type: &'static str,
        base_prefixlen: u32,
    },
    #[error("Illegal update to prefixes: {msg}.")]
    IllegalSubnetPoolPrefixUpdate { msg: String },
    /// No room in the pool, or the asked CIDR is not free in it.
    #[error("Failed to allocate subnet: {reason}.")]
    SubnetAllocationError { reason: String },
    #[error(
        "Unable to allocate subnet with prefix length {prefixlen}, minimum allowed prefix is {min_prefixlen}."
    )]
    MinPrefixSubnetAllocationError { prefixlen: u32, min_prefixlen: u8 },
    #[error(
        "Unable to allocate subnet with prefix length {prefixlen}, maximum allowed prefix is {max_prefixlen}."
    )]
    MaxPrefixSubnetAllocationError { prefixlen: u32, max_prefixlen: u8 },
    #[error("Unable to delete subnet pool: {reason}.")]
    SubnetPoolDeleteError { reason: String },
    #[error("Per-project subnet pool prefix quota exceeded.")]
    SubnetPoolQuotaExceeded,
    #[error("Subnets hosted on the same network must be allocated from the same subnet pool.")]
    NetworkSubnetPoolAffinityError,
    #[error("An RBAC policy already exists with those values.")]
    DuplicateRbacPolicy,
    #[error(
        "RBAC policy on object {object_id} cannot be removed because other objects depend on it.\nDetails: {details}"
    )]
    RbacPolicyInUse { object_id: String, details: String },
    #[error(
        "Invalid input for operation: Invalid action '{action}' for object type '{object_type}'. Valid actions: {valid}."
    )]
    InvalidActionForType {
        action: String,
        object_type: &'static str,
        /// As Neutron prints its tuple: `('access_as_shared',)`.
        valid: String,
    },
    #[error(
        "Unable to reconfigure sharing settings for network {network}. Multiple projects are using it."
    )]
    InvalidSharedSetting { network: String },
}

impl ModelError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        ModelError::InvalidInput(msg.into())
    }

    pub fn bad_router(message: impl Into<String>) -> Self {
        ModelError::BadRequest {
            resource: "router",
            message: message.into(),
        }
    }

    pub fn bad_subnet(message: impl Into<String>) -> Self {
        ModelError::BadRequest {
            resource: "subnets",
            message: message.into(),
        }
    }

    pub fn bad_floating_ip(message: impl Into<String>) -> Self {
        ModelError::BadRequest {
            resource: "floatingip",
            message: message.into(),
        }
    }

    pub fn not_found(kind: Kind, id: &str) -> Self {
        ModelError::NotFound {
            kind,
            id: id.to_owned(),
        }
    }
}
