//! `GET /v2.0/extensions`: exactly the Neutron API extensions vnet implements,
//! under Neutron's aliases (neutron_lib/api/definitions/*.py), so clients that
//! probe for a feature find it only where it works.

use axum::Json;
use axum::extract::Path;
use serde_json::{Value, json};

use crate::error::ApiError;

/// (alias, name, description)
const EXTENSIONS: [(&str, &str, &str); 61] = [
    ("address-group", "Address group", "Support address group"),
    ("agent", "agent", "The agent management extension."),
    (
        "allowed-address-pairs",
        "Allowed Address Pairs",
        "Provides allowed address pairs",
    ),
    (
        "auto-allocated-topology",
        "Auto Allocated Topology Services",
        "Auto Allocated Topology Services.",
    ),
    (
        "availability_zone",
        "Availability Zone",
        "The availability zone extension.",
    ),
    (
        "availability_zone_filter",
        "Availability Zone Filter Extension",
        "Add filter parameters to AvailabilityZone resource",
    ),
    (
        "binding",
        "Port Binding",
        "Expose port bindings of a virtual port to external application",
    ),
    (
        "default-subnetpools",
        "Default Subnetpools",
        "Provides ability to mark and use a subnetpool as the default.",
    ),
    (
        "dvr",
        "Distributed Virtual Router",
        "Enables configuration of Distributed Virtual Routers.",
    ),
    (
        "empty-string-filtering",
        "Empty String Filtering Extension",
        "Allow filtering by attributes with empty string value",
    ),
    (
        "expose-port-forwarding-in-fip",
        "Expose port forwardings in floating IPs",
        "Expose on floating IPs their port forwardings",
    ),
    (
        "ext-gw-mode",
        "Neutron L3 Configurable external gateway mode",
        "Extension of the router abstraction for specifying whether SNAT should occur on the external gateway",
    ),
    (
        "external-net",
        "Neutron external network",
        "Adds external network attribute to network resource.",
    ),
    (
        "extra_dhcp_opt",
        "Neutron Extra DHCP options",
        "Extra options configuration for DHCP. For example PXE boot options to DHCP clients can be specified (e.g. tftp-server, server-ip-address, bootfile-name)",
    ),
    (
        "extraroute",
        "Neutron Extra Route",
        "Extra routes configuration for L3 router",
    ),
    (
        "extraroute-atomic",
        "Atomically add/remove extra routes",
        "Edit extra routes of a router on server side by atomically adding/removing extra routes",
    ),
    (
        "filter-validation",
        "Filter parameters validation",
        "Provides validation on filter parameters.",
    ),
    (
        "fip-port-details",
        "Floating IP Port Details Extension",
        "Add port_details attribute to Floating IP resource",
    ),
    (
        "floating-ip-port-forwarding",
        "Floating IP Port Forwarding",
        "Provide a way to configure port forwarding on Floating IP",
    ),
    (
        "floating-ip-port-forwarding-description",
        "Floating IP Port Forwarding new attribute description",
        "Add a description field to Port Forwarding rules",
    ),
    (
        "floating-ip-port-forwarding-detail",
        "Floating IP port forwarding detail",
        "Allow list floating ip return more port forwarding data, include'id' and 'internal_port_id'",
    ),
    (
        "floatingip-pools",
        "Floating IP Pools",
        "Provides a floating IP pools API.",
    ),
    (
        "ip-substring-filtering",
        "IP address substring filtering",
        "Provides IP address substring filtering when listing ports",
    ),
    (
        "metering",
        "Neutron Metering",
        "Neutron Metering extension.",
    ),
    (
        "metering_source_and_destination_fields",
        "Neutron Metering with source and destination filtering",
        "Neutron Metering extension that enables the use of source and destination IP prefixes to create metering label rules.",
    ),
    (
        "net-mtu",
        "Network MTU",
        "Provides MTU attribute for a network resource.",
    ),
    (
        "net-mtu-writable",
        "Network MTU (writable)",
        "Provides a writable MTU attribute for a network resource.",
    ),
    (
        "network-ip-availability",
        "Network IP Availability",
        "Provides IP availability data for each network and subnet.",
    ),
    (
        "network_availability_zone",
        "Network Availability Zone",
        "Availability zone support for network.",
    ),
    (
        "pagination",
        "Pagination support",
        "Extension that indicates that pagination is enabled.",
    ),
    (
        "port-mac-address-regenerate",
        "Neutron Port MAC address regenerate",
        "Network port MAC address regenerate",
    ),
    ("port-security", "Port Security", "Provides port security"),
    (
        "project-id",
        "project_id field enabled",
        "Extension that indicates that project_id field is enabled.",
    ),
    (
        "provider",
        "Provider Network",
        "Expose mapping of virtual networks to physical networks",
    ),
    (
        "quota-check-limit",
        "Quota engine limit check",
        "Support for checking the resource usage before applying a new quota limit",
    ),
    (
        "quota_details",
        "Quota details management support",
        "Expose functions for quotas usage statistics per project",
    ),
    (
        "quotas",
        "Quota management support",
        "Expose functions for quotas management per project",
    ),
    (
        "rbac-policies",
        "RBAC Policies",
        "Allows creation and modification of policies that control project access to resources.",
    ),
    (
        "rbac-security-groups",
        "Add security_group type to network RBAC",
        "Add security_group type to network RBAC",
    ),
    (
        "rbac-subnetpool",
        "Add subnetpool type to RBAC",
        "Add subnetpool type to RBAC",
    ),
    (
        "revision-if-match",
        "If-Match constraints based on revision_number",
        "Extension indicating that If-Match based on revision_number is supported.",
    ),
    (
        "router",
        "Neutron L3 Router",
        "Router abstraction for basic L3 forwarding between L2 Neutron networks and access to external networks via a NAT gateway.",
    ),
    (
        "router_availability_zone",
        "Router Availability Zone",
        "Availability zone support for router.",
    ),
    (
        "security-group",
        "security-group",
        "The security groups extension.",
    ),
    (
        "security-groups-default-rules",
        "Default rules for security groups",
        "Configure set of security group rules used as default rules for every new security group",
    ),
    (
        "security-groups-normalized-cidr",
        "Security group rule normalized CIDR",
        "Add new field with normalized remote_ip_prefix cidr in SG rule",
    ),
    (
        "security-groups-remote-address-group",
        "Remote address group id field for security group rules",
        "Add new field of remote address group id in SG rules",
    ),
    (
        "security-groups-rules-belongs-to-default-sg",
        "Security group rule belongs to the project's default security group",
        "Flag to determine if the security group rule belongs to the project's default security group",
    ),
    (
        "security-groups-shared-filtering",
        "Security group filtering on the shared field",
        "Support security group filtering on the shared field",
    ),
    (
        "service-type",
        "Service Type Management",
        "API for retrieving service providers for Neutron advanced services",
    ),
    (
        "sorting",
        "Sorting support",
        "Extension that indicates that sorting is enabled.",
    ),
    (
        "standard-attr-description",
        "standard-attr-description",
        "Extension to add descriptions to standard attributes",
    ),
    (
        "standard-attr-revisions",
        "Resource revision numbers",
        "This extension will display the revision number of neutron resources.",
    ),
    (
        "standard-attr-tag",
        "Tag support for resources with standard attribute: subnet, trunk, network_segment_range, router, network, policy, subnetpool, port, security_group, floatingip",
        "Enables to set tag on resources with standard attribute.",
    ),
    (
        "standard-attr-timestamp",
        "Resource timestamps",
        "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes.",
    ),
    (
        "stateful-security-group",
        "Stateful security group",
        "Indicates if the security group is stateful or not",
    ),
    (
        "subnet-service-types",
        "Subnet service types",
        "Provides ability to set the subnet service_types field",
    ),
    (
        "subnet_allocation",
        "Subnet Allocation",
        "Enables allocation of subnets from a subnet pool",
    ),
    (
        "subnetpool-prefix-ops",
        "Subnet Pool Prefix Operations",
        "Provides support for adjusting the prefix list of subnet pools",
    ),
    ("tag", "Tag support", "Enables to set tag on resources."),
    (
        "tag-ports-during-bulk-creation",
        "Tag Ports During Bulk Creation",
        "Allow to tag ports during bulk creation",
    ),
];

fn view((alias, name, description): (&str, &str, &str)) -> Value {
    json!({"alias": alias, "name": name, "description": description,
           "updated": "2026-11-21T00:00:00-00:00", "links": []})
}

pub async fn list() -> Json<Value> {
    Json(json!({"extensions": EXTENSIONS.iter().copied().map(view).collect::<Vec<_>>()}))
}

pub async fn show(Path(alias): Path<String>) -> Result<Json<Value>, ApiError> {
    EXTENSIONS
        .iter()
        .copied()
        .find(|(a, _, _)| *a == alias)
        .map(|e| Json(json!({"extension": view(e)})))
        .ok_or_else(ApiError::not_found)
}
