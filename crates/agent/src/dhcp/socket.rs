//! One AF_PACKET socket on one port device: reads the DHCP requests (or, for
//! IPv6, router solicitations and DHCPv6 messages) the VM sends into it and
//! writes replies straight back out of it.
//!
//! Why a packet socket and not a UDP socket on port 67:
//! - the port's device is a bridge port with no address; the request is a
//!   broadcast from 0.0.0.0 that no IP stack on the host would route to a
//!   UDP socket, and one UDP socket per device (`SO_BINDTODEVICE`) still sees
//!   nothing on a bridge port, since the bridge takes the frame first;
//! - the reply must reach a client that has no address yet: it is an
//!   Ethernet frame to `chaddr`, which only a packet socket can write;
//! - writing on the port's own device keeps the reply off the bridge, so it
//!   never floods to other ports nor crosses the overlay.
//!
//! Gotchas handled here:
//! - bound to `ETH_P_ALL`, not `ETH_P_IP`: on a bridge port, protocol-specific
//!   taps run after the bridge's rx handler has consumed the frame, so an
//!   `ETH_P_IP` socket never sees a thing; only "all" taps see it first;
//! - `ETH_P_ALL` also sees every frame the device transmits (the bridge
//!   flooding other VMs' broadcasts to this VM, our own replies), so
//!   `PACKET_IGNORE_OUTGOING` is set and the packet type checked again;
//! - a classic BPF filter keeps everything but untagged IPv4, unfragmented,
//!   UDP to port 67 in the kernel, so other traffic never wakes the agent;
//! - the socket is created with protocol 0 (receives nothing), filtered, then
//!   bound, so no unfiltered frame is queued in between;
//! - when the device is deleted the kernel unbinds the socket for good and
//!   reports `ENETDOWN` once (`sk_err`); when it only goes down, the socket
//!   comes back by itself when it goes up. [`ifindex`] tells them apart.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::mem;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};

/// `SO_ATTACH_FILTER` (asm-generic/socket.h; the same on x86 and arm).
const SO_ATTACH_FILTER: libc::c_int = 26;
/// `PACKET_IGNORE_OUTGOING` (linux/if_packet.h, Linux 4.20+).
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// `PACKET_OUTGOING` (linux/if_packet.h): a frame this host transmitted.
const PACKET_OUTGOING: u8 = 4;

/// Largest frame read; longer ones (jumbo MTU) are truncated and dropped, as
/// no DHCP request is that long.
pub(super) const MAX_FRAME: usize = 4096;

/// The device's ifindex in this thread's network namespace, `None` if there is
/// no such device (or the name cannot be one).
pub(super) fn ifindex(device: &str) -> Option<u32> {
    let name = CString::new(device).ok()?;
    if name.as_bytes().len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// Which frames a socket lets through to the agent (in the kernel, by BPF).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Filter {
    /// Untagged IPv4, unfragmented, UDP to port 67.
    Dhcpv4,
    /// Untagged IPv6 with no extension header: ICMPv6 router solicitations
    /// and UDP to port 547 (DHCPv6 servers).
    Ipv6,
}

/// A packet socket bound to one device, non-blocking, filtered.
#[derive(Debug)]
pub(super) struct PacketSocket {
    /// Closed on a blocking thread ([`PacketSocket`]'s `Drop`).
    fd: ManuallyDrop<OwnedFd>,
    ifindex: u32,
}

/// The kernel closes a packet socket only after an RCU grace period
/// (`packet_release` calls `synchronize_net`), 8–20 ms here: a port's
/// socket is closed on a blocking thread, so that a port removed does not
/// stall the runtime worker (and every task on it) that long.
impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: `fd` is taken once, here, and never used again.
        let fd = unsafe { ManuallyDrop::take(&mut self.fd) };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(fd))),
            Err(_) => drop(fd),
        }
    }
}

/// What one read returned.
enum Received {
    /// A frame the device received, `len` bytes at the start of the buffer.
    Frame(usize),
    /// Something to skip: a frame the device sent, or a truncated one.
    Skip,
}

/// What reading a ready port socket came to.
pub(super) enum Read {
    /// A frame the device received, `len` bytes at the start of the buffer.
    Frame(usize),
    /// Nothing to answer yet: would block, a frame to skip, an interrupted
    /// call, or the device down but still there (the socket resumes when it
    /// is up again).
    Again,
    /// The device was deleted: the socket is dead for good.
    Gone,
}

/// One read of a socket `ready` said is readable, on the device
/// `same_device` says is still the socket's.
pub(super) fn read_ready(
    ready: &mut AsyncFdReadyGuard<'_, PacketSocket>,
    buf: &mut [u8],
    same_device: impl Fn() -> bool,
) -> io::Result<Read> {
    let Ok(received) = ready.try_io(|s| s.get_ref().recv(buf)) else {
        return Ok(Read::Again); // would block
    };
    match received {
        Ok(Received::Frame(len)) => Ok(Read::Frame(len)),
        Ok(Received::Skip) => Ok(Read::Again),
        Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => Ok(if same_device() {
            Read::Again
        } else {
            Read::Gone
        }),
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(Read::Again),
        Err(e) => Err(e),
    }
}

impl PacketSocket {
    /// Open and bind a socket on `device`; `ErrorKind::NotFound` if there is
    /// no such device.
    pub(super) fn open(device: &str, filter: Filter) -> io::Result<Self> {
        let ifindex = ifindex(device).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no device {device}"))
        })?;

        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let filter = match filter {
            Filter::Dhcpv4 => dhcp_request_filter(),
            Filter::Ipv6 => ipv6_host_filter(),
        };
        let prog = libc::sock_fprog {
            len: filter.len() as libc::c_ushort,
            filter: filter.as_ptr().cast_mut(),
        };
        setsockopt(&fd, libc::SOL_SOCKET, SO_ATTACH_FILTER, &prog)?;
        // Best effort: older kernels lack it, and `recv` checks the packet
        // type anyway.
        let _ = setsockopt(
            &fd,
            libc::SOL_PACKET,
            PACKET_IGNORE_OUTGOING,
            &1 as &libc::c_int,
        );

        let addr = sockaddr(ifindex, libc::ETH_P_ALL);
        // SAFETY: `addr` is a valid `sockaddr_ll` and the length is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket {
            fd: ManuallyDrop::new(fd),
            ifindex,
        })
    }

    /// Register with the current tokio reactor.
    pub(super) fn into_async(self, interest: Interest) -> io::Result<AsyncFd<PacketSocket>> {
        // SAFETY: the descriptor is owned by `self.fd`, stays open for as long
        // as the `AsyncFd` owns `self`, and `as_raw_fd` always returns it.
        unsafe { AsyncFd::register_with_interest(self, interest) }.map_err(|e| e.into_parts().1)
    }

    pub(super) fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Read one frame into `buf` (non-blocking: `WouldBlock` when none).
    fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        // SAFETY: all-zero is a valid `sockaddr_ll`.
        let mut from: libc::sockaddr_ll = unsafe { mem::zeroed() };
        let mut from_len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf` is valid for `buf.len()` writable bytes; `from` and
        // `from_len` describe a writable `sockaddr_ll`.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
                (&raw mut from).cast(),
                &mut from_len,
            )
        };
        // A negative return is the error; otherwise it fits in usize.
        let Ok(n) = usize::try_from(n) else {
            return Err(io::Error::last_os_error());
        };
        if from.sll_pkttype == PACKET_OUTGOING || n > buf.len() {
            return Ok(Received::Skip);
        }
        Ok(Received::Frame(n))
    }

    /// Write one whole Ethernet frame out of the device.
    pub(super) fn send(&self, frame: &[u8]) -> io::Result<()> {
        send_frame(&*self.fd, self.ifindex, frame)
    }
}

/// Writes one whole Ethernet frame out of the device `ifindex` on a packet
/// socket of that device's namespace.
pub(crate) fn send_frame(socket: &impl AsRawFd, ifindex: u32, frame: &[u8]) -> io::Result<()> {
    let ethertype = frame.get(12..14).map_or(libc::ETH_P_IP, |t| {
        libc::c_int::from(u16::from_be_bytes([t[0], t[1]]))
    });
    let addr = sockaddr(ifindex, ethertype);
    // SAFETY: `frame` is valid for `frame.len()` bytes; `addr` is a valid
    // `sockaddr_ll` and the length is its size.
    let n = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const addr).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn sockaddr(ifindex: u32, protocol: libc::c_int) -> libc::sockaddr_ll {
    // SAFETY: all-zero is a valid `sockaddr_ll`.
    let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = (protocol as u16).to_be();
    // ifindexes are positive `int`s in the kernel.
    addr.sll_ifindex = ifindex as libc::c_int;
    addr
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of exactly the length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn insn(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Classic BPF: accept untagged IPv4, not a fragment, UDP, destination port
/// 67; drop everything else. Offsets are from the Ethernet header.
fn dhcp_request_filter() -> Vec<libc::sock_filter> {
    use libc::{
        BPF_ABS, BPF_B, BPF_H, BPF_IND, BPF_JEQ, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_LDX,
        BPF_MSH, BPF_RET, BPF_W,
    };
    let vlan_present = (libc::SKF_AD_OFF + libc::SKF_AD_VLAN_TAG_PRESENT) as u32;
    // Each conditional jumps to `drop` (the last instruction) on failure;
    // `jf`/`jt` count instructions skipped, so they depend on the position.
    let prog = [
        // 0: a VLAN tag the NIC/veth took out of the frame: not ours.
        insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, vlan_present),
        insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 10, 0),
        // 2: ethertype IPv4.
        insn(BPF_LD | BPF_H | BPF_ABS, 0, 0, 12),
        insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 8, 0x0800),
        // 4: protocol UDP.
        insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, 14 + 9),
        insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 6, 17),
        // 6: not a fragment (more-fragments flag or an offset).
        insn(BPF_LD | BPF_H | BPF_ABS, 0, 0, 14 + 6),
        insn(BPF_JMP | BPF_JSET | BPF_K, 4, 0, 0x3fff),
        // 8: X = IP header length; UDP destination port at 14 + X + 2.
        insn(BPF_LDX | BPF_B | BPF_MSH, 0, 0, 14),
        insn(BPF_LD | BPF_H | BPF_IND, 0, 0, 14 + 2),
        insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 67),
        // 11: accept the whole frame.
        insn(BPF_RET | BPF_K, 0, 0, u32::MAX),
        // 12: drop.
        insn(BPF_RET | BPF_K, 0, 0, 0),
    ];
    prog.to_vec()
}

/// Classic BPF: accept untagged IPv6 whose next header is ICMPv6 type 133
/// (router solicitation) or UDP to port 547; drop everything else (MLD,
/// neighbour discovery, traffic). Offsets are from the Ethernet header; the
/// upper layer starts right after the fixed 40-byte header.
fn ipv6_host_filter() -> Vec<libc::sock_filter> {
    use libc::{BPF_ABS, BPF_B, BPF_H, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let vlan_present = (libc::SKF_AD_OFF + libc::SKF_AD_VLAN_TAG_PRESENT) as u32;
    let prog = [
        // 0: no VLAN tag.
        insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, vlan_present),
        insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 10, 0),
        // 2: ethertype IPv6.
        insn(BPF_LD | BPF_H | BPF_ABS, 0, 0, 12),
        insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 8, 0x86dd),
        // 4: next header ICMPv6 → its type; else try UDP at 8.
        insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, 14 + 6),
        insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 2, 58),
        insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, 14 + 40),
        insn(BPF_JMP | BPF_JEQ | BPF_K, 3, 4, 133),
        // 8: UDP, destination port 547.
        insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 3, 17),
        insn(BPF_LD | BPF_H | BPF_ABS, 0, 0, 14 + 40 + 2),
        insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 547),
        // 11: accept the whole frame.
        insn(BPF_RET | BPF_K, 0, 0, u32::MAX),
        // 12: drop.
        insn(BPF_RET | BPF_K, 0, 0, 0),
    ];
    prog.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every jump of the filter lands inside the program, and every failing
    /// branch lands on the final drop.
    #[test]
    fn filter_jumps_land_on_drop() {
        let prog = dhcp_request_filter();
        let last = prog.len() - 1;
        assert_eq!(prog[last].code as u32, libc::BPF_RET | libc::BPF_K);
        assert_eq!(prog[last].k, 0);
        for (i, ins) in prog.iter().enumerate() {
            if u32::from(ins.code) & 0x07 == libc::BPF_JMP {
                let fail = if u32::from(ins.code) & 0xf0 == libc::BPF_JSET {
                    i + 1 + usize::from(ins.jt)
                } else {
                    i + 1 + usize::from(ins.jf)
                };
                assert_eq!(fail, last, "instruction {i}");
            }
        }
    }

    /// The IPv6 filter's jumps land inside the program, and every branch
    /// ends on the accept or the drop.
    #[test]
    fn ipv6_filter_jumps_land_inside() {
        let prog = ipv6_host_filter();
        for (i, ins) in prog.iter().enumerate() {
            if u32::from(ins.code) & 0x07 == libc::BPF_JMP {
                assert!(i + 1 + usize::from(ins.jt) < prog.len(), "instruction {i}");
                assert!(i + 1 + usize::from(ins.jf) < prog.len(), "instruction {i}");
            }
        }
        assert_eq!(prog[11].k, u32::MAX);
        assert_eq!(prog[12].k, 0);
        // Instruction 7 (ICMPv6 type) goes to accept or drop.
        assert_eq!(7 + 1 + usize::from(prog[7].jt), 11);
        assert_eq!(7 + 1 + usize::from(prog[7].jf), 12);
    }

    #[test]
    fn unknown_devices_have_no_index() {
        assert_eq!(ifindex("vnet-no-such0"), None);
        assert_eq!(ifindex("a-name-far-too-long-for-linux"), None);
        assert_eq!(ifindex("nul\0byte"), None);
        assert!(ifindex("lo").is_some());
    }
}
