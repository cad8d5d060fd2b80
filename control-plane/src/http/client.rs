//! Who is on the other end of a request: the client address (the socket peer, or the first
//! `X-Forwarded-For` hop when the server is configured to trust its proxy) and user agent.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{header, request::Parts},
};

use crate::state::{AppState, Settings};

/// The client's address. Forwarded headers are believed only with `trust_proxy_headers`: any
/// client can write them, so trusting them by default would let anyone dodge rate limits.
pub fn client_ip(parts: &Parts, settings: &Settings) -> Option<IpAddr> {
    if settings.trust_proxy_headers {
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|first| first.trim().parse::<IpAddr>().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip())
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
