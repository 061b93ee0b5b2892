//! The link vocabulary desired and observed state share: what kind of device
//! a link is, and the bridge-port flags vnet cares about.

use std::fmt;
use std::net::IpAddr;

/// What a link is, as far as vnet needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    /// Only the attributes that cannot change without recreating the device,
    /// plus learning and the remote group (which must stay off and unset).
    Vxlan {
        vni: u32,
        local: Option<IpAddr>,
        port: u16,
        learning: bool,
        /// A remote/group address would make the device flood; vnet never sets one.
        group: Option<IpAddr>,
    },
    /// Anything else (a tap, a veth, …), by its `IFLA_INFO_KIND` if any.
    Other(String),
}

impl LinkKind {
    /// The VXLAN device vnet creates for `vni`.
    pub fn vxlan(vni: u32, local: IpAddr, port: u16) -> Self {
        LinkKind::Vxlan {
            vni,
            local: Some(local),
            port,
            learning: false,
            group: None,
        }
    }
}

/// Bridge-port flags (`bridge link set dev X …`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortFlags {
    pub learning: bool,
    pub neigh_suppress: bool,
    /// Unknown unicast.
    pub flood: bool,
    pub mcast_flood: bool,
    pub bcast_flood: bool,
}

impl PortFlags {
    /// What the kernel gives a port when it joins a bridge.
    pub const KERNEL_DEFAULT: PortFlags = PortFlags {
        learning: true,
        neigh_suppress: false,
        flood: true,
        mcast_flood: true,
        bcast_flood: true,
    };

    /// A VXLAN port: learns nothing, floods nothing, answers ARP/ND locally.
    pub const VXLAN: PortFlags = PortFlags {
        learning: false,
        neigh_suppress: true,
        flood: false,
        mcast_flood: false,
        bcast_flood: false,
    };

    /// A physical interface enslaved to a flat network's bridge: the
    /// kernel's defaults. The segment behind it holds machines vnet does not
    /// know, so it learns their MACs, floods what it does not know yet, and
    /// leaves ARP to their owners.
    pub const UPLINK: PortFlags = PortFlags::KERNEL_DEFAULT;

    /// A local port (VM or container): the kernel's defaults. `neigh_suppress`
    /// must stay off here: with it on the VM's own port the bridge stops
    /// answering and ARP floods.
    pub const LOCAL: PortFlags = PortFlags::KERNEL_DEFAULT;
}

impl fmt::Display for PortFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |b: bool| if b { "on" } else { "off" };
        write!(
            f,
            "learning {} neigh_suppress {} flood {} mcast_flood {} bcast_flood {}",
            on(self.learning),
            on(self.neigh_suppress),
            on(self.flood),
            on(self.mcast_flood),
            on(self.bcast_flood)
        )
    }
}
