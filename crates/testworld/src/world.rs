//! The pieces of a cloud in namespaces: a [`Fabric`] (the underlay switch,
//! and optionally the external segment's), a [`Host`] (a hypervisor plugged
//! into the fabric with an underlay IP, and optionally into the external
//! segment), a [`Vm`] (plugged into its host by a veth whose host end is the
//! port's device, as Nova's tap would be), and [`Outside`] (the internet, on
//! the external segment). Every piece owns its namespace; dropping
//! it removes the namespace and every link in it. Nothing is created outside
//! these namespaces.

use std::net::Ipv4Addr;

use crate::netns::{CmdError, Netns, veth};

/// The underlay subnet hosts live on (TEST-NET-1: never routed anywhere).
pub const UNDERLAY_PREFIX: &str = "192.0.2";
pub const UNDERLAY_PREFIX_LEN: u8 = 24;
/// Name of the underlay bridge in the fabric, and of each host's underlay link.
pub const FABRIC_BRIDGE: &str = "br0";
pub const UNDERLAY_DEV: &str = "eth0";
/// The MTU a VM's interface gets: the VXLAN overlay's (1500 − 50).
pub const VM_MTU: u32 = 1450;
/// The external segment's bridge in the fabric (a physical network).
pub const EXTERNAL_BRIDGE: &str = "brext";
/// A host's interface into the external segment (to map with
/// `--physical-network NAME:ext0`).
pub const EXTERNAL_DEV: &str = "ext0";
/// The outside world's address on the external segment (TEST-NET-3).
pub const OUTSIDE_IP: &str = "203.0.113.1";

/// Turns off br_netfilter in a namespace (on by default in every namespace on
/// this kernel: every bridged packet would go through conntrack).
fn bridge_nf_off(ns: &Netns) -> Result<(), CmdError> {
    for key in ["iptables", "ip6tables", "arptables"] {
        ns.sysctl(&format!("net.bridge.bridge-nf-call-{key}"), "0")?;
    }
    Ok(())
}

fn ipv6_off(ns: &Netns, dev: &str) -> Result<(), CmdError> {
    ns.sysctl(&format!("net.ipv6.conf.{dev}.disable_ipv6"), "1")
}

/// The underlay: one namespace with one bridge that every host plugs into.
#[derive(Debug)]
pub struct Fabric {
    pub ns: Netns,
}

impl Fabric {
    /// `prefix` names the test (keep it to a few characters).
    pub fn new(prefix: &str) -> Result<Self, CmdError> {
        let ns = Netns::new(&format!("{prefix}f"))?;
        // Nothing here speaks IPv6: keep start-up multicast off the wire.
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        bridge_nf_off(&ns)?;
        ns.ip(&["link", "add", FABRIC_BRIDGE, "type", "bridge"])?;
        ns.ip(&["link", "set", FABRIC_BRIDGE, "up"])?;
        Ok(Fabric { ns })
    }

    /// Adds the external segment: a second bridge, [`EXTERNAL_BRIDGE`], that
    /// hosts plug into with [`Host::plug_external`] and [`Outside`] stands on.
    pub fn add_external(&self) -> Result<(), CmdError> {
        self.ns
            .ip(&["link", "add", EXTERNAL_BRIDGE, "type", "bridge"])?;
        self.ns
            .ip(&["link", "set", EXTERNAL_BRIDGE, "up"])
            .map(drop)
    }
}

/// A hypervisor host: its own namespace (where its agent runs), with an
/// underlay link `eth0` (192.0.2.N/24) into the fabric bridge.
#[derive(Debug)]
pub struct Host {
    pub ns: Netns,
    pub index: u8,
}

impl Host {
    /// Host number `index` (1…254) gets underlay IP 192.0.2.`index`.
    pub fn new(fabric: &Fabric, prefix: &str, index: u8) -> Result<Self, CmdError> {
        let ns = Netns::new(&format!("{prefix}h{index}"))?;
        bridge_nf_off(&ns)?;
        let fabric_end = format!("u{index}");
        veth(&ns, UNDERLAY_DEV, &fabric.ns, &fabric_end)?;
        ipv6_off(&fabric.ns, &fabric_end)?;
        fabric
            .ns
            .ip(&["link", "set", &fabric_end, "master", FABRIC_BRIDGE, "up"])?;
        ipv6_off(&ns, UNDERLAY_DEV)?;
        let cidr = format!("{UNDERLAY_PREFIX}.{index}/{UNDERLAY_PREFIX_LEN}");
        ns.ip(&["addr", "add", &cidr, "dev", UNDERLAY_DEV])?;
        ns.ip(&["link", "set", UNDERLAY_DEV, "up"])?;
        Ok(Host { ns, index })
    }

    /// This host's VXLAN tunnel endpoint.
    pub fn underlay_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, self.index)
    }

    /// Plugs this host into the fabric's external segment (see
    /// [`Fabric::add_external`]) with an interface [`EXTERNAL_DEV`]: no
    /// address and down, as a spare NIC is; enslaving it is the agent's job.
    pub fn plug_external(&self, fabric: &Fabric) -> Result<(), CmdError> {
        let fabric_end = format!("x{}", self.index);
        veth(&self.ns, EXTERNAL_DEV, &fabric.ns, &fabric_end)?;
        ipv6_off(&self.ns, EXTERNAL_DEV)?;
        ipv6_off(&fabric.ns, &fabric_end)?;
        fabric
            .ns
            .ip(&["link", "set", &fabric_end, "master", EXTERNAL_BRIDGE, "up"])
            .map(drop)
    }

    /// Turns on IPv4 forwarding in the host namespace (for routed tests).
    pub fn enable_forwarding(&self) -> Result<(), CmdError> {
        self.ns.sysctl("net.ipv4.ip_forward", "1")
    }
}

/// A VM: a namespace whose `eth0` carries the port's MAC (MTU 1450), plugged
/// into its host by a veth whose host end is named as the port's device. The
/// host end is left down with the kernel's default MTU: wiring it is the
/// agent's job. Dropping the VM unplugs it at once (the device is gone from
/// the host when `drop` returns), then deletes its namespace.
#[derive(Debug)]
pub struct Vm {
    pub ns: Netns,
    /// The host-side device (e.g. `tap` + 11 characters of the port id).
    pub device: String,
    pub mac: String,
    host_ns: String,
}

impl Drop for Vm {
    fn drop(&mut self) {
        // A namespace's links go asynchronously after `ip netns del`; deleting
        // the veth first makes the unplug synchronous. If the host is already
        // gone, so is the device.
        let _ = crate::netns::run_cmd("ip", &["-n", &self.host_ns, "link", "del", &self.device]);
    }
}

/// The VM-side interface name.
pub const VM_DEV: &str = "eth0";

impl Vm {
    /// `device` must be ≤ 15 characters and unique on the host; `mac` is the
    /// port's MAC (`fa:16:3e:…`).
    pub fn new(host: &Host, prefix: &str, device: &str, mac: &str) -> Result<Self, CmdError> {
        Vm::build(host, prefix, device, mac, false)
    }

    /// As [`Vm::new`], with IPv6 on in the VM as a guest has it (link-local
    /// address, duplicate address detection, router solicitations, SLAAC).
    pub fn dual_stack(
        host: &Host,
        prefix: &str,
        device: &str,
        mac: &str,
    ) -> Result<Self, CmdError> {
        Vm::build(host, prefix, device, mac, true)
    }

    fn build(
        host: &Host,
        prefix: &str,
        device: &str,
        mac: &str,
        ipv6: bool,
    ) -> Result<Self, CmdError> {
        let ns = Netns::new(&format!("{prefix}v"))?;
        veth(&ns, VM_DEV, &host.ns, device)?;
        // IPv6 start-up traffic (RS, MLD, DAD) is noise unless the test is
        // about IPv6; the host's end never needs an address of its own.
        if !ipv6 {
            ipv6_off(&ns, VM_DEV)?;
        }
        ipv6_off(&host.ns, device)?;
        let mtu = VM_MTU.to_string();
        ns.ip(&["link", "set", VM_DEV, "address", mac, "mtu", &mtu, "up"])?;
        Ok(Vm {
            ns,
            device: device.to_string(),
            mac: mac.to_string(),
            host_ns: host.ns.name().to_string(),
        })
    }

    /// Adds a static address (`10.0.0.5/24`) to the VM's interface.
    pub fn add_ip(&self, cidr: &str) -> Result<(), CmdError> {
        self.ns.ip(&["addr", "add", cidr, "dev", VM_DEV]).map(drop)
    }

    /// Pings `ip` `count` times (0.2 s apart, 1 s deadline per reply);
    /// returns how many replies came back.
    pub fn ping(&self, ip: &str, count: u32) -> u32 {
        ping(&self.ns, ip, count)
    }
}

/// The internet: a namespace on the external segment (see
/// [`Fabric::add_external`]) whose `eth0` has [`OUTSIDE_IP`]/24.
#[derive(Debug)]
pub struct Outside {
    pub ns: Netns,
}

impl Outside {
    pub fn new(fabric: &Fabric, prefix: &str) -> Result<Self, CmdError> {
        let ns = Netns::new(&format!("{prefix}o"))?;
        veth(&ns, VM_DEV, &fabric.ns, "xo")?;
        ipv6_off(&ns, VM_DEV)?;
        ipv6_off(&fabric.ns, "xo")?;
        fabric
            .ns
            .ip(&["link", "set", "xo", "master", EXTERNAL_BRIDGE, "up"])?;
        ns.ip(&["addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", VM_DEV])?;
        ns.ip(&["link", "set", VM_DEV, "up"])?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(Outside { ns })
    }

    /// As [`Vm::ping`].
    pub fn ping(&self, ip: &str, count: u32) -> u32 {
        ping(&self.ns, ip, count)
    }
}

/// Pings `ip` from `ns` `count` times (0.2 s apart, 1 s deadline per
/// reply); returns how many replies came back.
fn ping(ns: &Netns, ip: &str, count: u32) -> u32 {
    let count_s = count.to_string();
    let out = match ns.exec(
        "busybox",
        &["ping", "-c", &count_s, "-i", "0.2", "-W", "1", ip],
    ) {
        Ok(out) => out,
        Err(e) => e.stdout,
    };
    parse_received(&out)
}

/// Reads `N packets received` from ping's summary.
fn parse_received(out: &str) -> u32 {
    out.lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("transmitted, ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summaries_are_read() {
        let out = "--- 10.0.0.6 ping statistics ---\n3 packets transmitted, 2 packets received, 33% packet loss\n";
        assert_eq!(parse_received(out), 2);
        assert_eq!(parse_received("ping: sendto: Network unreachable\n"), 0);
    }

    #[test]
    fn two_vms_on_one_host_bridge_reach_each_other() {
        let fabric = Fabric::new("twt").expect("fabric");
        let host = Host::new(&fabric, "twt", 1).expect("host");
        let a = Vm::new(&host, "twt", "tapa", "fa:16:3e:00:00:0a").expect("vm a");
        let b = Vm::new(&host, "twt", "tapb", "fa:16:3e:00:00:0b").expect("vm b");
        a.add_ip("10.9.0.1/24").expect("ip");
        b.add_ip("10.9.0.2/24").expect("ip");
        // Wire by hand what the agent would.
        host.ns
            .sh("ip link add brt type bridge && ip link set brt up && \
                 for d in tapa tapb; do ip link set $d master brt mtu 1450 up; done")
            .expect("bridge");
        assert_eq!(a.ping("10.9.0.2", 2), 2);
        // The underlay works too.
        let host2 = Host::new(&fabric, "twt", 2).expect("host 2");
        let out = host2
            .ns
            .exec("busybox", &["ping", "-c", "1", "-W", "2", "192.0.2.1"]);
        assert!(out.is_ok(), "{out:?}");
    }
}
