//! The client of a direct egress route (no proxy configured): hyper-util's connection pool over
//! hyper-rustls, with nothing in between.
//!
//! **Why not reqwest here.** reqwest wraps each request in a retry layer (which clones the
//! request to be able to replay it), a redirect layer (which parses the URL again, even with
//! redirects off), copies the header map into a fresh one and boxes the body; on a pass-through
//! request that was ~15 µs of the gateway's ~120 µs of CPU (BENCHMARKS.md, the profile). The
//! pool, HTTP/1 and HTTP/2 underneath are the same hyper-util and hyper code reqwest uses, with
//! the same settings. reqwest still serves egress proxies (CONNECT, proxy authentication,
//! SOCKS) and the side calls (balance, WorkOS), where its conveniences are worth their cost.
//!
//! Timeouts keep reqwest's meaning: `connect` bounds the TCP connect; `idle` bounds the wait
//! for the response head after the request is handed over and every gap between two body
//! frames afterwards.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::header::{ACCEPT, HeaderMap, HeaderValue};
use axum::http::{Method, Request, StatusCode, Uri};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::{Instant, Sleep};

use super::UpstreamError;
use super::client::{H2_PING_INTERVAL, H2_PING_TIMEOUT, LANE_CAP, POOL_IDLE};

type Pool = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One lane's pool (one connection per origin over HTTP/2, up to [`LANE_CAP`] idle ones over
/// HTTP/1.1).
#[derive(Clone)]
pub(super) struct Client {
    pool: Pool,
    idle: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("direct::Client").finish_non_exhaustive()
    }
}

/// `accept` when the caller set none: what reqwest sent before this client replaced it.
const ANY: HeaderValue = HeaderValue::from_static("*/*");

impl Client {
    /// `tls` is the shared configuration of [`super::client::tls_config`]; its ALPN list is
    /// set again here from `prior_knowledge` (hyper-rustls insists on writing it itself).
    pub(super) fn new(
        connect: Duration,
        idle: Duration,
        prior_knowledge: bool,
        tls: &rustls::ClientConfig,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect));
        let mut tls = tls.clone();
        tls.alpn_protocols.clear();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let https = if prior_knowledge {
            https.enable_http2().wrap_connector(http)
        } else {
            https.enable_http1().enable_http2().wrap_connector(http)
        };
        let pool = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(LANE_CAP)
            .http2_only(prior_knowledge)
            .http2_keep_alive_interval(H2_PING_INTERVAL)
            .http2_keep_alive_timeout(H2_PING_TIMEOUT)
            .http2_keep_alive_while_idle(true)
            .http2_adaptive_window(true)
            .build(https);
        Client { pool, idle }
    }

    /// POSTs `body` and waits (at most the idle timeout) for the response head.
    pub(super) async fn post(
        &self,
        uri: Uri,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response, UpstreamError> {
        if !headers.contains_key(ACCEPT) {
            headers.insert(ACCEPT, ANY);
        }
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        match tokio::time::timeout(self.idle, self.pool.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Err(e)) => Err(UpstreamError::from_hyper(&e)),
            Ok(Ok(resp)) => Ok(Response {
                resp,
                idle: self.idle,
            }),
        }
    }
}

/// A response whose head arrived; its body is read with the idle timeout between frames.
#[derive(Debug)]
pub(super) struct Response {
    resp: axum::http::Response<Incoming>,
    idle: Duration,
}

impl Response {
    pub(super) fn status(&self) -> StatusCode {
        self.resp.status()
    }

    pub(super) fn headers(&self) -> &HeaderMap {
        self.resp.headers()
    }

    /// The next data frame (`None` at the end; trailers are skipped).
    pub(super) async fn chunk(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        loop {
            let frame = tokio::time::timeout(self.idle, self.resp.body_mut().frame()).await;
            match frame {
                Err(_) => return Err(UpstreamError::Timeout),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(UpstreamError::from_body(&e)),
                Ok(Some(Ok(f))) => {
                    if let Ok(data) = f.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// The whole body (one piece is returned as is, without a copy).
    pub(super) async fn bytes(mut self) -> Result<Bytes, UpstreamError> {
        let Some(first) = self.chunk().await? else {
            return Ok(Bytes::new());
        };
        let Some(second) = self.chunk().await? else {
            return Ok(first);
        };
        let mut all = BytesMut::with_capacity(first.len() + second.len() * 2);
        all.extend_from_slice(&first);
        all.extend_from_slice(&second);
        while let Some(more) = self.chunk().await? {
            all.extend_from_slice(&more);
        }
        Ok(all.freeze())
    }

    /// The body as a stream of data frames, exactly as they arrive.
    pub(super) fn into_stream(self) -> Frames {
        let deadline = Instant::now() + self.idle;
        Frames {
            body: self.resp.into_body(),
            idle: self.idle,
            deadline,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            done: false,
        }
    }
}

/// The data frames of a body. The idle deadline moves with every frame; the timer itself is
/// only re-armed when the body has nothing to give (so a busy stream costs no timer work).
pub(super) struct Frames {
    body: Incoming,
    idle: Duration,
    deadline: Instant,
    timer: Pin<Box<Sleep>>,
    done: bool,
}

impl Stream for Frames {
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => {
                    if let Ok(data) = f.into_data() {
                        this.deadline = Instant::now() + this.idle;
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(UpstreamError::from_body(&e))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if this.timer.deadline() != this.deadline {
                        this.timer.as_mut().reset(this.deadline);
                    }
                    if this.timer.as_mut().poll(cx).is_ready() {
                        this.done = true;
                        return Poll::Ready(Some(Err(UpstreamError::Timeout)));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl std::fmt::Debug for Frames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frames").finish_non_exhaustive()
    }
}
