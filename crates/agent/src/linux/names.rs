//! What vnet calls its kernel objects, and so how it recognises its own: every
//! link whose name starts with [`BRIDGE_PREFIX`] or [`VXLAN_PREFIX`] belongs
//! to vnet (and only those; a port's device is found by the name its binding
//! gives). Names fit IFNAMSIZ (15 characters): the largest VNI (2^24 − 1) has
//! 8 digits.

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
}
