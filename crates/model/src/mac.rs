//! Ethernet MAC addresses: parsing, printing, and the checks Neutron applies.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// A usable port MAC: unicast and not all zeros.
    pub fn is_valid_port_mac(&self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }

    /// Its modified EUI-64 interface identifier (RFC 4291 §2.5.1), the low
    /// 64 bits of SLAAC and link-local addresses.
    pub fn interface_id(&self) -> u64 {
        let m = self.0;
        u64::from_be_bytes([m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]])
    }

    /// The IPv6 link-local address the kernel gives an interface of this MAC.
    pub fn ipv6_link_local(&self) -> std::net::Ipv6Addr {
        std::net::Ipv6Addr::from((0xfe80u128 << 112) | u128::from(self.interface_id()))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a valid MAC address")]
pub struct MacParseError(String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    /// Accepts `aa:bb:cc:dd:ee:ff` and `aa-bb-cc-dd-ee-ff`, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_owned());
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (byte, part) in out.iter_mut().zip(&parts) {
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        let mac: MacAddr = "FA-16-3E-00-0a-FF".parse().unwrap();
        assert_eq!(mac.to_string(), "fa:16:3e:00:0a:ff");
        assert!(mac.is_valid_port_mac());
    }

    #[test]
    fn rejects_malformed_and_multicast() {
        for bad in [
            "",
            "fa:16:3e:00:0a",
            "fa:16:3e:00:0a:ff:01",
            "fa:16:3e:0:0a:ff",
            "zz:16:3e:00:0a:ff",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(
            !"01:00:5e:00:00:01"
                .parse::<MacAddr>()
                .unwrap()
                .is_valid_port_mac()
        );
        assert!(
            !"00:00:00:00:00:00"
                .parse::<MacAddr>()
                .unwrap()
                .is_valid_port_mac()
        );
    }
}
