//! Who is on the other end of a request: the client address (the socket peer, or — when that
//! peer is a trusted proxy — the hop the proxies recorded in `X-Forwarded-For`) and user agent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{header, request::Parts, HeaderMap},
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::state::{AppState, Settings};

/// The proxies whose `X-Forwarded-For` is believed: addresses and CIDR blocks. Empty (the
/// default) = the header is ignored and the socket peer is the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        Self(nets.into_iter().collect())
    }

    /// A proxy on this machine: `127.0.0.0/8` and `::1`.
    pub fn loopback() -> Self {
        Self::new([
            IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
            IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
        ])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn extend(&mut self, other: Self) {
        self.0.extend(other.0);
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that arrived from `peer` with these `X-Forwarded-For` hops
    /// (oldest first, as proxies append). Only a trusted peer's header is believed, and in it
    /// only what trusted proxies wrote: walking from the right, each trusted hop vouches for
    /// the one before it, and the first hop that is not a trusted proxy is the client. Anything
    /// further left came from the client itself, so a forged entry there changes nothing.
    pub fn client<'a>(&self, peer: IpAddr, forwarded_for: impl DoubleEndedIterator<Item = &'a str>) -> IpAddr {
        let mut client = peer.to_canonical();
        for hop in forwarded_for.rev() {
            if !self.contains(client) {
                break;
            }
            // A hop a trusted proxy wrote is an address; garbage means the chain is not one we
            // can follow, so the last trusted hop is as far as we can vouch for.
            match parse_hop(hop) {
                Some(ip) => client = ip.to_canonical(),
                None => break,
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, tolerating a port and IPv6 brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
        .or_else(|| hop.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).and_then(|inner| inner.parse().ok()))
}

/// Every `X-Forwarded-For` entry of the request, oldest first (several header lines count as
/// one comma-separated list, RFC 9110 §5.3).
fn forwarded_for(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect()
}

/// The client's address. Forwarded headers are believed only from a trusted proxy: any client
/// can write them, so trusting them otherwise would let anyone dodge rate limits.
pub fn client_ip(parts: &Parts, settings: &Settings) -> Option<IpAddr> {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip())?;
    if settings.trusted_proxies.is_empty() {
        return Some(peer);
    }
    Some(settings.trusted_proxies.client(peer, forwarded_for(&parts.headers).into_iter()))
}

/// Extractor form of [`client_ip`] plus the user agent.
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ClientInfo {
            ip: client_ip(parts, &state.settings),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|ua| ua.chars().take(256).collect()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &str) -> TrustedProxies {
        TrustedProxies::new(list.split(',').map(|net| net.parse().unwrap_or_else(|e| panic!("{net}: {e}"))))
    }

    fn client(trusted: &TrustedProxies, peer: &str, xff: &str) -> String {
        let peer = peer.parse().unwrap_or_else(|e| panic!("{peer}: {e}"));
        let hops: Vec<&str> = if xff.is_empty() { Vec::new() } else { xff.split(',').collect() };
        trusted.client(peer, hops.into_iter()).to_string()
    }

    #[test]
    fn the_rightmost_hop_that_is_not_a_trusted_proxy_is_the_client() {
        let trusted = proxies("10.0.0.0/8,127.0.0.1/32");
        // Caddy (10.0.0.2) appended the client it saw; the client wrote the rest.
        assert_eq!(client(&trusted, "10.0.0.2", "203.0.113.9"), "203.0.113.9");
        assert_eq!(client(&trusted, "10.0.0.2", "1.2.3.4, 203.0.113.9"), "203.0.113.9");
        assert_eq!(client(&trusted, "10.0.0.2", "10.9.9.9, 203.0.113.9"), "203.0.113.9", "a forged trusted address");
        // Two proxies in a row (a CDN hop inside 10/8, then Caddy): both are skipped.
        assert_eq!(client(&trusted, "127.0.0.1", "6.6.6.6, 198.51.100.4, 10.1.2.3"), "198.51.100.4");
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted = proxies("10.0.0.0/8");
        assert_eq!(client(&trusted, "192.0.2.1", "203.0.113.9"), "192.0.2.1");
        assert_eq!(client(&TrustedProxies::default(), "10.0.0.2", "203.0.113.9"), "10.0.0.2");
    }

    #[test]
    fn a_trusted_peer_without_the_header_or_with_garbage_is_as_far_as_we_can_see() {
        let trusted = proxies("10.0.0.0/8");
        assert_eq!(client(&trusted, "10.0.0.2", ""), "10.0.0.2");
        assert_eq!(client(&trusted, "10.0.0.2", "not-an-address"), "10.0.0.2");
        assert_eq!(client(&trusted, "10.0.0.2", "203.0.113.9, unknown, 10.0.0.7"), "10.0.0.7");
        // Only proxies all the way: the oldest hop is the best answer.
        assert_eq!(client(&trusted, "10.0.0.2", "10.0.0.5, 10.0.0.6"), "10.0.0.5");
    }

    #[test]
    fn hops_with_ports_brackets_and_mapped_addresses_are_read() {
        let trusted = proxies("127.0.0.1/32,::1/128");
        assert_eq!(client(&trusted, "::ffff:127.0.0.1", "203.0.113.9:4711"), "203.0.113.9");
        assert_eq!(client(&trusted, "::1", "[2001:db8::7]"), "2001:db8::7");
        assert_eq!(client(&trusted, "::1", "[2001:db8::7]:443"), "2001:db8::7");
        assert_eq!(client(&trusted, "127.0.0.1", " ::ffff:198.51.100.1 "), "198.51.100.1");
    }

    #[test]
    fn loopback_trusts_this_machine_only() {
        let trusted = TrustedProxies::loopback();
        assert!(trusted.contains(IpAddr::from([127, 0, 0, 1])));
        assert!(trusted.contains(IpAddr::from([127, 3, 2, 1])));
        assert!(trusted.contains(Ipv6Addr::LOCALHOST.into()));
        assert!(!trusted.contains(IpAddr::from([10, 0, 0, 1])));
    }
}
