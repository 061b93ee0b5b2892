//! The agent's physical network mappings (`--physical-network NAME:IFACE`,
//! as Neutron's `bridge_mappings`): parsing them, and cutting from a desired
//! state the flat networks this host cannot realise. Pure. The interfaces
//! are the host's own: this module never names one vnet would create.

use std::collections::{BTreeMap, BTreeSet};

use compiler::protocol::HostState;

/// Neutron's limit on a physical network's name.
const MAX_NAME_LEN: usize = 64;
/// IFNAMSIZ − 1.
const MAX_IFACE_LEN: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("'{0}' is not NAME:IFACE")]
    Malformed(String),
    #[error("physical network name '{0}' must be 1 to {MAX_NAME_LEN} characters")]
    BadName(String),
    #[error(
        "interface '{0}' is not a valid interface name (1 to {MAX_IFACE_LEN} characters, no '/', ':' or whitespace)"
    )]
    BadInterface(String),
    #[error("interface '{0}' is named like vnet's own devices (vnbr*, vnvx*)")]
    OwnedInterface(String),
    #[error("physical network '{0}' is mapped twice")]
    DuplicateName(String),
    #[error("interface '{iface}' is mapped to both '{first}' and '{second}'")]
    DuplicateInterface {
        iface: String,
        first: String,
        second: String,
    },
}

/// Physical network name → this host's interface on it.
pub type Mappings = BTreeMap<String, String>;

/// Parses `NAME:IFACE` arguments into mappings; a name or an interface
/// given twice is refused (one bridge per physical network, one bridge per
/// interface).
pub fn parse(args: &[String]) -> Result<Mappings, MappingError> {
    let mut out = Mappings::new();
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for arg in args {
        let (name, iface) = arg
            .split_once(':')
            .ok_or_else(|| MappingError::Malformed(arg.clone()))?;
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(MappingError::BadName(name.to_owned()));
        }
        let bad_iface = iface.is_empty()
            || iface.len() > MAX_IFACE_LEN
            || iface.contains(['/', ':'])
            || iface.chars().any(char::is_whitespace);
        if bad_iface {
            return Err(MappingError::BadInterface(iface.to_owned()));
        }
        if crate::linux::is_owned(iface) {
            return Err(MappingError::OwnedInterface(iface.to_owned()));
        }
        if out.contains_key(name) {
            return Err(MappingError::DuplicateName(name.to_owned()));
        }
        if let Some(first) = owners.insert(iface.to_owned(), name.to_owned()) {
            return Err(MappingError::DuplicateInterface {
                iface: iface.to_owned(),
                first,
                second: name.to_owned(),
            });
        }
        out.insert(name.to_owned(), iface.to_owned());
    }
    Ok(out)
}

/// A flat network this host carries but cannot realise.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unmapped {
    pub network_id: String,
    pub physical_network: String,
    /// Its local ports: they stay unwired (DOWN), their binding failed.
    pub ports: Vec<String>,
}

/// `state` without the flat networks whose physical network `mappings` lacks
/// (nor their local ports' security), and what was cut. The server shows
/// those ports `binding_failed` from this host's registration; the agent
/// leaves them alone rather than build a bridge that reaches nowhere.
pub fn realisable(state: &HostState, mappings: &Mappings) -> (HostState, Vec<Unmapped>) {
    let mut cut = Vec::new();
    let mut out = state.clone();
    out.networks.retain(|id, net| {
        let Some(physnet) = &net.physical_network else {
            return true;
        };
        if mappings.contains_key(physnet) {
            return true;
        }
        cut.push(Unmapped {
            network_id: id.clone(),
            physical_network: physnet.clone(),
            ports: net.local_ports.keys().cloned().collect(),
        });
        false
    });
    let dropped: BTreeSet<&String> = cut.iter().flat_map(|u| &u.ports).collect();
    out.port_security.retain(|id, _| !dropped.contains(id));
    (out, cut)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use compiler::protocol::{LocalPortSpec, NetworkSpec, PortSecuritySpec};

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn mappings_parse_like_bridge_mappings_and_refuse_what_cannot_work() {
        let m = parse(&args(&["external:ext0", "physnet2:eth2"])).unwrap();
        assert_eq!(m["external"], "ext0");
        assert_eq!(m["physnet2"], "eth2");
        assert!(parse(&[]).unwrap().is_empty());
        for (bad, want) in [
            ("external", MappingError::Malformed("external".into())),
            (":ext0", MappingError::BadName(String::new())),
            ("external:", MappingError::BadInterface(String::new())),
            (
                "external:a-name-too-long-0",
                MappingError::BadInterface("a-name-too-long-0".into()),
            ),
            ("external:a b", MappingError::BadInterface("a b".into())),
            (
                "external:vnbr7",
                MappingError::OwnedInterface("vnbr7".into()),
            ),
        ] {
            assert_eq!(parse(&args(&[bad])).unwrap_err(), want, "{bad}");
        }
        assert_eq!(
            parse(&args(&["a:ext0", "a:ext1"])).unwrap_err(),
            MappingError::DuplicateName("a".into())
        );
        assert!(matches!(
            parse(&args(&["a:ext0", "b:ext0"])),
            Err(MappingError::DuplicateInterface { .. })
        ));
    }

    fn net(physnet: Option<&str>, port: &str) -> NetworkSpec {
        let mut n = NetworkSpec {
            vni: if physnet.is_some() { 0 } else { 5 },
            mtu: 1450,
            physical_network: physnet.map(Into::into),
            subnets: BTreeMap::new(),
            local_ports: BTreeMap::new(),
            remote_ports: BTreeMap::new(),
        };
        n.local_ports.insert(
            port.into(),
            LocalPortSpec {
                mac: "fa:16:3e:00:00:01".parse().unwrap(),
                fixed_ips: vec![],
                device: format!("tap{port}"),
                admin_state_up: true,
                dhcpv4_options: vec![],
                dhcpv6_options: vec![],
            },
        );
        n
    }

    #[test]
    fn only_unmapped_flat_networks_are_cut_with_their_ports_security() {
        let mut state = HostState::default();
        state.networks.insert("vx".into(), net(None, "p1"));
        state
            .networks
            .insert("ext".into(), net(Some("external"), "p2"));
        state
            .networks
            .insert("other".into(), net(Some("physnet9"), "p3"));
        for p in ["p1", "p2", "p3"] {
            state.port_security.insert(
                p.into(),
                PortSecuritySpec {
                    enabled: true,
                    security_groups: vec![],
                    allowed_sources: vec![],
                },
            );
        }
        let mappings = parse(&args(&["external:ext0"])).unwrap();
        let (kept, cut) = realisable(&state, &mappings);
        assert_eq!(
            kept.networks.keys().collect::<Vec<_>>(),
            ["ext", "vx"],
            "VXLAN and mapped flat networks stay"
        );
        assert_eq!(
            cut,
            [Unmapped {
                network_id: "other".into(),
                physical_network: "physnet9".into(),
                ports: vec!["p3".into()],
            }]
        );
        assert!(!kept.port_security.contains_key("p3"));
        assert!(kept.port_security.contains_key("p2"));
        // With every physical network mapped, nothing changes.
        let all = parse(&args(&["external:ext0", "physnet9:eth9"])).unwrap();
        assert_eq!(realisable(&state, &all), (state.clone(), vec![]));
    }
}
