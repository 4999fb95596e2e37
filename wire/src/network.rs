//! An agent's network interfaces as its hello reports them (MAC and IPv4 networks, for
//! Wake-on-LAN), and the magic packet a relay agent broadcasts to wake a machine.

use serde::{Deserialize, Serialize};

use crate::metrics::{Capped, Name};
/// Most IPv4 networks reported per interface.
pub const MAX_IPV4_PER_INTERFACE: usize = 8;
/// The port a magic packet goes to unless the operator names another (the discard port).
pub const WAKE_PORT: u16 = 9;
/// A magic packet: six `0xFF` bytes, then the MAC sixteen times.
pub const MAGIC_PACKET_LEN: usize = 6 + 16 * 6;

/// One network interface: its name, MAC address and IPv4 networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetInterface {
    pub name: Name,
    pub mac: [u8; 6],
    pub ipv4: Capped<Ipv4Net, MAX_IPV4_PER_INTERFACE>,
}

/// An IPv4 address with its prefix length (`10.0.0.7/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ipv4Net {
    pub addr: [u8; 4],
    /// 0 to 32; a larger value (from a bad peer) is read as 32.
    pub prefix: u8,
}

impl Ipv4Net {
    fn mask(self) -> u32 {
        match self.prefix.min(32) {
            0 => 0,
            p => u32::MAX << (32 - u32::from(p)),
        }
    }

    /// The network address: the host bits cleared.
    pub fn network(self) -> [u8; 4] {
        (u32::from_be_bytes(self.addr) & self.mask()).to_be_bytes()
    }

    /// The directed broadcast address: the host bits set.
    pub fn broadcast(self) -> [u8; 4] {
        (u32::from_be_bytes(self.addr) | !self.mask()).to_be_bytes()
    }

    /// Whether `other` is the same network (same prefix and network address).
    pub fn same_network(self, other: Ipv4Net) -> bool {
        self.prefix.min(32) == other.prefix.min(32) && self.network() == other.network()
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d] = self.addr;
        write!(f, "{a}.{b}.{c}.{d}/{}", self.prefix)
    }
}

impl std::str::FromStr for Ipv4Net {
    type Err = String;

    /// `a.b.c.d/p`, with `p` from 0 to 32.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an IPv4 network like 10.0.0.0/24"))?;
        let addr: std::net::Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{prefix:?} is not a prefix length from 0 to 32"))?;
        Ok(Self {
            addr: addr.octets(),
            prefix,
        })
    }
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Reads `aa:bb:cc:dd:ee:ff` (or with `-`), any case.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The magic packet that wakes the machine with `mac`.
pub fn magic_packet(mac: [u8; 6]) -> [u8; MAGIC_PACKET_LEN] {
    let mut packet = [0xFF; MAGIC_PACKET_LEN];
    for copy in packet[6..].chunks_exact_mut(6) {
        copy.copy_from_slice(&mac);
    }
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn networks_and_broadcasts_follow_the_prefix() {
        let a = net("192.168.7.23/24");
        assert_eq!(a.network(), [192, 168, 7, 0]);
        assert_eq!(a.broadcast(), [192, 168, 7, 255]);
        assert!(a.same_network(net("192.168.7.200/24")));
        assert!(!a.same_network(net("192.168.7.200/25")), "another prefix");
        assert!(!a.same_network(net("192.168.8.1/24")));
        assert_eq!(net("10.1.2.3/8").broadcast(), [10, 255, 255, 255]);
        assert_eq!(net("10.1.2.3/32").broadcast(), [10, 1, 2, 3]);
        assert_eq!(net("10.1.2.3/0").network(), [0, 0, 0, 0]);
        let bad = Ipv4Net {
            addr: [10, 1, 2, 3],
            prefix: 200,
        };
        assert_eq!(bad.broadcast(), [10, 1, 2, 3], "read as /32, no overflow");
        assert_eq!(a.to_string(), "192.168.7.23/24");
    }

    #[test]
    fn bad_networks_and_macs_are_refused() {
        for s in [
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0/24",
            "x/24",
            "10.0.0.0/-1",
        ] {
            assert!(s.parse::<Ipv4Net>().is_err(), "{s}");
        }
        assert_eq!(
            parse_mac("AA:bb:0c:dd:ee:01"),
            Some([0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0x01])
        );
        assert_eq!(
            parse_mac("aa-bb-0c-dd-ee-01"),
            parse_mac("aa:bb:0c:dd:ee:01")
        );
        for s in [
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aabbccddeeff",
            "a:bb:cc:dd:ee:ff",
            "gg:bb:cc:dd:ee:ff",
        ] {
            assert_eq!(parse_mac(s), None, "{s}");
        }
        assert_eq!(format_mac([0xaa, 0, 1, 2, 3, 0xff]), "aa:00:01:02:03:ff");
    }

    #[test]
    fn a_magic_packet_is_six_ff_then_sixteen_macs() {
        let mac = [1, 2, 3, 4, 5, 6];
        let p = magic_packet(mac);
        assert_eq!(p.len(), 102);
        assert_eq!(&p[..6], &[0xFF; 6]);
        assert!(p[6..].chunks(6).all(|c| c == mac));
    }
}
