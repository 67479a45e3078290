//! IP truncation: the only forms of a visitor's address that Glimpse keeps or hashes.
//!
//! [`truncate`] gives the network stored in the optional `ip_prefix` column (host bits zeroed);
//! [`hashing_network`] gives the address fed into the daily visitor hash. IPv4-mapped IPv6
//! addresses (`::ffff:1.2.3.4`) are treated as the IPv4 address they carry everywhere, so one
//! visitor is one visitor whether a dual-stack socket reported them mapped or not.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The longest IPv4 prefix (bits).
pub const MAX_V4_PREFIX: u8 = 32;
/// The longest IPv6 prefix (bits).
pub const MAX_V6_PREFIX: u8 = 128;
/// Bits of an IPv6 address kept for visitor hashing: the /64 a router hands out to a LAN.
pub const HASHING_V6_PREFIX: u8 = 64;

/// The network `ip` belongs to at the given prefix lengths (bits), host bits zeroed.
///
/// `v4_prefix` applies to IPv4 (and IPv4-mapped IPv6) addresses and is clamped to `0..=32`;
/// `v6_prefix` applies to IPv6 and is clamped to `0..=128`. `Display` gives the usual CIDR
/// text, e.g. `81.2.69.0/24` or `2001:db8:1234::/48`.
pub fn truncate(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> IpNet {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpNet::V4(Ipv4Net::new_assert(v4, v4_prefix.min(MAX_V4_PREFIX)).trunc()),
        IpAddr::V6(v6) => IpNet::V6(Ipv6Net::new_assert(v6, v6_prefix.min(MAX_V6_PREFIX)).trunc()),
    }
}

/// The address used as the network part of the visitor hash.
///
/// IPv4 addresses are used whole. IPv6 addresses are reduced to their /64: privacy extensions
/// (RFC 8981) rotate the lower 64 bits every few hours, so hashing the full address would give
/// one person a new visitor id several times a day. IPv4-mapped addresses count as IPv4.
pub fn hashing_network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let net = Ipv6Net::new_assert(v6, HASHING_V6_PREFIX).trunc();
            IpAddr::V6(net.addr())
        }
    }
}

/// Checks configured prefix lengths (bits): IPv4 at most 32, IPv6 at most 128.
pub fn validate_prefixes(v4: u8, v6: u8) -> Result<(), PrefixError> {
    if v4 > MAX_V4_PREFIX {
        return Err(PrefixError::V4(v4));
    }
    if v6 > MAX_V6_PREFIX {
        return Err(PrefixError::V6(v6));
    }
    Ok(())
}

/// A prefix length longer than the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("IPv4 prefix length {0} is out of range (0 to {MAX_V4_PREFIX} bits)")]
    V4(u8),
    #[error("IPv6 prefix length {0} is out of range (0 to {MAX_V6_PREFIX} bits)")]
    V6(u8),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn truncates_ipv4_at_several_prefixes() {
        let cases = [
            ("81.2.69.142", 0, "0.0.0.0/0"),
            ("81.2.69.142", 8, "81.0.0.0/8"),
            ("81.2.69.142", 16, "81.2.0.0/16"),
            ("81.2.69.142", 24, "81.2.69.0/24"),
            ("81.2.69.142", 28, "81.2.69.128/28"),
            ("81.2.69.142", 32, "81.2.69.142/32"),
            ("255.255.255.255", 24, "255.255.255.0/24"),
        ];
        for (addr, prefix, want) in cases {
            assert_eq!(
                truncate(ip(addr), prefix, 48).to_string(),
                want,
                "{addr}/{prefix}"
            );
        }
    }

    #[test]
    fn truncates_ipv6_at_several_prefixes() {
        let addr = "2001:db8:1234:5678:9abc:def0:1234:5678";
        let cases = [
            (0, "::/0"),
            (32, "2001:db8::/32"),
            (48, "2001:db8:1234::/48"),
            (56, "2001:db8:1234:5600::/56"),
            (64, "2001:db8:1234:5678::/64"),
            (128, "2001:db8:1234:5678:9abc:def0:1234:5678/128"),
        ];
        for (prefix, want) in cases {
            assert_eq!(
                truncate(ip(addr), 24, prefix).to_string(),
                want,
                "/{prefix}"
            );
        }
    }

    #[test]
    fn prefixes_are_clamped() {
        assert_eq!(
            truncate(ip("81.2.69.142"), 200, 48).to_string(),
            "81.2.69.142/32"
        );
        assert_eq!(
            truncate(ip("2001:db8::1"), 24, 255).to_string(),
            "2001:db8::1/128"
        );
    }

    #[test]
    fn mapped_ipv6_is_truncated_as_ipv4() {
        assert_eq!(
            truncate(ip("::ffff:81.2.69.142"), 24, 48).to_string(),
            "81.2.69.0/24"
        );
        assert_eq!(
            truncate(ip("::ffff:81.2.69.142"), 16, 128).to_string(),
            "81.2.0.0/16"
        );
        // IPv4-compatible (deprecated, not mapped) addresses stay IPv6.
        assert_eq!(truncate(ip("::81.2.69.142"), 24, 96).to_string(), "::/96");
    }

    #[test]
    fn hashing_network_keeps_ipv4_and_the_ipv6_slash_64() {
        assert_eq!(hashing_network(ip("81.2.69.142")), ip("81.2.69.142"));
        assert_eq!(hashing_network(ip("::ffff:81.2.69.142")), ip("81.2.69.142"));
        assert_eq!(
            hashing_network(ip("2001:db8:1234:5678:9abc:def0:1234:5678")),
            ip("2001:db8:1234:5678::")
        );
        // Two privacy addresses of one host share a hashing network.
        assert_eq!(
            hashing_network(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            hashing_network(ip("2001:db8:1:2:1111:2222:3333:4444"))
        );
        assert_ne!(
            hashing_network(ip("2001:db8:1:2::1")),
            hashing_network(ip("2001:db8:1:3::1"))
        );
        assert_eq!(hashing_network(ip("::1")), ip("::"));
    }

    #[test]
    fn validates_prefixes() {
        assert!(validate_prefixes(0, 0).is_ok());
        assert!(validate_prefixes(24, 48).is_ok());
        assert!(validate_prefixes(32, 128).is_ok());
        let err = validate_prefixes(33, 48).unwrap_err().to_string();
        assert!(err.contains("IPv4") && err.contains("33"), "{err}");
        let err = validate_prefixes(24, 129).unwrap_err().to_string();
        assert!(err.contains("IPv6") && err.contains("129"), "{err}");
    }
}
