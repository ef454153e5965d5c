//! The client's address, for rate limits and logs.
//!
//! It is the TCP peer, unless the peer is a configured trusted proxy: then it is the
//! first address that is not a trusted proxy in the chain the proxies appended
//! (`Forwarded: for=…`, RFC 7239, else `X-Forwarded-For`), read from the right. A
//! client can put anything at the left of those headers; only what trusted proxies
//! added counts. Behind an untrusted peer the headers are ignored, so they cannot buy
//! anyone a fresh rate-limit bucket.
//!
//! IPv6 clients share one bucket per /64: a host usually holds a whole /64 and can
//! pick a new address in it for every request.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
pub use ipnet::IpNet;

use crate::state::AppState;

#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientAddr(peer.map(|p| {
            client_ip(p, &parts.headers, &st.config.trusted_proxies)
        })))
    }
}

impl ClientAddr {
    /// The rate-limit bucket: the IPv4 address, or the IPv6 /64.
    pub fn key(&self) -> String {
        match self.0.map(bucket) {
            None => "unknown".into(),
            Some(IpAddr::V4(v4)) => v4.to_string(),
            Some(IpAddr::V6(v6)) => format!("{v6}/64"),
        }
    }
}

/// Whose limits a client address counts against: IPv4 (and IPv4-mapped IPv6) as is,
/// IPv6 by its /64 (the bucket's first address).
pub fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Trusted-proxy settings: networks (`10.0.0.0/8`) or single addresses.
pub fn parse_proxies(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!("trusted_proxies: '{s}' is not an address or a network (10.0.0.0/8)")
                })
        })
        .collect()
}

/// `ip` is one of the trusted proxies.
pub fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|n| n.contains(&ip))
}

/// The client behind `peer`, as described in the module doc.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    if !trusted(peer, proxies) {
        return peer;
    }
    let chain = forwarded_chain(headers);
    for ip in chain.iter().rev() {
        if !trusted(*ip, proxies) {
            return *ip;
        }
    }
    // Every hop is a trusted proxy: the one farthest out.
    chain.first().copied().unwrap_or(peer)
}

/// The addresses the proxies recorded, client first: `Forwarded`'s `for=` values
/// when the header is there, else `X-Forwarded-For`. Entries that are not an address
/// (`unknown`, obfuscated names) end the chain there, leaving what is to their right.
fn forwarded_chain(headers: &HeaderMap) -> Vec<IpAddr> {
    let forwarded: Vec<&str> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let values: Vec<Option<IpAddr>> = if forwarded.is_empty() {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| parse_node(s.trim()))
            .collect()
    } else {
        forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.trim().split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| parse_node(v.trim().trim_matches('"')))
            })
            .collect()
    };
    // Only the unbroken run of addresses at the right end is usable.
    let usable = values.iter().rev().take_while(|v| v.is_some()).count();
    values[values.len() - usable..]
        .iter()
        .filter_map(|v| *v)
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1` or `[2001:db8::1]:4711`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn only_a_trusted_proxy_is_believed() {
        let proxies = nets(&["10.0.0.0/8"]);
        let xff = headers(&[("x-forwarded-for", "198.51.100.7")]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            client_ip(ip("10.1.2.3"), &xff, &proxies),
            ip("198.51.100.7")
        );
        // From anyone else the header is ignored.
        assert_eq!(
            client_ip(ip("203.0.113.9"), &xff, &proxies),
            ip("203.0.113.9")
        );
        // No proxies configured: never.
        assert_eq!(client_ip(ip("10.1.2.3"), &xff, &[]), ip("10.1.2.3"));
    }

    #[test]
    fn the_chain_is_read_from_the_right_past_trusted_hops() {
        let proxies = nets(&["10.0.0.0/8", "192.168.0.0/16"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // The client claims 1.1.1.1; the edge proxy saw 198.51.100.7; an inner proxy 10.0.0.5.
        let xff = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7, 10.0.0.5")]);
        assert_eq!(
            client_ip(ip("192.168.1.1"), &xff, &proxies),
            ip("198.51.100.7")
        );
        // Two header lines count as one list.
        let split = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "198.51.100.7, 10.0.0.5"),
        ]);
        assert_eq!(
            client_ip(ip("192.168.1.1"), &split, &proxies),
            ip("198.51.100.7")
        );
        // RFC 7239 wins over X-Forwarded-For, with ports, quotes and IPv6.
        let fwd = headers(&[
            (
                "forwarded",
                "for=1.1.1.1, for=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.0.0.5:80",
            ),
            ("x-forwarded-for", "9.9.9.9"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &fwd, &proxies),
            ip("2001:db8:cafe::17")
        );
        // An entry that is no address stops the walk; what is right of it stands.
        let obfuscated = headers(&[("forwarded", "for=_hidden, for=10.0.0.5")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &obfuscated, &proxies),
            ip("10.0.0.5")
        );
        // Only proxies: the farthest one.
        let inner = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.5")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &inner, &proxies), ip("10.0.0.9"));
        // No header from a trusted proxy: the proxy itself.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &proxies),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn proxies_are_networks_or_addresses() {
        let p = parse_proxies(&["10.0.0.0/8".into(), "192.0.2.1".into(), "::1".into()]).unwrap();
        assert!(trusted("10.9.9.9".parse().unwrap(), &p));
        assert!(trusted("192.0.2.1".parse().unwrap(), &p));
        assert!(!trusted("192.0.2.2".parse().unwrap(), &p));
        assert!(trusted("::1".parse().unwrap(), &p));
        assert!(
            parse_proxies(&["proxy.example".into()])
                .unwrap_err()
                .contains("proxy.example")
        );
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let a = ClientAddr(Some("2001:db8:1:2:aaaa::1".parse().unwrap()));
        let b = ClientAddr(Some("2001:db8:1:2:bbbb::9".parse().unwrap()));
        let c = ClientAddr(Some("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(a.key(), "2001:db8:1:2::/64");
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), c.key());
        assert_eq!(
            ClientAddr(Some("::ffff:192.0.2.1".parse().unwrap())).key(),
            "192.0.2.1"
        );
        assert_eq!(
            ClientAddr(Some("192.0.2.1".parse().unwrap())).key(),
            "192.0.2.1"
        );
    }
}
