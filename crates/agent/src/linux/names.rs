//! What vnet calls its kernel objects, and so how it recognises its own: every
//! link whose name starts with [`BRIDGE_PREFIX`] or [`VXLAN_PREFIX`] belongs
//! to vnet (and only those; a port's device is found by the name its binding
//! gives, a physical network's interface by the agent's mapping). Names fit
//! IFNAMSIZ (15 characters): the largest VNI (2^24 − 1) has 8 digits, and a
//! flat network's bridge is `vnbrf` + 8 hex digits.

use compiler::protocol::NetworkSpec;

/// A network's bridge: `vnbr<vni>`.
pub const BRIDGE_PREFIX: &str = "vnbr";
/// A network's VXLAN device: `vnvx<vni>`.
pub const VXLAN_PREFIX: &str = "vnvx";
/// The host end of a router interface's veth pair: `vnrt` + the first 11
/// characters of the interface's port id. Wired as a port device (never
/// created or deleted here: the router backend owns the pair).
pub const ROUTER_PORT_PREFIX: &str = "vnrt";
/// IANA's VXLAN port.
pub const VXLAN_PORT: u16 = 4789;

pub fn bridge_name(vni: u32) -> String {
    format!("{BRIDGE_PREFIX}{vni}")
}

/// A flat network's bridge: `vnbrf` + a hash of its physical network's name.
/// One flat network per physical network (the API's rule) makes it one
/// bridge per physical network, with the same name on every host; the `f`
/// keeps it apart from every VXLAN bridge, whose suffix is all digits.
pub const FLAT_BRIDGE_PREFIX: &str = "vnbrf";

/// The bridge of a network, whatever its kind: every place that names a
/// network's bridge goes through here.
pub fn network_bridge(net: &NetworkSpec) -> String {
    match &net.physical_network {
        None => bridge_name(net.vni),
        Some(physnet) => format!("{FLAT_BRIDGE_PREFIX}{:08x}", physnet_hash(physnet)),
    }
}

/// The fixed MAC of a network's bridge (see [`bridge_mac`]); a flat
/// network's is `02:76:66` + the low bytes of its physical network's hash.
pub fn network_bridge_mac(net: &NetworkSpec) -> model::MacAddr {
    match &net.physical_network {
        None => bridge_mac(net.vni),
        Some(physnet) => {
            let [_, a, b, c] = physnet_hash(physnet).to_be_bytes();
            model::MacAddr([0x02, 0x76, 0x66, a, b, c])
        }
    }
}

/// FNV-1a (32 bits): stable across versions and hosts, unlike std's hasher.
fn physnet_hash(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

pub fn vxlan_name(vni: u32) -> String {
    format!("{VXLAN_PREFIX}{vni}")
}

pub fn router_port_name(port_id: &str) -> String {
    let prefix: String = port_id.chars().take(11).collect();
    format!("{ROUTER_PORT_PREFIX}{prefix}")
}

/// A network's bridge has this fixed, locally administered MAC
/// (`02:76:6e` + the VNI). Left to itself a bridge takes the lowest MAC of
/// its ports, so plugging in a port could change it, and a bridge whose
/// address changes flushes its neighbour entries, permanent ones included:
/// ARP answers would vanish until the next reconcile. A fixed address never
/// changes. It never crosses the overlay (nothing floods), so the same
/// address on every host is harmless.
pub fn bridge_mac(vni: u32) -> model::MacAddr {
    let [_, a, b, c] = vni.to_be_bytes();
    model::MacAddr([0x02, 0x76, 0x6e, a, b, c])
}

/// A bridge or VXLAN device of vnet's own (by name).
pub fn is_owned(name: &str) -> bool {
    is_bridge(name) || is_vxlan(name)
}

pub fn is_bridge(name: &str) -> bool {
    name.starts_with(BRIDGE_PREFIX)
}

pub fn is_vxlan(name: &str) -> bool {
    name.starts_with(VXLAN_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz_and_are_recognised() {
        let max_vni = (1 << 24) - 1;
        assert_eq!(bridge_name(max_vni), "vnbr16777215");
        assert!(bridge_name(max_vni).len() <= 15 && vxlan_name(max_vni).len() <= 15);
        assert!(is_bridge(&bridge_name(7)) && is_vxlan(&vxlan_name(7)));
        assert!(!is_owned("tap2edab4ec-d2") && !is_owned("eth0") && !is_owned("br0"));
    }

    fn spec(vni: u32, physnet: Option<&str>) -> NetworkSpec {
        NetworkSpec {
            vni,
            mtu: 1450,
            physical_network: physnet.map(Into::into),
            subnets: Default::default(),
            local_ports: Default::default(),
            remote_ports: Default::default(),
        }
    }

    #[test]
    fn a_flat_bridge_is_owned_stable_and_apart_from_every_vxlan_bridge() {
        let vxlan = spec(7, None);
        assert_eq!(network_bridge(&vxlan), bridge_name(7));
        assert_eq!(network_bridge_mac(&vxlan), bridge_mac(7));
        let long = "a-physical-network-name-of-sixty-four-characters-is-allowed-xxxx";
        for physnet in ["external", "physnet2", long, ""] {
            let name = network_bridge(&spec(0, Some(physnet)));
            assert!(name.len() <= 15, "{name}");
            assert!(is_bridge(&name) && is_owned(&name), "{name}");
            assert!(name.starts_with(FLAT_BRIDGE_PREFIX));
            // Not a VXLAN bridge's name: those end in digits only.
            assert!(
                !name[BRIDGE_PREFIX.len()..]
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            );
        }
        // Fixed by the name alone (the same on every host and every release).
        assert_eq!(network_bridge(&spec(0, Some("external"))), "vnbrf331d748a");
        assert_ne!(
            network_bridge(&spec(0, Some("external"))),
            network_bridge(&spec(0, Some("physnet2")))
        );
        assert_ne!(
            network_bridge_mac(&spec(0, Some("external"))),
            network_bridge_mac(&spec(0, Some("physnet2")))
        );
    }
}
