//! Address ranges (`10.0.0.0/8`, `::1`) and the client address behind trusted proxies, from
//! `X-Forwarded-For` or `Forwarded`, or from a PROXY protocol header ([`proxy_header`]). No
//! I/O; used by the configuration (to check `trusted_proxies`), by admission (to count the real
//! client against per-IP limits) and by the accept loop (to read a PROXY header).

pub mod proxy_header;

use std::net::IpAddr;

use axum::http::HeaderMap;
use axum::http::header::AsHeaderName;

/// An address range: a network address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    /// `a.b.c.d/n`, `x::y/n`, or one address (the whole length).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, len) = match text.trim().split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text.trim(), None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or range"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(len) => len
                .parse::<u8>()
                .ok()
                .filter(|&len| len <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { net, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, ip) = match (self.net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                (u128::from(net.to_bits()), u128::from(ip.to_bits()))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => (net.to_bits(), ip.to_bits()),
            _ => return false,
        };
        let bits = if self.net.is_ipv4() { 32 } else { 128 };
        let shift = bits - u32::from(self.len);
        shift >= bits || (net >> shift) == (ip >> shift)
    }
}

/// Parses every range of `trusted_proxies`.
pub fn parse_ranges(texts: &[String]) -> Result<Vec<Cidr>, String> {
    texts.iter().map(|text| Cidr::parse(text)).collect()
}

/// The client's address: `peer` itself unless it is a trusted proxy; then the nearest address
/// in `X-Forwarded-For` (or, without it, `Forwarded: for=`) that is not a trusted proxy, read
/// from the right, since only the entries our own proxies appended can be believed. A header
/// that names no usable address leaves `peer`.
pub fn client_ip(trusted: &[Cidr], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|range| range.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let forwarded_for = header_tokens(headers, "x-forwarded-for").map(str::to_owned);
    let forwarded = header_tokens(headers, "forwarded").filter_map(forwarded_for_value);
    let mut hops: Vec<String> = forwarded_for.collect();
    if hops.is_empty() {
        hops = forwarded.collect();
    }
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            return peer;
        };
        if !is_trusted(ip) {
            return ip;
        }
    }
    peer
}

/// The entries of a comma-separated header, over all its lines, trimmed; empty ones left out.
/// The one reader of such headers (the handshake's `Connection`, `Upgrade` and subprotocols
/// too).
pub fn header_tokens(headers: &HeaderMap, name: impl AsHeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The `for=` node of one `Forwarded` element (RFC 7239).
fn forwarded_for_value(element: &str) -> Option<String> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// An address from a hop: `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]` or `[::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    hop.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn ranges_contain_what_they_should() {
        let lan = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(lan.contains("10.1.2.3".parse().unwrap()));
        assert!(!lan.contains("11.0.0.1".parse().unwrap()));
        assert!(
            lan.contains("::ffff:10.0.0.1".parse().unwrap()),
            "mapped v4"
        );
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Cidr::parse("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_hop_and_only_behind_a_trusted_peer() {
        let trusted = parse_ranges(&["127.0.0.1".into(), "10.0.0.0/8".into()]).unwrap();
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let stranger: IpAddr = "192.0.2.9".parse().unwrap();
        let xff = headers(&[("x-forwarded-for", "198.51.100.7, 203.0.113.5, 10.0.0.2")]);
        assert_eq!(
            client_ip(&trusted, proxy, &xff),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(&trusted, stranger, &xff),
            stranger,
            "an untrusted peer's header"
        );
        let fwd = headers(&[(
            "forwarded",
            r#"for="[2001:db8::5]:4711";proto=https, for=10.0.0.3"#,
        )]);
        assert_eq!(
            client_ip(&trusted, proxy, &fwd),
            "2001:db8::5".parse::<IpAddr>().unwrap()
        );
        let junk = headers(&[("x-forwarded-for", "unknown")]);
        assert_eq!(client_ip(&trusted, proxy, &junk), proxy);
        assert_eq!(client_ip(&trusted, proxy, &HeaderMap::new()), proxy);
        let lines = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-for", "198.51.100.2:80"),
        ]);
        assert_eq!(
            client_ip(&trusted, proxy, &lines),
            "198.51.100.2".parse::<IpAddr>().unwrap()
        );
    }
}
