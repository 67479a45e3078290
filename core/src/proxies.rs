//! Which proxies the operator trusts to report the client's address, and in which header
//! (`trusted_proxies`, `client_ip_header`): parsed once with the configuration.

use std::fmt;
use std::net::IpAddr;

use http::header::HeaderName;
use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a proxy setting cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("{0:?} is not a header name (use x-forwarded-for, forwarded, x-real-ip, or the header your proxy sets, e.g. cf-connecting-ip)")]
    Header(String),
    #[error("trusted proxy {0:?} is neither an IP address nor a CIDR network (e.g. 10.0.0.0/8, 127.0.0.1, ::1, fd00::/8)")]
    Net(String),
}

/// The networks of the trusted proxies, parsed from their text (`trusted_proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyNets(Vec<IpNet>);

impl ProxyNets {
    /// CIDRs or bare addresses; blank entries are skipped; the error names the first bad one.
    pub fn parse(list: &[String]) -> Result<Self, ProxyError> {
        let mut nets = Vec::with_capacity(list.len());
        for entry in list {
            let text = entry.trim();
            if text.is_empty() {
                continue;
            }
            nets.push(parse_net(text).ok_or_else(|| ProxyError::Net(entry.clone()))?);
        }
        Ok(Self(nets))
    }
}

impl std::str::FromStr for ProxyNets {
    type Err = ProxyError;

    /// A comma-separated list, as in `GLIMPSE_TRUSTED_PROXIES`.
    fn from_str(text: &str) -> Result<Self, ProxyError> {
        Self::parse(&text.split(',').map(String::from).collect::<Vec<_>>())
    }
}

impl Serialize for ProxyNets {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let texts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        texts.serialize(serializer)
    }
}

/// The one header trusted proxies report the client's address in (`client_ip_header`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For`: a comma-separated list each proxy appends to (the default; what
    /// nginx's `$proxy_add_x_forwarded_for`, Caddy, Traefik and most load balancers send).
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239): its elements' `for=`, a list like `X-Forwarded-For`.
    Forwarded,
    /// `X-Real-IP`: one address, set by the nearest proxy.
    XRealIp,
    /// Any other header holding one address, e.g. `cf-connecting-ip`, `true-client-ip`.
    Other(HeaderName),
}

impl ClientIpHeader {
    /// `x-forwarded-for`, `forwarded`, `x-real-ip`, or another header name (any case).
    pub fn parse(text: &str) -> Result<Self, ProxyError> {
        let name = text.trim().to_ascii_lowercase();
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ProxyError::Header(text.to_string()))?;
        Ok(match header.as_str() {
            "x-forwarded-for" => Self::XForwardedFor,
            "forwarded" => Self::Forwarded,
            "x-real-ip" => Self::XRealIp,
            _ => Self::Other(header),
        })
    }

    /// The header's name, lower case.
    pub fn name(&self) -> &str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
            Self::XRealIp => "x-real-ip",
            Self::Other(name) => name.as_str(),
        }
    }
}

impl fmt::Display for ClientIpHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for ClientIpHeader {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ClientIpHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Networks whose proxy header is believed, and that header. No networks (the default): no
/// header is ever believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ClientIpHeader,
}

impl TrustedProxies {
    /// Parses CIDRs (`10.0.0.0/8`, `fd00::/8`) or bare addresses (`127.0.0.1`, `::1`).
    /// Host bits of a CIDR are ignored (`10.1.2.3/8` means `10.0.0.0/8`); blank entries are
    /// skipped; IPv4-mapped IPv6 entries (`::ffff:10.0.0.0/104`) mean the IPv4 network.
    /// The error names the first entry that is neither. The proxies report the client in
    /// `header`; every other forwarding header is ignored.
    pub fn parse(list: &[String], header: ClientIpHeader) -> Result<Self, ProxyError> {
        Ok(Self::new(ProxyNets::parse(list)?, header))
    }

    /// Proxies already parsed (the configuration's `trusted_proxies`).
    pub fn new(nets: ProxyNets, header: ClientIpHeader) -> Self {
        TrustedProxies {
            nets: nets.0,
            header,
        }
    }

    /// Whether `ip` (IPv4-mapped IPv6 counts as IPv4) is in one of the trusted networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// True when no proxy is trusted, i.e. the client is always the socket peer.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The header the proxies report the client in.
    pub fn header(&self) -> &ClientIpHeader {
        &self.header
    }
}

fn parse_net(text: &str) -> Option<IpNet> {
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => {
            let bare = text
                .strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .unwrap_or(text);
            IpNet::from(bare.parse::<IpAddr>().ok()?)
        }
    };
    Some(canonical_net(net).trunc())
}

/// `::ffff:a.b.c.d/n` (n ≥ 96) is the IPv4 network `a.b.c.d/(n-96)`, so that it matches
/// addresses after they were normalised to IPv4.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            if let Ok(v4net) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                return IpNet::V4(v4net);
            }
        }
    }
    net
}
