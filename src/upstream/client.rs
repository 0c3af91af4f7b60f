//! The HTTP clients behind [`Upstream`](super::Upstream): lanes of clients per egress route
//! (hyper-util's pool directly, see [`super::direct`], or reqwest through an egress proxy),
//! picked by in-flight count, and the classification of transport failures.
//!
//! **Why lanes.** reqwest (hyper-util's pool) keeps one HTTP/2 connection per origin. Factory's
//! TLS front negotiates HTTP/2 through ALPN and caps concurrent streams per connection (100 is
//! common); past the cap, requests wait invisibly inside hyper for a free stream, that wait is
//! charged to the read timeout, and healthy keys end up cooling. Each [`Lane`] is its own
//! client (its own pool, hence its own connection) and carries at most [`LANE_CAP`] requests at
//! once; a request takes the first lane with room ("waterfall"), and a new lane is opened when
//! all are full. No request ever waits for a slot in the gateway, so nothing local is charged
//! to a key. When ALPN yields HTTP/1.1 (an egress proxy, a front without h2) the same lanes
//! simply hold pooled HTTP/1.1 connections. HTTP/2 connections send keep-alive pings.
//!
//! The measurement behind the choice is in `benches/upstream_lanes.rs`.

use std::error::Error as StdError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};

use super::UpstreamError;

/// Requests one lane carries at once (at most the smallest `SETTINGS_MAX_CONCURRENT_STREAMS`
/// fronts commonly advertise: Google's and nginx's 100, Cloudflare's 256, AWS ALB's 128).
pub const LANE_CAP: usize = 100;

/// Lanes one egress route may open (100 × 100 = 10,000 concurrent upstream requests). Past it,
/// requests share the least loaded lane (and may queue inside hyper).
pub const MAX_LANES: usize = 100;

/// HTTP/2 keep-alive ping period and the wait for its answer.
pub(super) const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
pub(super) const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an idle pooled connection is kept.
pub(super) const POOL_IDLE: Duration = Duration::from_secs(90);

/// What a lane sends LLM calls with.
#[derive(Debug)]
pub(super) enum LaneClient {
    /// No egress proxy: hyper-util's pool, nothing in between.
    Direct(Box<super::direct::Client>),
    /// Through an egress proxy: reqwest (CONNECT, proxy authentication, SOCKS).
    Proxied(reqwest::Client),
}

/// How a lane's client is built.
pub(super) type MakeClient = Box<dyn Fn() -> Result<LaneClient, UpstreamError> + Send + Sync>;

/// The TLS settings every lane shares, built once at start-up: what reqwest builds by
/// default (aws-lc-rs, TLS 1.2 and 1.3, the platform verifier over the system's CA
/// certificates, ALPN `h2` then `http/1.1`), except that reqwest would build them again in each
/// `ClientBuilder::build`, reading the CA certificates from disk every time a lane opens: on
/// the request path, at the moment the gateway is busiest.
pub(super) fn tls_config(prior_knowledge: bool) -> Result<rustls::ClientConfig, UpstreamError> {
    let setup = |what: &str, e: &dyn std::fmt::Display| {
        UpstreamError::Setup(format!("upstream TLS: {what}: {e}"))
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(Arc::clone(&provider))
        .map_err(|e| setup("loading the system's CA certificates", &e))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| setup("protocol versions", &e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = if prior_knowledge {
        vec![b"h2".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    Ok(config)
}

/// Common settings of every upstream client.
pub(super) fn base_builder(
    connect_timeout: Duration,
    idle_read_timeout: Duration,
    prior_knowledge: bool,
    tls: &rustls::ClientConfig,
) -> reqwest::ClientBuilder {
    let b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls.clone())
        .connect_timeout(connect_timeout)
        .read_timeout(idle_read_timeout)
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(LANE_CAP)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(H2_PING_INTERVAL)
        .http2_keep_alive_timeout(H2_PING_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .http2_adaptive_window(true)
        .redirect(reqwest::redirect::Policy::none())
        // The process environment is not consulted: proxies come from Settings only.
        .no_proxy();
    if prior_knowledge {
        b.http2_prior_knowledge()
    } else {
        b
    }
}

/// One client and the requests it carries.
struct Lane {
    client: LaneClient,
    in_flight: AtomicUsize,
}

impl Lane {
    /// Takes a place if the lane has room.
    fn try_acquire(self: &Arc<Self>) -> Option<InFlight> {
        let mut cur = self.in_flight.load(Ordering::Relaxed);
        loop {
            if cur >= LANE_CAP {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(InFlight(Arc::clone(self))),
                Err(now) => cur = now,
            }
        }
    }

    /// Takes a place whatever the load (past [`MAX_LANES`]).
    fn force_acquire(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }
}

/// A request's place in a lane, held until its response (body included) is dropped.
pub struct InFlight(Arc<Lane>);

impl InFlight {
    pub(super) fn client(&self) -> &LaneClient {
        &self.0.client
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight").finish_non_exhaustive()
    }
}

/// The lanes of one egress route (direct, or one configured proxy).
pub(super) struct Lanes {
    lanes: RwLock<Vec<Arc<Lane>>>,
    make: MakeClient,
    /// The route's client for short side calls (balance, WorkOS).
    side: reqwest::Client,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes")
            .field("lanes", &self.len())
            .finish_non_exhaustive()
    }
}

impl Lanes {
    /// Builds the first lane at once (so a bad setup fails at start-up).
    pub(super) fn new(make: MakeClient, side: reqwest::Client) -> Result<Self, UpstreamError> {
        let first = Arc::new(Lane {
            client: make()?,
            in_flight: AtomicUsize::new(0),
        });
        Ok(Lanes {
            lanes: RwLock::new(vec![first]),
            make,
            side,
        })
    }

    /// Lanes opened so far.
    pub(super) fn len(&self) -> usize {
        self.lanes.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Requests in flight over every lane.
    pub(super) fn in_flight(&self) -> usize {
        self.lanes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|l| l.in_flight.load(Ordering::Relaxed))
            .sum()
    }

    /// The route's client for short side calls (balance, WorkOS) that need no place.
    pub(super) fn side_client(&self) -> reqwest::Client {
        self.side.clone()
    }

    /// A place in the first lane with room; opens a lane when every lane is full. Never waits.
    pub(super) fn acquire(&self) -> Result<InFlight, UpstreamError> {
        if let Some(p) = self.first_free() {
            return Ok(p);
        }
        if self.len() >= MAX_LANES {
            return Ok(self.least_loaded());
        }
        // Built outside the lock (it loads the TLS roots); a concurrent builder may add one
        // too, which only leaves a spare lane.
        let client = (self.make)()?;
        let lane = Arc::new(Lane {
            client,
            in_flight: AtomicUsize::new(0),
        });
        let place = lane.force_acquire();
        let mut lanes = self.lanes.write().unwrap_or_else(|e| e.into_inner());
        lanes.push(lane);
        let n = lanes.len();
        drop(lanes);
        tracing::debug!(lanes = n, "upstream: every lane was full; opened another");
        Ok(place)
    }

    fn first_free(&self) -> Option<InFlight> {
        let lanes = self.lanes.read().unwrap_or_else(|e| e.into_inner());
        lanes.iter().find_map(Lane::try_acquire)
    }

    fn least_loaded(&self) -> InFlight {
        let lanes = self.lanes.read().unwrap_or_else(|e| e.into_inner());
        let lane = lanes
            .iter()
            .min_by_key(|l| l.in_flight.load(Ordering::Relaxed))
            .cloned();
        drop(lanes);
        match lane {
            Some(l) => l.force_acquire(),
            // Unreachable: a route always has its first lane.
            None => Arc::new(Lane {
                client: LaneClient::Proxied(self.side.clone()),
                in_flight: AtomicUsize::new(0),
            })
            .force_acquire(),
        }
    }
}

/// An upstream answer whose headers arrived. Holds the request's lane place until dropped
/// (the body of a stream included).
#[derive(Debug)]
pub struct UpstreamResponse {
    inner: Answer,
    place: InFlight,
}

#[derive(Debug)]
enum Answer {
    Direct(super::direct::Response),
    Proxied(reqwest::Response),
}

impl UpstreamResponse {
    pub(super) fn direct(resp: super::direct::Response, place: InFlight) -> Self {
        UpstreamResponse {
            inner: Answer::Direct(resp),
            place,
        }
    }

    pub(super) fn proxied(resp: reqwest::Response, place: InFlight) -> Self {
        UpstreamResponse {
            inner: Answer::Proxied(resp),
            place,
        }
    }

    pub fn status(&self) -> reqwest::StatusCode {
        match &self.inner {
            Answer::Direct(r) => r.status(),
            Answer::Proxied(r) => r.status(),
        }
    }

    pub fn headers(&self) -> &reqwest::header::HeaderMap {
        match &self.inner {
            Answer::Direct(r) => r.headers(),
            Answer::Proxied(r) => r.headers(),
        }
    }

    /// The whole body.
    pub async fn bytes(self) -> Result<Bytes, UpstreamError> {
        let UpstreamResponse { inner, place } = self;
        let b = match inner {
            Answer::Direct(r) => r.bytes().await,
            Answer::Proxied(r) => r.bytes().await.map_err(UpstreamError::from_reqwest),
        };
        drop(place);
        b
    }

    /// The next piece of the body (`None` at its end).
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        match &mut self.inner {
            Answer::Direct(r) => r.chunk().await,
            Answer::Proxied(r) => r.chunk().await.map_err(UpstreamError::from_reqwest),
        }
    }

    /// The body as a stream of pieces, exactly as they arrive. The lane place goes with it.
    pub fn into_stream(self) -> BoxStream<'static, Result<Bytes, UpstreamError>> {
        let UpstreamResponse { inner, place } = self;
        match inner {
            Answer::Direct(r) => Box::pin(Placed {
                inner: r.into_stream(),
                _place: place,
            }),
            Answer::Proxied(r) => Box::pin(Placed {
                inner: Box::pin(r.bytes_stream()).map(|r| r.map_err(UpstreamError::from_reqwest)),
                _place: place,
            }),
        }
    }
}

/// A response body carrying its lane place.
struct Placed<S> {
    inner: S,
    _place: InFlight,
}

impl<S: Stream<Item = Result<Bytes, UpstreamError>> + Unpin> Stream for Placed<S> {
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

// ----- failure classification ---------------------------------------------------------------

/// What kind of transport failure happened; names only, never a host or URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// TCP connect (refused, unreachable, DNS, connect timeout) or the egress proxy.
    Connect,
    /// The TLS handshake.
    Tls,
    /// The upstream refused the request before processing it (HTTP/2 `REFUSED_STREAM`, a
    /// `GOAWAY` naming an earlier stream, a pooled connection closed before the request left).
    Refused,
    /// No byte within the idle-read timeout, after the request left.
    Timeout,
    /// The connection broke after the request left (reset, closed mid-answer, protocol error).
    Reset,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Tls => "tls",
            FailureKind::Refused => "refused",
            FailureKind::Timeout => "timeout",
            FailureKind::Reset => "reset",
        }
    }

    /// Whether nothing of the request can have reached the upstream (safe to replay).
    pub fn nothing_sent(self) -> bool {
        matches!(
            self,
            FailureKind::Connect | FailureKind::Tls | FailureKind::Refused
        )
    }
}

/// Classifies a reqwest failure by walking its source chain.
pub(super) fn classify(e: &reqwest::Error) -> FailureKind {
    classify_chain(e, e.is_connect(), e.is_timeout())
}

/// [`classify`] over any error chain, given reqwest's own connect and timeout verdicts.
pub(super) fn classify_chain(
    e: &(dyn StdError + 'static),
    is_connect: bool,
    is_timeout: bool,
) -> FailureKind {
    let mut tls = false;
    let mut refused = false;
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<rustls::Error>().is_some() {
            tls = true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && wraps_rustls(io)
        {
            tls = true;
        }
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            let unprocessed = h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote());
            if unprocessed {
                refused = true;
            }
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && h.is_canceled()
        {
            // hyper handed the request back unsent (the connection closed before it left).
            refused = true;
        }
        cur = err.source();
    }
    if is_connect {
        if tls {
            FailureKind::Tls
        } else {
            FailureKind::Connect
        }
    } else if refused {
        FailureKind::Refused
    } else if is_timeout {
        FailureKind::Timeout
    } else {
        FailureKind::Reset
    }
}

/// Whether an I/O error carries a rustls error, directly or through I/O errors wrapping it (the
/// connector re-wraps the handshake's `io::Error`, and `io::Error::source` skips the payload,
/// so the rustls error never shows as a link of the chain).
fn wraps_rustls(io: &std::io::Error) -> bool {
    let mut cur = io;
    for _ in 0..8 {
        let Some(inner) = cur.get_ref() else {
            return false;
        };
        if inner.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        match inner.downcast_ref::<std::io::Error>() {
            Some(next) => cur = next,
            None => return false,
        }
    }
    false
}

/// A failure's whole source chain, for logs (URL userinfo masked).
pub(super) fn error_chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    crate::secret::mask_userinfo(&s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::mask_userinfo;

    #[test]
    fn userinfo_is_masked() {
        assert_eq!(
            mask_userinfo("proxy http://bob:s3cret@proxy.local:8080/x failed"),
            "proxy http://***@proxy.local:8080/x failed"
        );
        assert_eq!(
            mask_userinfo("a https://h/p and socks5://u@h2 end"),
            "a https://h/p and socks5://***@h2 end"
        );
        assert_eq!(mask_userinfo("no url here"), "no url here");
        assert_eq!(mask_userinfo("x://"), "x://");
    }

    #[test]
    fn kinds_name_what_was_sent() {
        assert!(FailureKind::Connect.nothing_sent());
        assert!(FailureKind::Tls.nothing_sent());
        assert!(FailureKind::Refused.nothing_sent());
        assert!(!FailureKind::Timeout.nothing_sent());
        assert!(!FailureKind::Reset.nothing_sent());
    }

    /// An error whose source is `inner` (as hyper wraps h2's errors).
    #[derive(Debug)]
    struct Wrap(Box<dyn StdError + Send + Sync>);
    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl StdError for Wrap {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn refused_streams_and_tls_failures_are_recognised() {
        let refused = Wrap(Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM)));
        assert_eq!(classify_chain(&refused, false, false), FailureKind::Refused);
        let reset = Wrap(Box::new(h2::Error::from(h2::Reason::INTERNAL_ERROR)));
        assert_eq!(classify_chain(&reset, false, false), FailureKind::Reset);
        let tls = Wrap(Box::new(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
        )));
        assert_eq!(classify_chain(&tls, true, false), FailureKind::Tls);
        // As the connector really reports it: the handshake's io::Error inside another.
        let nested = Wrap(Box::new(std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ))));
        assert_eq!(classify_chain(&nested, true, false), FailureKind::Tls);
        let plain = Wrap(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(classify_chain(&plain, true, true), FailureKind::Connect);
        assert_eq!(classify_chain(&plain, false, true), FailureKind::Timeout);
    }

    fn lanes() -> Lanes {
        Lanes::new(
            Box::new(|| Ok(LaneClient::Proxied(reqwest::Client::new()))),
            reqwest::Client::new(),
        )
        .unwrap()
    }

    #[test]
    fn lanes_fill_in_order_and_open_when_full() {
        let l = lanes();
        let mut held: Vec<InFlight> = (0..LANE_CAP).map(|_| l.acquire().unwrap()).collect();
        assert_eq!((l.len(), l.in_flight()), (1, LANE_CAP));
        let first = Arc::clone(&held[0].0);
        held.push(l.acquire().unwrap());
        assert_eq!((l.len(), l.in_flight()), (2, LANE_CAP + 1));
        assert!(!Arc::ptr_eq(&first, &held[LANE_CAP].0));
        // A place freed in the first lane is taken before the second lane's.
        held.remove(0);
        let again = l.acquire().unwrap();
        assert!(Arc::ptr_eq(&again.0, &first));
        assert_eq!(l.len(), 2);
        drop(held);
        drop(again);
        assert_eq!(l.in_flight(), 0);
    }
}
