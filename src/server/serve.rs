//! Serving: our own accept loop over hyper-util's auto (HTTP/1.1 and h2c) connection builder,
//! with the inbound limits of contract §9 and graceful shutdown.
//!
//! - At most `limits.max_connections` connections are open: the loop takes a semaphore permit
//!   *before* accepting, so extra clients wait in the kernel's listen backlog until one closes.
//! - `TCP_NODELAY` on every accepted socket ([`prepare`]).
//! - A per-connection watchdog closes a connection whose request headers have not arrived
//!   within `timing.header_read_timeout_s` (counted from the accept, then from the first byte
//!   of each later request) and a keep-alive connection idle for `timing.idle_keepalive_s`
//!   (counted from the end of its last response). The watchdog learns of bytes from a thin
//!   wrapper around the socket and of requests from the service, so hyper's own header timer
//!   (which would also cut idle keep-alive connections) is off.
//! - Every request body is wrapped in a [`DeadlineBody`]: it must arrive within
//!   `timing.body_read_timeout_s` of the headers, else the reader answers 408.
//! - The socket peer reaches handlers as `ConnectInfo<SocketAddr>`.
//! - Shutdown: stop accepting (the listener is dropped), ask every connection to finish
//!   gracefully (in-flight requests and streams go on; idle keep-alive connections close), and
//!   wait for them; [`Running::shutdown`](super::Running::shutdown) bounds that wait by
//!   `timing.shutdown_grace_s` and then cancels `force`, which drops what remains.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Version};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::inbound::body::DeadlineBody;
use crate::telemetry::metrics as m;

/// The connection-level limits.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServeConfig {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl ServeConfig {
    pub fn from_settings(s: &Settings) -> ServeConfig {
        ServeConfig {
            header_timeout: Duration::from_secs(s.timing.header_read_timeout_s),
            body_timeout: Duration::from_secs(s.timing.body_read_timeout_s),
            idle_timeout: Duration::from_secs(s.timing.idle_keepalive_s),
            max_connections: s.limits.max_connections as usize,
        }
    }
}

/// Prepares an accepted socket: `TCP_NODELAY`, so small SSE frames leave at once.
pub(super) fn prepare(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}

/// Accepts and serves until `shutdown`, then waits for the open connections to finish (or for
/// `force`).
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    cfg: ServeConfig,
    shutdown: CancellationToken,
    force: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::error!(error = %e, "accepting a connection failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                    }
                }
            },
        };
        if let Err(e) = prepare(&stream) {
            tracing::debug!(client = %peer, error = %e, "could not set TCP_NODELAY");
        }
        let (router, shutdown, force) = (router.clone(), shutdown.clone(), force.clone());
        connections.spawn(async move {
            metrics::gauge!(m::OPEN_CONNECTIONS).increment(1.0);
            connection(stream, peer, router, cfg, shutdown, force).await;
            metrics::gauge!(m::OPEN_CONNECTIONS).decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Accept errors that concern one connection only (retry at once).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Serves one connection until it ends, a watchdog timeout, or `force`.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    cfg: ServeConfig,
    shutdown: CancellationToken,
    force: CancellationToken,
) {
    let state = Arc::new(ConnState::new(cfg));
    let io = TokioIo::new(Watched {
        inner: stream,
        state: Arc::clone(&state),
    });
    let svc_state = Arc::clone(&state);
    let router = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let guard = RequestGuard::start(&svc_state, req.version());
        let mut req = req.map(|b| Body::new(DeadlineBody::new(b, cfg.body_timeout)));
        req.extensions_mut().insert(ConnectInfo(peer));
        let fut = router.call(req);
        async move {
            let resp = fut.await?;
            Ok::<_, Infallible>(resp.map(|inner| TrackedBody {
                inner,
                _guard: guard,
            }))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Our watchdog times headers and idle time (hyper's timer would do both as one).
    builder.http1().header_read_timeout(None).keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(client = %peer, error = %e, "connection ended with an error");
                }
                break;
            }
            reason = watchdog(&state) => {
                metrics::counter!(m::CONNECTIONS_CLOSED, "reason" => reason).increment(1);
                tracing::debug!(client = %peer, reason, "closing the connection");
                break;
            }
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = force.cancelled() => break,
        }
    }
}

/// What the watchdog knows of one connection. Times are milliseconds since `base`.
#[derive(Debug)]
struct ConnState {
    base: Instant,
    header_timeout_ms: u64,
    idle_timeout_ms: u64,
    /// Requests whose response is not over yet.
    inflight: AtomicU32,
    /// When the head of the next request began to arrive, plus one (0 = not begun).
    head_started: AtomicU64,
    /// When the connection last became idle.
    idle_since: AtomicU64,
    /// HTTP/2: bytes between requests are frames (pings, settings), not a request head.
    h2: AtomicBool,
    changed: Notify,
}

impl ConnState {
    fn new(cfg: ServeConfig) -> ConnState {
        ConnState {
            base: Instant::now(),
            header_timeout_ms: cfg.header_timeout.as_millis() as u64,
            idle_timeout_ms: cfg.idle_timeout.as_millis() as u64,
            inflight: AtomicU32::new(0),
            // A new connection owes its first request head from the start.
            head_started: AtomicU64::new(1),
            idle_since: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// Bytes arrived: on an idle HTTP/1 connection they begin a request head.
    fn bytes_arrived(&self) {
        if self.inflight.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Acquire) == 0
            && !self.h2.load(Ordering::Relaxed)
        {
            self.head_started_at(self.now_ms());
        }
    }

    fn head_started_at(&self, now_ms: u64) {
        self.head_started.store(now_ms + 1, Ordering::Release);
        self.changed.notify_one();
    }

    /// A request's headers arrived.
    fn request_started(&self, version: Version) {
        if version == Version::HTTP_2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.inflight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
    }

    /// A request's response is over.
    fn request_finished_at(&self, now_ms: u64) {
        if self.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since.store(now_ms, Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// When the connection must close if nothing changes, and why.
    fn deadline(&self) -> Option<(u64, &'static str)> {
        if self.inflight.load(Ordering::Acquire) > 0 {
            return None;
        }
        match self.head_started.load(Ordering::Acquire) {
            0 => Some((
                self.idle_since.load(Ordering::Acquire) + self.idle_timeout_ms,
                "idle_timeout",
            )),
            started => Some((started - 1 + self.header_timeout_ms, "header_timeout")),
        }
    }
}

/// Resolves with the reason when the connection has to close.
async fn watchdog(state: &ConnState) -> &'static str {
    loop {
        match state.deadline() {
            None => state.changed.notified().await,
            Some((at, reason)) => {
                let now = state.now_ms();
                if at <= now {
                    return reason;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(at - now)) => {}
                    _ = state.changed.notified() => {}
                }
            }
        }
    }
}

/// One request in flight on a connection, from its headers to the end of its response.
#[derive(Debug)]
struct RequestGuard(Arc<ConnState>);

impl RequestGuard {
    fn start(state: &Arc<ConnState>, version: Version) -> RequestGuard {
        state.request_started(version);
        RequestGuard(Arc::clone(state))
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_finished_at(self.0.now_ms());
    }
}

/// A response body that ends its request's [`RequestGuard`] when hyper is done with it.
struct TrackedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, telling the watchdog when bytes arrive.
struct Watched {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.bytes_arrived();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_get_tcp_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(!accepted.nodelay().unwrap(), "off by default");
        prepare(&accepted).unwrap();
        assert!(accepted.nodelay().unwrap());
        drop(client);
    }

    fn cfg(header_ms: u64, idle_ms: u64) -> ServeConfig {
        ServeConfig {
            header_timeout: Duration::from_millis(header_ms),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_millis(idle_ms),
            max_connections: 1,
        }
    }

    #[test]
    fn header_then_idle_deadlines() {
        let state = ConnState::new(cfg(10_000, 75_000));
        // A new connection owes its headers within the header timeout.
        assert_eq!(state.deadline(), Some((10_000, "header_timeout")));
        state.request_started(Version::HTTP_11);
        assert_eq!(state.deadline(), None, "nothing closes a request in flight");
        state.bytes_arrived();
        assert_eq!(state.deadline(), None, "body bytes are not a new head");
        state.request_finished_at(102_000);
        assert_eq!(state.deadline(), Some((102_000 + 75_000, "idle_timeout")));
        state.head_started_at(107_000);
        assert_eq!(
            state.deadline(),
            Some((107_000 + 10_000, "header_timeout")),
            "the first byte of the next request starts the header timer"
        );
        // Two requests in flight (HTTP/2): idle only when both are over.
        state.request_started(Version::HTTP_2);
        state.request_started(Version::HTTP_2);
        state.request_finished_at(200_000);
        assert_eq!(state.deadline(), None);
        state.request_finished_at(201_000);
        assert_eq!(state.deadline(), Some((201_000 + 75_000, "idle_timeout")));
    }

    #[tokio::test]
    async fn the_watchdog_fires_on_headers_and_idle_but_never_mid_request() {
        // Headers that never come.
        let state = Arc::new(ConnState::new(cfg(50, 100)));
        assert_eq!(watchdog(&state).await, "header_timeout");

        let state = Arc::new(ConnState::new(cfg(50, 100)));
        let guard = RequestGuard::start(&state, Version::HTTP_2);
        let s = Arc::clone(&state);
        let watch = tokio::spawn(async move { watchdog(&s).await });
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!watch.is_finished(), "a request in flight is never cut");
        drop(guard);
        state.bytes_arrived();
        assert_eq!(
            state.deadline().map(|d| d.1),
            Some("idle_timeout"),
            "HTTP/2 frames between requests are not a request head"
        );
        let reason = tokio::time::timeout(Duration::from_secs(30), watch)
            .await
            .expect("the watchdog wakes up when the request ends")
            .unwrap();
        assert_eq!(reason, "idle_timeout");
    }
}
