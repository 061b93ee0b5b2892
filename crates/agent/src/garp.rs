//! Gratuitous ARP: a frame that tells a segment at once where an address
//! answers, instead of when its machines' entries expire or their next ARP
//! a second later. Sent from a router's uplink (a floating IP, a gateway
//! address), a router's interface (its gateway), and a host's bridge (a
//! port on another host, for local VMs already asking for it). Built here
//! and sent on a packet socket kept open in the device's namespace;
//! nothing else is sent.

// One packet socket, as `dhcp::socket` opens them: no safe wrapper in the
// crates this agent uses sends a raw frame.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{FromRawFd, OwnedFd};

use model::MacAddr;

/// A gratuitous ARP request: `who-has IP tell IP` from `mac`, broadcast
/// (the form Linux neighbours accept as an update of an existing entry).
pub fn frame(mac: MacAddr, ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    // Ethernet, IPv4, 6-byte and 4-byte addresses, request.
    f[14..22].copy_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
    f[22..28].copy_from_slice(&mac.0);
    f[28..32].copy_from_slice(&ip.octets());
    // Target hardware address stays zero; target protocol address is ours.
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// A packet socket of one network namespace (the calling thread's when
/// opened), kept for as long as its owner lives: the kernel closes a packet
/// socket only after an RCU grace period (`packet_release` calls
/// `synchronize_net`), 8–20 ms here, so a socket per announcement made
/// every floating IP wait that long.
#[derive(Debug)]
pub struct Announcer {
    fd: OwnedFd,
}

impl Announcer {
    /// Opens the socket in the calling thread's network namespace. It
    /// receives nothing (protocol 0): it only sends.
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Announcer { fd })
    }

    /// Sends the gratuitous ARP for `ip` at `mac` out of the device with
    /// index `ifindex` of the socket's namespace.
    pub fn announce(&self, ifindex: u32, ip: Ipv4Addr, mac: MacAddr) -> io::Result<()> {
        crate::dhcp::send_frame(&self.fd, ifindex, &frame(mac, ip))
    }
}

/// The index of `device` in the calling thread's network namespace.
pub fn ifindex(device: &str) -> io::Result<u32> {
    let name = CString::new(device).map_err(io::Error::other)?;
    // SAFETY: `name` is a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        index => Ok(index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gratuitous_arp_request_byte_for_byte() {
        let mac = MacAddr([0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56]);
        let bytes = frame(mac, Ipv4Addr::new(203, 0, 113, 10));
        #[rustfmt::skip]
        let golden: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // to everyone
            0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56, // from the uplink
            0x08, 0x06,                         // ARP
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, // Ethernet/IPv4
            0x00, 0x01,                         // request
            0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56, 203, 0, 113, 10, // sender
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 203, 0, 113, 10, // target
        ];
        assert_eq!(bytes, golden);
    }
}
