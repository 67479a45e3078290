//! Who the client is: the socket peer, or — only behind proxies the operator trusts — the
//! address those proxies report in the one header the operator named (`client_ip_header`).
//!
//! Any client can send `X-Forwarded-For: 1.2.3.4`, so a proxy header is believed only when the
//! socket peer is a configured trusted proxy. And only one header: a proxy that appends to
//! `X-Forwarded-For` passes `Forwarded` and `X-Real-IP` through untouched, so whatever the
//! client wrote there would be believed if we read them too. The client is then the rightmost
//! address in the chain that is not itself a trusted proxy: every hop to its right was added
//! by a proxy we trust, while anything to its left was written by the client and may be forged.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::header::{HeaderMap, HeaderName};

pub use crate::proxies::{ClientIpHeader, TrustedProxies};

/// The client's address: `peer` unless `peer` is a trusted proxy, in which case the rightmost
/// untrusted address of the forwarding chain (if every hop is trusted, the leftmost one).
///
/// Only the configured header is read ([`TrustedProxies::header`]): for `Forwarded` the
/// `for=` of each element, for `X-Forwarded-For` each entry, both as lists whose several lines
/// are read in order as one; `X-Real-IP` and other headers hold one address (with several
/// lines, the last). The walk goes right to left and stops at the first entry that is not an
/// address (garbage, `unknown`, an obfuscated `_name`): the answer is then the last good
/// address, the one the nearest trusted proxy vouched for. IPv4-mapped IPv6 addresses are
/// returned as IPv4, the peer included. Never panics.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let hops = match trusted.header() {
        ClientIpHeader::XForwardedFor => list_hops(headers, &X_FORWARDED_FOR),
        ClientIpHeader::Forwarded => forwarded_hops(headers),
        ClientIpHeader::XRealIp => single_hop(headers, &X_REAL_IP),
        ClientIpHeader::Other(name) => single_hop(headers, name),
    }
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
/// (the peer is then the client). An element without `for=`, or a line that is not visible
/// ASCII, is an unusable hop.
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

/// `X-Real-IP` and the like: one address set by the nearest proxy. With several lines the last
/// one counts.
fn single_hop(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<Hop>> {
    let value = headers.get_all(name).iter().next_back()?;
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
        trusted_in("x-forwarded-for", list)
    }

    fn trusted_in(header: &str, list: &[&str]) -> TrustedProxies {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        TrustedProxies::parse(&list, ClientIpHeader::parse(header).unwrap()).unwrap()
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

    const PROXY_NETS: [&str; 4] = ["10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8"];

    /// The usual set-up: a load balancer at 10.0.0.5, proxies in 10/8 and on loopback,
    /// reporting the client in `X-Forwarded-For` (the default).
    fn proxies() -> TrustedProxies {
        trusted(&PROXY_NETS)
    }

    const LB: &str = "10.0.0.5";

    fn resolve(peer: &str, lines: &[(&str, &str)]) -> IpAddr {
        client_ip(ip(peer), &headers(lines), &proxies())
    }

    /// Like [`resolve`], with the proxies reporting the client in `header`.
    fn resolve_in(header: &str, peer: &str, lines: &[(&str, &str)]) -> IpAddr {
        client_ip(ip(peer), &headers(lines), &trusted_in(header, &PROXY_NETS))
    }

    fn fwd(peer: &str, lines: &[(&str, &str)]) -> IpAddr {
        resolve_in("forwarded", peer, lines)
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
            let err = TrustedProxies::parse(&list, ClientIpHeader::default())
                .unwrap_err()
                .to_string();
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
    fn forged_forwarded_and_real_ip_behind_an_xff_proxy_are_ignored() {
        // nginx appends the real peer to X-Forwarded-For; the client wrote the other headers.
        let forged = [
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "7.7.7.7"),
            ("x-forwarded-for", "81.2.69.142"),
        ];
        assert_eq!(resolve("127.0.0.1", &forged), ip("81.2.69.142"));
        // Without X-Forwarded-For, the forged headers still do not count: the proxy is the client.
        assert_eq!(
            resolve("127.0.0.1", &[("forwarded", "for=6.6.6.6")]),
            ip("127.0.0.1")
        );
        assert_eq!(
            resolve("127.0.0.1", &[("x-real-ip", "7.7.7.7")]),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn forwarded_header() {
        assert_eq!(
            fwd(LB, &[("forwarded", "for=81.2.69.142;proto=https")]),
            ip("81.2.69.142")
        );
        assert_eq!(
            fwd(
                LB,
                &[(
                    "forwarded",
                    r#"for=6.6.6.6, For="[2001:db8:cafe::17]:4711";by=10.0.0.5, for="10.1.1.1:80""#
                )]
            ),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            fwd(LB, &[("forwarded", r#"for="[2001:db8::1]""#)]),
            ip("2001:db8::1")
        );
        assert_eq!(
            fwd(LB, &[("forwarded", r#"for="81.2.69.142:_port""#)]),
            ip("81.2.69.142")
        );
        // Separators inside quotes do not split.
        assert_eq!(
            fwd(
                LB,
                &[("forwarded", r#"host="a,b;c";for=81.2.69.142, for=10.1.1.1"#)]
            ),
            ip("81.2.69.142")
        );
        // Two lines, read in order.
        assert_eq!(
            fwd(
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
    fn only_the_configured_header_is_read() {
        let all = [
            ("x-forwarded-for", "1.1.1.1"),
            ("forwarded", "for=2.2.2.2"),
            ("x-real-ip", "3.3.3.3"),
            ("cf-connecting-ip", "4.4.4.4"),
        ];
        for (header, want) in [
            ("x-forwarded-for", "1.1.1.1"),
            ("Forwarded", "2.2.2.2"),
            ("X-Real-IP", "3.3.3.3"),
            ("cf-connecting-ip", "4.4.4.4"),
            ("true-client-ip", LB),
        ] {
            assert_eq!(resolve_in(header, LB, &all), ip(want), "{header}");
        }
        // A Forwarded without `for=` does not fall back to another header.
        let no_for = [
            ("forwarded", "proto=https;host=example.com"),
            ("x-forwarded-for", "81.2.69.142"),
        ];
        assert_eq!(fwd(LB, &no_for), ip(LB));
        // An untrusted peer is the client whichever header is configured.
        assert_eq!(
            resolve_in("cf-connecting-ip", "81.2.69.142", &all),
            ip("81.2.69.142")
        );
        // One address per line in a single-address header; the last line counts.
        assert_eq!(
            resolve_in(
                "cf-connecting-ip",
                LB,
                &[
                    ("cf-connecting-ip", "6.6.6.6"),
                    ("cf-connecting-ip", "81.2.69.142")
                ]
            ),
            ip("81.2.69.142")
        );
        assert_eq!(
            resolve_in(
                "cf-connecting-ip",
                LB,
                &[("cf-connecting-ip", "1.1.1.1, 2.2.2.2")]
            ),
            ip(LB)
        );
    }

    #[test]
    fn client_ip_header_setting() {
        let parsed = |text: &str| ClientIpHeader::parse(text).unwrap();
        assert_eq!(parsed("x-forwarded-for"), ClientIpHeader::XForwardedFor);
        assert_eq!(parsed(" X-Forwarded-For "), ClientIpHeader::XForwardedFor);
        assert_eq!(parsed("FORWARDED"), ClientIpHeader::Forwarded);
        assert_eq!(parsed("x-real-ip"), ClientIpHeader::XRealIp);
        let cf = parsed("CF-Connecting-IP");
        assert_eq!(cf.name(), "cf-connecting-ip");
        assert_eq!(ClientIpHeader::default().to_string(), "x-forwarded-for");
        for bad in ["", "two words", "x:y", "é"] {
            let err = ClientIpHeader::parse(bad).unwrap_err().to_string();
            assert!(err.contains("header name"), "{err}");
        }
        // Serialised as its name, so the configuration round-trips.
        let json = serde_json::to_string(&cf).unwrap();
        assert_eq!(json, "\"cf-connecting-ip\"");
        assert_eq!(serde_json::from_str::<ClientIpHeader>(&json).unwrap(), cf);
    }

    #[test]
    fn obfuscated_and_unknown_end_the_walk() {
        // The nearest trusted proxy's report is the last good address.
        assert_eq!(
            fwd(
                LB,
                &[("forwarded", "for=81.2.69.142, for=_hidden, for=10.1.1.1")]
            ),
            ip("10.1.1.1")
        );
        assert_eq!(
            fwd(LB, &[("forwarded", "for=81.2.69.142, for=unknown")]),
            ip(LB)
        );
        // An element without `for=` is an unknown hop when others have one.
        assert_eq!(
            fwd(LB, &[("forwarded", "for=81.2.69.142, proto=http")]),
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
            let got = fwd(LB, &[("forwarded", forwarded)]);
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
        let forwarded = trusted_in("forwarded", &PROXY_NETS);
        assert_eq!(client_ip(ip(LB), &map, &forwarded), ip(LB));
        // The unreadable Forwarded is not even looked at when X-Forwarded-For is the header.
        assert_eq!(client_ip(ip(LB), &map, &proxies()), ip("81.2.69.142"));
    }

    #[test]
    fn never_panics_on_token_soup() {
        let tokens = [
            "", ",", ";", "=", "\"", "[", "]", ":", "for", "For=", "1.2.3.4", "::1", "_x",
            "unknown", " ", "\\", "💥", "10.1.1.1", "::ffff:", "99999",
        ];
        let configs = [
            "forwarded",
            "x-forwarded-for",
            "x-real-ip",
            "cf-connecting-ip",
        ]
        .map(|name| (name, trusted_in(name, &PROXY_NETS)));
        for a in tokens {
            for b in tokens {
                for c in tokens {
                    let value = format!("{a}{b}{c}");
                    for (name, t) in &configs {
                        let map = headers(&[(name, &value)]);
                        let got = client_ip(ip(LB), &map, t);
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
            fwd(
                "::ffff:10.0.0.5",
                &[("forwarded", r#"for="[::ffff:81.2.69.142]:80""#)]
            ),
            ip("81.2.69.142")
        );
        assert_eq!(resolve("::ffff:10.0.0.5", &[]), ip(LB));
    }

    #[test]
    fn x_real_ip_when_configured() {
        let real = |peer: &str, lines: &[(&str, &str)]| resolve_in("x-real-ip", peer, lines);
        assert_eq!(real(LB, &[("x-real-ip", "81.2.69.142")]), ip("81.2.69.142"));
        assert_eq!(
            real(LB, &[("x-real-ip", " [2001:db8::9]:443 ")]),
            ip("2001:db8::9")
        );
        assert_eq!(real(LB, &[("x-real-ip", "garbage")]), ip(LB));
        assert_eq!(real(LB, &[("x-real-ip", "1.1.1.1, 2.2.2.2")]), ip(LB));
        // X-Forwarded-For is not read, even when X-Real-IP is absent.
        assert_eq!(
            real(
                LB,
                &[("x-real-ip", "3.3.3.3"), ("x-forwarded-for", "81.2.69.142")]
            ),
            ip("3.3.3.3")
        );
        assert_eq!(real(LB, &[("x-forwarded-for", "81.2.69.142")]), ip(LB));
        // From an untrusted peer it is ignored like the others.
        assert_eq!(
            real("81.2.69.142", &[("x-real-ip", "3.3.3.3")]),
            ip("81.2.69.142")
        );
    }
}
