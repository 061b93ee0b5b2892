//! Packet captures inside a namespace (tcpdump writing a pcap file), and the
//! decoding tests need: the frames carried inside VXLAN on the underlay.

use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::{CmdError, Netns};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A running tcpdump in a namespace. [`Capture::stop`] returns the frames;
/// dropping it without stopping kills tcpdump and removes its file.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    path: PathBuf,
}

impl Capture {
    /// Starts capturing on `iface` in `ns` with a tcpdump `filter` (may be
    /// empty); returns once tcpdump listens.
    pub fn start(ns: &Netns, iface: &str, filter: &str) -> Result<Self, CmdError> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("{}-{n}.pcap", ns.name()));
        let err = |e: String| CmdError {
            command: format!("tcpdump -i {iface} {filter}"),
            status: None,
            stdout: String::new(),
            stderr: e,
        };
        let mut cmd = ns.command("tcpdump");
        // Immediate mode: otherwise libpcap hands packets over a block at a
        // time (after up to a second), and a capture stopped sooner loses
        // the last packets.
        cmd.args([
            "-i",
            iface,
            "--immediate-mode",
            "-U",
            "-n",
            "-s",
            "256",
            "-w",
        ])
        .arg(&path)
        .args(filter.split_whitespace())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| err(e.to_string()))?;
        let Some(stderr) = child.stderr.take() else {
            return Err(err("no stderr".into()));
        };
        let mut capture = Capture {
            child: Some(child),
            path,
        };
        // tcpdump says "listening on …" once its socket is open.
        let mut lines = BufReader::new(stderr);
        let mut said = String::new();
        loop {
            let mut line = String::new();
            match lines.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    capture.kill();
                    return Err(err(said));
                }
                Ok(_) if line.contains("listening on") => break,
                Ok(_) => said.push_str(&line),
            }
        }
        // Drain the rest so tcpdump never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = lines.read_to_end(&mut sink);
        });
        Ok(capture)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let _ = child.wait();
        }
    }

    /// Stops tcpdump and returns every captured frame (Ethernet).
    pub fn stop(mut self) -> Result<Vec<Vec<u8>>, CmdError> {
        self.kill();
        let bytes = std::fs::read(&self.path).map_err(|e| CmdError {
            command: format!("read {}", self.path.display()),
            status: None,
            stdout: String::new(),
            stderr: e.to_string(),
        })?;
        Ok(parse_pcap(&bytes))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The frames of a classic pcap file (either byte order, µs or ns). Stops at
/// the first truncated record.
pub fn parse_pcap(bytes: &[u8]) -> Vec<Vec<u8>> {
    let Some(magic) = bytes.get(0..4) else {
        return vec![];
    };
    let little = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return vec![],
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let mut frames = vec![];
    let mut at = 24;
    while let Some(incl) = u32_at(at + 8) {
        let start = at + 16;
        let end = start + incl as usize;
        let Some(frame) = bytes.get(start..end) else {
            break;
        };
        frames.push(frame.to_vec());
        at = end;
    }
    frames
}

/// One frame carried inside VXLAN (UDP port 4789 over IPv4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanFrame {
    pub outer_src: Ipv4Addr,
    pub outer_dst: Ipv4Addr,
    pub vni: u32,
    pub inner_dst: [u8; 6],
    pub inner_src: [u8; 6],
    /// After any 802.1Q tag.
    pub inner_ethertype: u16,
    /// The inner IPv4 header's addresses and TTL, if it carries IPv4.
    pub inner_ipv4: Option<InnerIpv4>,
    /// The inner IPv6 header's addresses, hop limit and (right after the
    /// fixed header) ICMPv6 type, if it carries IPv6.
    pub inner_ipv6: Option<InnerIpv6>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InnerIpv6 {
    pub src: std::net::Ipv6Addr,
    pub dst: std::net::Ipv6Addr,
    pub hop_limit: u8,
    /// `Some` when the next header is ICMPv6 (58).
    pub icmpv6_type: Option<u8>,
}

/// ICMPv6 neighbour solicitation.
pub const ICMPV6_NEIGHBOUR_SOLICITATION: u8 = 135;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InnerIpv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
}

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const VXLAN_PORT: u16 = 4789;

impl VxlanFrame {
    /// Decodes an underlay Ethernet frame; `None` if it is not VXLAN.
    pub fn decode(frame: &[u8]) -> Option<Self> {
        let be16 = |b: &[u8], at: usize| -> Option<u16> {
            Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
        };
        if be16(frame, 12)? != ETHERTYPE_IPV4 {
            return None;
        }
        let ip = frame.get(14..)?;
        let ihl = usize::from(ip.first()? & 0x0f) * 4;
        if *ip.get(9)? != 17 {
            return None;
        }
        let addr = |at: usize| -> Option<Ipv4Addr> {
            let b: [u8; 4] = ip.get(at..at + 4)?.try_into().ok()?;
            Some(Ipv4Addr::from(b))
        };
        let udp = ip.get(ihl..)?;
        if be16(udp, 2)? != VXLAN_PORT {
            return None;
        }
        let vxlan = udp.get(8..16)?;
        let vni = u32::from_be_bytes(vxlan.get(4..8)?.try_into().ok()?) >> 8;
        let inner = udp.get(16..)?;
        let mut ethertype = be16(inner, 12)?;
        let mut payload = 14;
        if ethertype == 0x8100 {
            ethertype = be16(inner, 16)?;
            payload = 18;
        }
        let inner_ipv4 = (ethertype == ETHERTYPE_IPV4)
            .then(|| {
                let h = inner.get(payload..payload + 20)?;
                Some(InnerIpv4 {
                    src: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
                    dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
                    ttl: h[8],
                })
            })
            .flatten();
        let inner_ipv6 = (ethertype == ETHERTYPE_IPV6)
            .then(|| {
                let h = inner.get(payload..payload + 40)?;
                let addr = |at: usize| -> Option<std::net::Ipv6Addr> {
                    let b: [u8; 16] = h.get(at..at + 16)?.try_into().ok()?;
                    Some(std::net::Ipv6Addr::from(b))
                };
                Some(InnerIpv6 {
                    src: addr(8)?,
                    dst: addr(24)?,
                    hop_limit: h[7],
                    icmpv6_type: if h[6] == 58 {
                        inner.get(payload + 40).copied()
                    } else {
                        None
                    },
                })
            })
            .flatten();
        Some(VxlanFrame {
            outer_src: addr(12)?,
            outer_dst: addr(16)?,
            vni,
            inner_dst: inner.get(0..6)?.try_into().ok()?,
            inner_src: inner.get(6..12)?.try_into().ok()?,
            inner_ethertype: ethertype,
            inner_ipv4,
            inner_ipv6,
        })
    }

    pub fn is_arp(&self) -> bool {
        self.inner_ethertype == ETHERTYPE_ARP
    }

    /// Broadcast or multicast destination (what flooding would carry).
    pub fn is_flood(&self) -> bool {
        self.inner_dst[0] & 1 == 1
    }
}

/// The VXLAN frames among captured underlay frames.
pub fn vxlan_frames(frames: &[Vec<u8>]) -> Vec<VxlanFrame> {
    frames
        .iter()
        .filter_map(|f| VxlanFrame::decode(f))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn underlay_frame(vni: u32, inner_dst: [u8; 6], ethertype: u16) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
        ip.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0x12, 0x34]);
        f.extend_from_slice(&VXLAN_PORT.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(&[0x08, 0, 0, 0]);
        f.extend_from_slice(&(vni << 8).to_be_bytes());
        f.extend_from_slice(&inner_dst);
        f.extend_from_slice(&[0xfa, 0x16, 0x3e, 0, 0, 1]);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    #[test]
    fn vxlan_frames_are_decoded() {
        let f = VxlanFrame::decode(&underlay_frame(4242, [0xff; 6], ETHERTYPE_ARP)).expect("vxlan");
        assert_eq!(f.vni, 4242);
        assert_eq!(f.outer_dst, Ipv4Addr::new(192, 0, 2, 2));
        assert!(f.is_arp() && f.is_flood());
        let f = VxlanFrame::decode(&underlay_frame(
            7,
            [0xfa, 0x16, 0x3e, 0, 0, 2],
            ETHERTYPE_IPV4,
        ))
        .expect("vxlan");
        assert!(!f.is_arp() && !f.is_flood());
        assert_eq!(f.inner_ipv4, None, "too short to be IPv4");
        let mut routed = underlay_frame(7, [0xfa, 0x16, 0x3e, 0, 0, 2], ETHERTYPE_IPV4);
        routed.extend_from_slice(&[0x45, 0, 0, 84, 0, 0, 0, 0, 63, 1, 0, 0]);
        routed.extend_from_slice(&[10, 1, 0, 10, 10, 2, 0, 20]);
        let inner = VxlanFrame::decode(&routed).and_then(|f| f.inner_ipv4);
        assert_eq!(
            inner,
            Some(InnerIpv4 {
                src: Ipv4Addr::new(10, 1, 0, 10),
                dst: Ipv4Addr::new(10, 2, 0, 20),
                ttl: 63,
            })
        );
        let mut not_udp = underlay_frame(7, [0; 6], ETHERTYPE_IPV4);
        not_udp[14 + 9] = 6;
        assert_eq!(VxlanFrame::decode(&not_udp), None);
    }

    #[test]
    fn pcap_files_are_split_into_frames() {
        let mut file = vec![0xd4, 0xc3, 0xb2, 0xa1];
        file.extend_from_slice(&[0; 20]);
        for frame in [&[1u8, 2, 3][..], &[4, 5]] {
            file.extend_from_slice(&[0; 8]);
            let len = u32::try_from(frame.len()).unwrap_or(0).to_le_bytes();
            file.extend_from_slice(&len);
            file.extend_from_slice(&len);
            file.extend_from_slice(frame);
        }
        assert_eq!(parse_pcap(&file), vec![vec![1, 2, 3], vec![4, 5]]);
    }
}
