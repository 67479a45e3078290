//! Who the client is: the socket peer, or — only behind proxies the operator trusts — the
//! address those proxies report.
//!
//! Any client can send `X-Forwarded-For: 1.2.3.4`, so proxy headers are believed only when the
//! socket peer is a configured trusted proxy. The client is then the rightmost address in the
//! chain that is not itself a trusted proxy: every hop to its right was added by a proxy we
//! trust, while anything to its left was written by the client and may be forged.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::header::{HeaderMap, HeaderName};
use ipnet::{IpNet, Ipv4Net};

/// Networks whose proxy headers are believed. Empty (the default): headers are never believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses CIDRs (`10.0.0.0/8`, `fd00::/8`) or bare addresses (`127.0.0.1`, `::1`).
    /// Host bits of a CIDR are ignored (`10.1.2.3/8` means `10.0.0.0/8`); blank entries are
    /// skipped; IPv4-mapped IPv6 entries (`::ffff:10.0.0.0/104`) mean the IPv4 network.
    /// The error names the first entry that is neither.
    pub fn parse(list: &[String]) -> Result<Self, String> {
        let mut nets = Vec::with_capacity(list.len());
        for entry in list {
            let text = entry.trim();
            if text.is_empty() {
                continue;
            }
            let net = parse_net(text).ok_or_else(|| {
                format!(
                    "trusted proxy {entry:?} is neither an IP address nor a CIDR network \
                     (e.g. 10.0.0.0/8, 127.0.0.1, ::1, fd00::/8)"
                )
            })?;
            nets.push(net);
        }
        Ok(TrustedProxies { nets })
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

/// The client's address: `peer` unless `peer` is a trusted proxy, in which case the rightmost
/// untrusted address of the forwarding chain (if every hop is trusted, the leftmost one).
///
/// Headers, in order of preference: `Forwarded` (RFC 7239 `for=`), `X-Forwarded-For`, then
/// `X-Real-IP` (only when the other two are absent). Several lines of one header are read in
/// order as one list. The walk goes right to left and stops at the first entry that is not an
/// address (garbage, `unknown`, an obfuscated `_name`): the answer is then the last good
/// address, the one the nearest trusted proxy vouched for. IPv4-mapped IPv6 addresses are
/// returned as IPv4, the peer included. Never panics.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let hops = forwarded_hops(headers)
        .or_else(|| list_hops(headers, &X_FORWARDED_FOR))
        .or_else(|| real_ip_hop(headers))
        .unwrap_or_default();

    let mut last_good = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = hop.map(|ip| ip.to_canonical()) else {
            break;
        };
        if !trusted.contains(ip) {
            return ip;
        }
        last_good = ip;
    }
    last_good
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// One hop of a forwarding chain: an address, or `None` for anything unusable.
type Hop = Option<IpAddr>;

/// The `for=` of each element of all `Forwarded` lines, or `None` when no element has one
/// (then the next header is consulted). An element without `for=`, or a line that is not
/// visible ASCII, is an unusable hop (and an unreadable line keeps us on this header).
fn forwarded_hops(headers: &HeaderMap) -> Option<Vec<Hop>> {
    let mut hops = Vec::new();
    let mut any_for = false;
    for line in headers.get_all(http::header::FORWARDED) {
        let Ok(line) = line.to_str() else {
            any_for = true;
            hops.push(None);
            continue;
        };
        for element in split_unquoted(line, ',') {
            if element.trim().is_empty() {
                continue;
            }
            let mut node = None;
            for pair in split_unquoted(element, ';') {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                if name.trim().eq_ignore_ascii_case("for") {
                    any_for = true;
                    node = parse_node(unquote(value.trim()));
                    break;
                }
            }
            hops.push(node);
        }
    }
    any_for.then_some(hops)
}

/// The entries of all lines of a comma-separated list header (`X-Forwarded-For`), or `None`
/// when the header is absent. Empty entries are ignored, as RFC 9110 §5.6.1 asks.
fn list_hops(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<Hop>> {
    let mut hops = Vec::new();
    let mut present = false;
    for line in headers.get_all(name) {
        present = true;
        let Ok(line) = line.to_str() else {
            hops.push(None);
            continue;
        };
        hops.extend(
            line.split(',')
                .map(str::trim)
                .filter(|entry| !entry.is_empty())
                .map(|entry| parse_node(unquote(entry))),
        );
    }
    present.then_some(hops)
}

/// `X-Real-IP`: one address set by the nearest proxy. With several lines the last one counts.
fn real_ip_hop(headers: &HeaderMap) -> Option<Vec<Hop>> {
    let value = headers.get_all(&X_REAL_IP).iter().next_back()?;
    let hop = value
        .to_str()
        .ok()
        .and_then(|text| parse_node(unquote(text.trim())));
    Some(vec![hop])
}

/// Splits on `sep` outside double-quoted strings (which may contain `\`-escapes).
fn split_unquoted(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if in_quotes && c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
        } else if c == sep && !in_quotes {
            parts.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&text[start..]);
    parts
}

fn unquote(text: &str) -> &str {
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:443`. Anything else (`unknown`, `_hidden`, garbage) is `None`.
fn parse_node(text: &str) -> Option<IpAddr> {
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let ip = inside.parse::<Ipv6Addr>().ok()?;
        return (after.is_empty() || after.strip_prefix(':').is_some_and(is_port))
            .then_some(IpAddr::V6(ip));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    let (host, port) = text.split_once(':')?;
    let ip = host.parse::<Ipv4Addr>().ok()?;
    is_port(port).then_some(IpAddr::V4(ip))
}

/// A port number, or an RFC 7239 obfuscated port (`_abc`): either way not part of the address.
fn is_port(text: &str) -> bool {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    let obfuscated = text.len() > 1
        && text.starts_with('_')
        && text[1..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    digits || obfuscated
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    /// Headers from `(name, value)` lines; repeated names become several lines, in order.
    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    /// The usual set-up: a load balancer at 10.0.0.5, proxies in 10/8 and on loopback.
    fn proxies() -> TrustedProxies {
        trusted(&["10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8"])
    }

    const LB: &str = "10.0.0.5";

    fn resolve(peer: &str, lines: &[(&str, &str)]) -> IpAddr {
        client_ip(ip(peer), &headers(lines), &proxies())
    }

    #[test]
    fn parses_trusted_proxies() {
        let t = proxies();
        assert!(!t.is_empty());
        assert!(t.contains(ip("10.200.3.4")));
        assert!(t.contains(ip("127.0.0.1")));
        assert!(!t.contains(ip("127.0.0.2")));
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("fd12:3456::1")));
        assert!(!t.contains(ip("fe80::1")));
        assert!(!t.contains(ip("81.2.69.142")));
        // Mapped addresses are matched as IPv4, both as the query and as the entry.
        assert!(t.contains(ip("::ffff:10.1.2.3")));
        let mapped = trusted(&["::ffff:192.168.0.0/112", "[::ffff:172.16.0.1]"]);
        assert!(mapped.contains(ip("192.168.7.7")));
        assert!(mapped.contains(ip("172.16.0.1")));
        assert!(!mapped.contains(ip("172.16.0.2")));
        // Host bits and blanks are tolerated.
        let loose = trusted(&[" 192.168.1.7/24 ", ""]);
        assert!(loose.contains(ip("192.168.1.200")));
        assert!(TrustedProxies::default().is_empty());
        assert!(!TrustedProxies::default().contains(ip("127.0.0.1")));
    }

    #[test]
    fn parse_error_names_the_bad_entry() {
        for bad in [
            "10.0.0.0/33",
            "localhost",
            "10.0.0",
            "fd00::/129",
            "1.2.3.4:80",
        ] {
            let list = vec!["127.0.0.1".to_string(), bad.to_string()];
            let err = TrustedProxies::parse(&list).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let spoofed = [
            ("x-forwarded-for", "1.1.1.1"),
            ("forwarded", "for=2.2.2.2"),
            ("x-real-ip", "3.3.3.3"),
        ];
        assert_eq!(resolve("81.2.69.142", &spoofed), ip("81.2.69.142"));
        // No trusted proxies at all: headers are never read.
        let none = TrustedProxies::default();
        assert_eq!(
            client_ip(ip("127.0.0.1"), &headers(&spoofed), &none),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn trusted_peer_without_headers_is_the_client() {
        assert_eq!(resolve(LB, &[]), ip(LB));
    }

    #[test]
    fn x_forwarded_for_chains() {
        // `client, proxy1` where proxy1 is trusted: the client.
        assert_eq!(
            resolve(LB, &[("x-forwarded-for", "81.2.69.142, 10.1.1.1")]),
            ip("81.2.69.142")
        );
        // proxy1 is not trusted: it is the nearest untrusted hop, so it is "the client";
        // what it claims further left cannot be verified.
        assert_eq!(
            resolve(LB, &[("x-forwarded-for", "81.2.69.142, 203.0.113.9")]),
            ip("203.0.113.9")
        );
        // Spoofed left entries are ignored.
        assert_eq!(
            resolve(
                LB,
                &[(
                    "x-forwarded-for",
                    "6.6.6.6, 81.2.69.142, 10.1.1.1, 127.0.0.1"
                )]
            ),
            ip("81.2.69.142")
        );
        // Every hop trusted: the leftmost.
        assert_eq!(
            resolve(LB, &[("x-forwarded-for", "10.9.9.9, 127.0.0.1, 10.1.1.1")]),
            ip("10.9.9.9")
        );
    }

    #[test]
    fn x_forwarded_for_lines_ports_and_ipv6() {
        // Several lines form one list, in order: the spoof is in the first line.
        assert_eq!(
            resolve(
                LB,
                &[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", "81.2.69.142:5678, 10.1.1.1"),
                ]
            ),
            ip("81.2.69.142")
        );
        assert_eq!(
            resolve(LB, &[("x-forwarded-for", "2001:db8::7, ::1")]),
            ip("2001:db8::7")
        );
        assert_eq!(
            resolve(LB, &[("x-forwarded-for", "[2001:db8::7]:443,,10.1.1.1,")]),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn forwarded_header() {
        assert_eq!(
            resolve(LB, &[("forwarded", "for=81.2.69.142;proto=https")]),
            ip("81.2.69.142")
        );
        assert_eq!(
            resolve(
                LB,
                &[(
                    "forwarded",
                    r#"for=6.6.6.6, For="[2001:db8:cafe::17]:4711";by=10.0.0.5, for="10.1.1.1:80""#
                )]
            ),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            resolve(LB, &[("forwarded", r#"for="[2001:db8::1]""#)]),
            ip("2001:db8::1")
        );
        assert_eq!(
            resolve(LB, &[("forwarded", r#"for="81.2.69.142:_port""#)]),
            ip("81.2.69.142")
        );
        // Separators inside quotes do not split.
        assert_eq!(
            resolve(
                LB,
                &[("forwarded", r#"host="a,b;c";for=81.2.69.142, for=10.1.1.1"#)]
            ),
            ip("81.2.69.142")
        );
        // Two lines, read in order.
        assert_eq!(
            resolve(
                LB,
                &[
                    ("forwarded", "for=81.2.69.142"),
                    ("forwarded", "for=10.1.1.1")
                ]
            ),
            ip("81.2.69.142")
        );
    }

    #[test]
    fn forwarded_is_preferred_and_falls_back_without_for() {
        let both = [
            ("x-forwarded-for", "1.1.1.1"),
            ("forwarded", "for=81.2.69.142"),
            ("x-real-ip", "3.3.3.3"),
        ];
        assert_eq!(resolve(LB, &both), ip("81.2.69.142"));
        let no_for = [
            ("forwarded", "proto=https;host=example.com"),
            ("x-forwarded-for", "81.2.69.142"),
        ];
        assert_eq!(resolve(LB, &no_for), ip("81.2.69.142"));
    }

    #[test]
    fn obfuscated_and_unknown_end_the_walk() {
        // The nearest trusted proxy's report is the last good address.
        assert_eq!(
            resolve(
                LB,
                &[("forwarded", "for=81.2.69.142, for=_hidden, for=10.1.1.1")]
            ),
            ip("10.1.1.1")
        );
        assert_eq!(
            resolve(LB, &[("forwarded", "for=81.2.69.142, for=unknown")]),
            ip(LB)
        );
        // An element without `for=` is an unknown hop when others have one.
        assert_eq!(
            resolve(LB, &[("forwarded", "for=81.2.69.142, proto=http")]),
            ip(LB)
        );
    }

    #[test]
    fn garbage_stops_the_walk_without_panicking() {
        let cases = [
            ("81.2.69.142, garbage", LB),
            ("81.2.69.142, garbage, 10.1.1.1", "10.1.1.1"),
            ("garbage, 81.2.69.142", "81.2.69.142"),
            ("999.1.1.1", LB),
            ("[2001:db8::1", LB),
            ("[2001:db8::1]x", LB),
            ("[1.2.3.4]", LB),
            ("1.2.3.4:99999999", LB),
            ("1.2.3.4:", LB),
            ("fe80::1%eth0", LB),
            ("\"", LB),
            ("💥", LB),
        ];
        for (xff, want) in cases {
            assert_eq!(resolve(LB, &[("x-forwarded-for", xff)]), ip(want), "{xff}");
        }
        for forwarded in ["for", "for=", "=;=,", "for=\"", "for=[::1", ";;,,;"] {
            let got = resolve(LB, &[("forwarded", forwarded)]);
            assert_eq!(got, ip(LB), "{forwarded}");
        }
        // Bytes that are not visible ASCII.
        let mut map = HeaderMap::new();
        map.append(
            X_FORWARDED_FOR.clone(),
            HeaderValue::from_str("81.2.69.142").unwrap(),
        );
        map.append(
            X_FORWARDED_FOR.clone(),
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        assert_eq!(client_ip(ip(LB), &map, &proxies()), ip(LB));
        let mut map = HeaderMap::new();
        map.append(
            http::header::FORWARDED,
            HeaderValue::from_bytes(b"for=\xff").unwrap(),
        );
        map.append(
            X_FORWARDED_FOR.clone(),
            HeaderValue::from_str("81.2.69.142").unwrap(),
        );
        assert_eq!(client_ip(ip(LB), &map, &proxies()), ip(LB));
    }

    #[test]
    fn never_panics_on_token_soup() {
        let tokens = [
            "", ",", ";", "=", "\"", "[", "]", ":", "for", "For=", "1.2.3.4", "::1", "_x",
            "unknown", " ", "\\", "💥", "10.1.1.1", "::ffff:", "99999",
        ];
        let t = proxies();
        for a in tokens {
            for b in tokens {
                for c in tokens {
                    let value = format!("{a}{b}{c}");
                    for name in ["forwarded", "x-forwarded-for", "x-real-ip"] {
                        let map = headers(&[(name, &value)]);
                        let got = client_ip(ip(LB), &map, &t);
                        assert!(!matches!(got, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()));
                    }
                }
            }
        }
    }

    #[test]
    fn mapped_addresses_are_ipv4_everywhere() {
        // Mapped untrusted peer.
        assert_eq!(
            resolve("::ffff:81.2.69.142", &[("x-forwarded-for", "1.1.1.1")]),
            ip("81.2.69.142")
        );
        // Mapped trusted peer, mapped hops (trusted and not).
        assert_eq!(
            resolve(
                "::ffff:10.0.0.5",
                &[("x-forwarded-for", "::ffff:81.2.69.142, ::ffff:10.1.1.1")]
            ),
            ip("81.2.69.142")
        );
        assert_eq!(
            resolve(
                "::ffff:10.0.0.5",
                &[("forwarded", r#"for="[::ffff:81.2.69.142]:80""#)]
            ),
            ip("81.2.69.142")
        );
        assert_eq!(resolve("::ffff:10.0.0.5", &[]), ip(LB));
    }

    #[test]
    fn x_real_ip_only_without_other_headers() {
        assert_eq!(
            resolve(LB, &[("x-real-ip", "81.2.69.142")]),
            ip("81.2.69.142")
        );
        assert_eq!(
            resolve(LB, &[("x-real-ip", " [2001:db8::9]:443 ")]),
            ip("2001:db8::9")
        );
        assert_eq!(resolve(LB, &[("x-real-ip", "garbage")]), ip(LB));
        assert_eq!(resolve(LB, &[("x-real-ip", "1.1.1.1, 2.2.2.2")]), ip(LB));
        assert_eq!(
            resolve(
                LB,
                &[("x-real-ip", "3.3.3.3"), ("x-forwarded-for", "81.2.69.142")]
            ),
            ip("81.2.69.142")
        );
        // From an untrusted peer it is ignored like the others.
        assert_eq!(
            resolve("81.2.69.142", &[("x-real-ip", "3.3.3.3")]),
            ip("81.2.69.142")
        );
    }
}
