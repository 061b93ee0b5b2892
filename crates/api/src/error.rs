//! The API's error: an HTTP status plus Neutron's `NeutronError` body. Every
//! refusal leaves through here, so every client sees one error shape.

use axum::Json;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use model::{Kind, ModelError};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {kind}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// Neutron's error type, e.g. `NetworkNotFound`.
    pub kind: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind: kind.to_owned(),
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "HTTPBadRequest", message)
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidInput",
            format!("Invalid input for operation: {}.", message.into()),
        )
    }

    pub fn not_found() -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "HTTPNotFound",
            "The resource could not be found.",
        )
    }

    pub fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "HTTPMethodNotAllowed",
            "The server could not comply with the request since it is either malformed or otherwise incorrect.",
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }
}

/// Gives every error answer Neutron's shape, whoever made it: axum's own
/// rejections (a path that is not UTF-8, a body over the limit, a broken
/// chunked body) answer in plain text, which clients cannot parse. A JSON
/// error (ours, or keystonemiddleware's 401) passes unchanged.
pub async fn neutron_shaped(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return response;
    }
    // The rejection's text says what was wrong; it is short.
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let kind = match status {
        StatusCode::BAD_REQUEST => "HTTPBadRequest",
        StatusCode::NOT_FOUND => "HTTPNotFound",
        StatusCode::METHOD_NOT_ALLOWED => "HTTPMethodNotAllowed",
        StatusCode::PAYLOAD_TOO_LARGE => "HTTPRequestEntityTooLarge",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "HTTPUnsupportedMediaType",
        s if s.is_server_error() => "HTTPInternalServerError",
        _ => "HTTPClientError",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    ApiError::new(status, kind, message).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"NeutronError": {"type": self.kind, "message": self.message, "detail": ""}});
        (self.status, Json(body)).into_response()
    }
}

fn not_found_type(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Network => ("NetworkNotFound", "could not be found."),
        Kind::Subnet => ("SubnetNotFound", "could not be found."),
        Kind::Port => ("PortNotFound", "could not be found."),
        Kind::SecurityGroup => ("SecurityGroupNotFound", "does not exist"),
        Kind::SecurityGroupRule => ("SecurityGroupRuleNotFound", "does not exist"),
        Kind::Router => ("RouterNotFound", "could not be found"),
        Kind::FloatingIp => ("FloatingIPNotFound", "could not be found"),
        Kind::MeteringLabel => ("MeteringLabelNotFound", "does not exist."),
        Kind::MeteringLabelRule => ("MeteringLabelRuleNotFound", "does not exist."),
        Kind::Quota => ("NotFound", "could not be found"),
        Kind::SubnetPool => ("SubnetPoolNotFound", "could not be found."),
        Kind::DefaultSecurityGroupRule => ("DefaultSecurityGroupRuleNotFound", "does not exist"),
        Kind::AutoAllocatedTopology => ("NotFound", "could not be found"),
        Kind::RbacPolicy => ("RbacPolicyNotFound", "could not be found."),
        Kind::AddressGroup => ("AddressGroupNotFound", "could not be found."),
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        use ModelError as M;
        let message = e.to_string();
        let (status, kind) = match &e {
            M::InvalidInput(_) => (StatusCode::BAD_REQUEST, "InvalidInput"),
            M::ForeignProject | M::QuotaBelowUsage { .. } => {
                (StatusCode::BAD_REQUEST, "HTTPBadRequest")
            }
            M::Forbidden(_) => (StatusCode::FORBIDDEN, "PolicyNotAuthorized"),
            // Neutron finds a policy's type by looking in the tables the
            // caller may read, so one it cannot see is of type "unknown".
            M::NotFound {
                kind: Kind::RbacPolicy,
                id,
            } => {
                return ApiError::new(
                    StatusCode::NOT_FOUND,
                    "RbacPolicyNotFound",
                    format!("RBAC policy of type unknown with ID {id} not found"),
                );
            }
            M::NotFound { kind, id } => {
                let (kind_name, tail) = not_found_type(*kind);
                // Neutron's metering exceptions quote the id.
                let id = match kind {
                    Kind::MeteringLabel | Kind::MeteringLabelRule => format!("'{id}'"),
                    _ => id.clone(),
                };
                return ApiError::new(
                    StatusCode::NOT_FOUND,
                    kind_name,
                    format!("{} {id} {tail}", kind.title()),
                );
            }
            M::RevisionMismatch { .. } => (
                StatusCode::PRECONDITION_FAILED,
                "RevisionNumberConstraintFailed",
            ),
            M::IpAddressAlreadyAllocated { .. } => {
                (StatusCode::CONFLICT, "IpAddressAlreadyAllocated")
            }
            M::IpAddressGenerationFailure { .. } => {
                (StatusCode::CONFLICT, "IpAddressGenerationFailure")
            }
            M::InvalidIpForSubnet { .. } => (StatusCode::BAD_REQUEST, "InvalidIpForSubnet"),
            M::InvalidIpForNetwork { .. } => (StatusCode::BAD_REQUEST, "InvalidIpForNetwork"),
            M::InvalidAllocationPool { .. } => (StatusCode::BAD_REQUEST, "InvalidAllocationPool"),
            M::OutOfBoundsAllocationPool { .. } => {
                (StatusCode::BAD_REQUEST, "OutOfBoundsAllocationPool")
            }
            M::OverlappingAllocationPools { .. } => {
                (StatusCode::CONFLICT, "OverlappingAllocationPools")
            }
            M::SecurityGroupProtocolRequiredWithPorts => (
                StatusCode::BAD_REQUEST,
                "SecurityGroupProtocolRequiredWithPorts",
            ),
            M::SecurityGroupInvalidPortRange => {
                (StatusCode::BAD_REQUEST, "SecurityGroupInvalidPortRange")
            }
            M::SecurityGroupInvalidPortValue { .. } => {
                (StatusCode::BAD_REQUEST, "SecurityGroupInvalidPortValue")
            }
            M::SecurityGroupInvalidIcmpValue { .. } => {
                (StatusCode::BAD_REQUEST, "SecurityGroupInvalidIcmpValue")
            }
            M::MacAddressInUse { .. } => (StatusCode::CONFLICT, "MacAddressInUse"),
            M::NetworkInUse { .. } => (StatusCode::CONFLICT, "NetworkInUse"),
            M::SubnetInUse { .. } => (StatusCode::CONFLICT, "SubnetInUse"),
            M::GatewayConflictWithAllocationPools { .. } => {
                (StatusCode::CONFLICT, "GatewayConflictWithAllocationPools")
            }
            M::SecurityGroupInUse { .. } => (StatusCode::CONFLICT, "SecurityGroupInUse"),
            M::SecurityGroupCannotRemoveDefault => {
                (StatusCode::CONFLICT, "SecurityGroupCannotRemoveDefault")
            }
            M::SecurityGroupCannotUpdateDefault => {
                (StatusCode::CONFLICT, "SecurityGroupCannotUpdateDefault")
            }
            M::SecurityGroupRuleExists { .. } => (StatusCode::CONFLICT, "SecurityGroupRuleExists"),
            // Neutron's spelling.
            M::SecurityGroupMultipleRemoteEntites => (
                StatusCode::BAD_REQUEST,
                "SecurityGroupMultipleRemoteEntites",
            ),
            M::AddressGroupInUse { .. } => (StatusCode::CONFLICT, "AddressGroupInUse"),
            M::AddressesAlreadyExist { .. } => (StatusCode::BAD_REQUEST, "AddressesAlreadyExist"),
            M::AddressesNotFound { .. } => (StatusCode::NOT_FOUND, "AddressesNotFound"),
            M::SecurityGroupRuleParameterConflict { .. } => (
                StatusCode::BAD_REQUEST,
                "SecurityGroupRuleParameterConflict",
            ),
            M::InvalidProtocolForPortRange { .. } => (
                StatusCode::BAD_REQUEST,
                "SecurityGroupInvalidProtocolForPortRange",
            ),
            M::SecurityGroupMissingIcmpType { .. } => {
                (StatusCode::BAD_REQUEST, "SecurityGroupMissingIcmpType")
            }
            M::PortSecurityPortHasSecurityGroup => {
                (StatusCode::CONFLICT, "PortSecurityPortHasSecurityGroup")
            }
            M::PortSecurityAndIPRequiredForSecurityGroups => (
                StatusCode::BAD_REQUEST,
                "PortSecurityAndIPRequiredForSecurityGroups",
            ),
            M::AddressPairAndPortSecurityRequired => {
                (StatusCode::CONFLICT, "AddressPairAndPortSecurityRequired")
            }
            M::PortBound { .. } => (StatusCode::CONFLICT, "PortBound"),
            M::TunnelIdInUse { .. } => (StatusCode::CONFLICT, "TunnelIdInUse"),
            M::FlatNetworkInUse { .. } => (StatusCode::CONFLICT, "FlatNetworkInUse"),
            M::NoNetworkAvailable => (StatusCode::SERVICE_UNAVAILABLE, "NoNetworkAvailable"),
            M::MacAddressGenerationFailure { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "MacAddressGenerationFailure",
            ),
            M::SecurityGroupDefaultAlreadyExists => {
                (StatusCode::CONFLICT, "SecurityGroupDefaultAlreadyExists")
            }
            M::TagNotFound { .. } => (StatusCode::NOT_FOUND, "TagNotFound"),
            M::BadRequest { .. } => (StatusCode::BAD_REQUEST, "BadRequest"),
            M::ExternalNetworkInUse { .. } => (StatusCode::CONFLICT, "ExternalNetworkInUse"),
            M::RouterInUse { .. } => (StatusCode::CONFLICT, "RouterInUse"),
            M::RouterInterfaceNotFound { .. } => (StatusCode::NOT_FOUND, "RouterInterfaceNotFound"),
            M::RouterInterfaceNotFoundForSubnet { .. } => {
                (StatusCode::NOT_FOUND, "RouterInterfaceNotFoundForSubnet")
            }
            M::RouterInterfaceInUse { by, .. } => (
                StatusCode::CONFLICT,
                if *by == "routes" {
                    "RouterInterfaceInUseByRoute"
                } else {
                    "RouterInterfaceInUseByFloatingIP"
                },
            ),
            M::RouterExternalGatewayInUseByFloatingIp { .. } => (
                StatusCode::CONFLICT,
                "RouterExternalGatewayInUseByFloatingIp",
            ),
            M::ExternalGatewayForFloatingIpNotFound { .. } => (
                StatusCode::NOT_FOUND,
                "ExternalGatewayForFloatingIPNotFound",
            ),
            M::FloatingIpPortAlreadyAssociated { .. } => {
                (StatusCode::CONFLICT, "FloatingIPPortAlreadyAssociated")
            }
            M::L3PortInUse { .. } => (StatusCode::CONFLICT, "L3PortInUse"),
            M::PortInUse { .. } => (StatusCode::CONFLICT, "PortInUse"),
            M::InvalidRoutes { .. } => (StatusCode::BAD_REQUEST, "InvalidRoutes"),
            M::RoutesExhausted { .. } => (StatusCode::BAD_REQUEST, "RoutesExhausted"),
            M::DnsNameServersExhausted { .. } => {
                (StatusCode::BAD_REQUEST, "DNSNameServersExhausted")
            }
            M::HostRoutesExhausted { .. } => (StatusCode::BAD_REQUEST, "HostRoutesExhausted"),
            M::AllowedAddressPairExhausted { .. } => {
                (StatusCode::BAD_REQUEST, "AllowedAddressPairExhausted")
            }
            M::PortForwardingNotFound { .. } => (StatusCode::NOT_FOUND, "PortForwardingNotFound"),
            M::OverQuota { .. } => (StatusCode::CONFLICT, "OverQuota"),
            M::EmptySubnetPoolPrefixList => (StatusCode::BAD_REQUEST, "EmptySubnetPoolPrefixList"),
            M::PrefixVersionMismatch => (StatusCode::BAD_REQUEST, "PrefixVersionMismatch"),
            M::IllegalSubnetPoolPrefixBounds { .. } => {
                (StatusCode::BAD_REQUEST, "IllegalSubnetPoolPrefixBounds")
            }
            M::IllegalSubnetPoolPrefixUpdate { .. } => {
                (StatusCode::BAD_REQUEST, "IllegalSubnetPoolPrefixUpdate")
            }
            // Neutron maps no status to this one (it answers 500); a pool
            // without room is a conflict with the cloud's state, not a
            // server fault, so vnet answers 409 with Neutron's type and text.
            M::SubnetAllocationError { .. } => (StatusCode::CONFLICT, "SubnetAllocationError"),
            M::MinPrefixSubnetAllocationError { .. } => {
                (StatusCode::BAD_REQUEST, "MinPrefixSubnetAllocationError")
            }
            M::MaxPrefixSubnetAllocationError { .. } => {
                (StatusCode::BAD_REQUEST, "MaxPrefixSubnetAllocationError")
            }
            M::SubnetPoolDeleteError { .. } => (StatusCode::BAD_REQUEST, "SubnetPoolDeleteError"),
            M::SubnetPoolQuotaExceeded => (StatusCode::CONFLICT, "SubnetPoolQuotaExceeded"),
            M::DefaultExternalNetworkExists { .. } => {
                (StatusCode::CONFLICT, "DefaultExternalNetworkExists")
            }
            M::InvalidSubnetServiceType { .. } => {
                (StatusCode::BAD_REQUEST, "InvalidSubnetServiceType")
            }
            M::IpAddressGenerationFailureNoMatchingSubnet { .. } => (
                StatusCode::BAD_REQUEST,
                "IpAddressGenerationFailureNoMatchingSubnet",
            ),
            M::AutoAllocationFailure { .. } => (StatusCode::CONFLICT, "AutoAllocationFailure"),
            M::DefaultSecurityGroupRuleExists { .. } => {
                (StatusCode::CONFLICT, "DefaultSecurityGroupRuleExists")
            }
            M::NetworkSubnetPoolAffinityError => {
                (StatusCode::BAD_REQUEST, "NetworkSubnetPoolAffinityError")
            }
            // neutron_lib's `Invalid`, which its fault map does not list.
            M::MeteringInvalid(_) => (StatusCode::BAD_REQUEST, "Invalid"),
            M::MeteringLabelRuleOverlaps { .. } => {
                (StatusCode::CONFLICT, "MeteringLabelRuleOverlaps")
            }
            M::DuplicateRbacPolicy => (StatusCode::CONFLICT, "DuplicateRbacPolicy"),
            M::RbacPolicyInUse { .. } => (StatusCode::CONFLICT, "RbacPolicyInUse"),
            // Neutron's InvalidActionForType is an InvalidInput.
            M::InvalidActionForType { .. } => (StatusCode::BAD_REQUEST, "InvalidActionForType"),
            M::InvalidSharedSetting { .. } => (StatusCode::CONFLICT, "InvalidSharedSetting"),
        };
        ApiError::new(status, kind, message)
    }
}
