//! Protection of the inbound side (contract §9) shared by the edge and by the handlers that
//! read request bodies: the memory budget of request bodies in flight and the body deadline
//! (`body`), failed-key throttling per client address (`throttle`), the count of requests
//! rejected before authentication (`rejected`), and the client address itself.
//!
//! Nothing here waits on disk or logs under a lock: each table sits behind its own
//! `std::sync::Mutex`, taken for a lookup; rejected counts are handed to the store's writer
//! every few seconds by a background task.

pub mod body;
pub mod clients;
pub mod rejected;
pub mod session;
pub mod throttle;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};

use crate::config::Settings;
use body::BodyBudget;
use rejected::Rejected;
use throttle::Throttle;

/// Failed admin-key attempts per address within [`FAILURE_WINDOW`] before it is throttled.
pub const ADMIN_FAILURE_LIMIT: usize = 10;
/// Failed client-key attempts per address within [`FAILURE_WINDOW`] before it is throttled.
pub const CLIENT_FAILURE_LIMIT: usize = 50;
/// The sliding window failures are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses each throttle table remembers at most (the least recently failing go first).
pub const THROTTLE_TABLE_CAP: usize = 100_000;

/// The inbound protection state of one gateway.
#[derive(Debug)]
pub struct Inbound {
    /// Request bodies held in memory (`limits.max_inflight_body_mb`).
    pub bodies: Arc<BodyBudget>,
    /// Failed admin-key attempts (admin API, `/factory/*`, `/metrics`).
    pub admin_failures: Throttle,
    /// Failed client-key attempts (`/v1/*`).
    pub client_failures: Throttle,
    /// Requests refused before authentication or before the pipeline.
    pub rejected: Rejected,
    /// Console sessions (contract §11).
    pub sessions: session::Sessions,
    /// Client keys with their limits (contract §13).
    pub clients: Arc<clients::Clients>,
    trust_proxy: bool,
}

impl Inbound {
    pub fn new(settings: &Settings) -> Inbound {
        Inbound {
            bodies: BodyBudget::new(settings.limits.max_inflight_body_bytes()),
            admin_failures: Throttle::new(ADMIN_FAILURE_LIMIT, FAILURE_WINDOW, THROTTLE_TABLE_CAP),
            client_failures: Throttle::new(
                CLIENT_FAILURE_LIMIT,
                FAILURE_WINDOW,
                THROTTLE_TABLE_CAP,
            ),
            rejected: Rejected::new(settings.time_zone()),
            sessions: session::Sessions::default(),
            clients: Arc::new(clients::Clients::new(settings.time_zone())),
            trust_proxy: settings.trust_proxy,
        }
    }

    /// The client address of a request whose extensions carry the socket peer
    /// (`ConnectInfo<SocketAddr>`, set by the server for every connection).
    pub fn client_ip_of(&self, extensions: &Extensions, headers: &HeaderMap) -> IpAddr {
        let peer = extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        self.client_ip(peer, headers)
    }

    /// Counts a refusal by a client key's limits (contract §13): `droid2api_client_rejected_total`
    /// always; the rejected counts too for the refusals that leave no usage record
    /// (`rate_limited`, `quota_exceeded`, `expired`).
    pub fn count_client_refusal(&self, reason: &'static str) {
        metrics::counter!(crate::telemetry::metrics::CLIENT_REJECTED, "reason" => reason)
            .increment(1);
        match reason {
            "rate_limited" => self.rejected.record(rejected::RATE_LIMITED),
            "quota_exceeded" => self.rejected.record(rejected::QUOTA_EXCEEDED),
            "expired" => self.rejected.record(rejected::EXPIRED_CLIENT_KEY),
            _ => {}
        }
    }

    /// Whether the browser reached the gateway over https: only knowable behind a trusted
    /// TLS-terminating proxy (`TRUST_PROXY`), from the last `X-Forwarded-Proto` value.
    pub fn came_over_https(&self, headers: &HeaderMap) -> bool {
        self.trust_proxy
            && headers
                .get_all("x-forwarded-proto")
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
    }

    /// The client address of a request: the socket peer, or with `TRUST_PROXY` the last hop of
    /// `X-Forwarded-For` (the peer again when that header is missing or garbled).
    pub fn client_ip(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> IpAddr {
        let peer_ip = peer
            .map(|p| p.ip())
            .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        let ip = if self.trust_proxy {
            forwarded_last_hop(headers).unwrap_or(peer_ip)
        } else {
            peer_ip
        };
        canonical(ip)
    }
}

/// The last hop of `X-Forwarded-For` (the last value of the last header), when it is an address.
/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` and `[2001:db8::1]:5678` are understood.
pub fn forwarded_last_hop(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers.get_all("x-forwarded-for").iter().next_back()?;
    let hop = last.to_str().ok()?.rsplit(',').next()?.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// IPv4-mapped IPv6 addresses as IPv4, so that one client is one address on a dual-stack socket.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl crate::store::redis::SessionTable for Inbound {
    fn apply_session(&self, digest: &str, data: Option<&str>) {
        self.sessions.apply_remote(digest, data);
    }

    fn replace_sessions(&self, all: Vec<(String, String)>) {
        self.sessions
            .replace_remote(all, jiff::Timestamp::now().as_millisecond());
    }

    fn local_sessions(&self) -> Vec<(String, String)> {
        self.sessions.records()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn last_hop_of_x_forwarded_for() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            forwarded_last_hop(&headers(&["1.1.1.1, 2.2.2.2"])),
            Some(ip("2.2.2.2"))
        );
        assert_eq!(
            forwarded_last_hop(&headers(&["1.1.1.1", "3.3.3.3 , 4.4.4.4:81"])),
            Some(ip("4.4.4.4"))
        );
        assert_eq!(
            forwarded_last_hop(&headers(&["[2001:db8::1]:443"])),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            forwarded_last_hop(&headers(&["2001:db8::2"])),
            Some(ip("2001:db8::2"))
        );
        assert_eq!(forwarded_last_hop(&headers(&["1.1.1.1, garbage"])), None);
        assert_eq!(forwarded_last_hop(&headers(&["1.1.1.1,"])), None);
        assert_eq!(forwarded_last_hop(&HeaderMap::new()), None);
    }

    #[test]
    fn client_ip_trusts_the_header_only_when_told() {
        let env = crate::config::Env::from_pairs([("TRUST_PROXY", "1")]);
        let trusting = Inbound::new(&Settings::from_sources(&env, None).unwrap());
        let plain =
            Inbound::new(&Settings::from_sources(&crate::config::Env::default(), None).unwrap());
        let peer: SocketAddr = "[::ffff:10.0.0.1]:5000".parse().unwrap();
        let h = headers(&["9.9.9.9"]);
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(plain.client_ip(Some(peer), &h), v4("10.0.0.1"));
        assert_eq!(trusting.client_ip(Some(peer), &h), v4("9.9.9.9"));
        assert_eq!(
            trusting.client_ip(Some(peer), &headers(&["not an address"])),
            v4("10.0.0.1")
        );
        assert_eq!(
            trusting.client_ip(Some(peer), &HeaderMap::new()),
            v4("10.0.0.1")
        );
    }
}
