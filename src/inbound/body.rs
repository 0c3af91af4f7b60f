//! Request bodies: the memory budget of bodies held at once (`limits.max_inflight_body_mb`),
//! the deadline a body must arrive within (`timing.body_read_timeout_s`), and the one reader
//! that applies both with a size cap.
//!
//! A body's bytes are reserved against the budget as they arrive (never from a claimed
//! `Content-Length`, which costs an attacker nothing) and stay reserved for as long as the
//! returned [`Bytes`] (or any clone or slice of it) lives: the reservation is the buffer's owner
//! and is released when the handler drops the last reference.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::error::ApiError;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bytes of request bodies held in memory at once, across all requests.
#[derive(Debug)]
pub struct BodyBudget {
    limit: u64,
    used: AtomicU64,
}

/// The budget is spent: the request is refused with 503 `overloaded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

impl BodyBudget {
    pub fn new(limit: u64) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Bytes reserved right now.
    pub fn in_use(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// An empty reservation that grows as a body arrives.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: Arc::clone(self),
            held: 0,
        }
    }
}

/// Bytes reserved for one body; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<BodyBudget>,
    held: u64,
}

impl Reservation {
    /// Reserves `n` more bytes, or fails without reserving any when the budget would be exceeded.
    pub fn grow(&mut self, n: u64) -> Result<(), Overloaded> {
        let limit = self.budget.limit;
        self.budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= limit)
            })
            .map_err(|_| Overloaded)?;
        self.held += n;
        Ok(())
    }

    pub fn held(&self) -> u64 {
        self.held
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.held > 0 {
            self.budget.used.fetch_sub(self.held, Ordering::AcqRel);
        }
    }
}

/// A body buffer that owns its reservation (see [`Bytes::from_owner`]).
struct Held {
    data: Bytes,
    _reservation: Reservation,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// The body did not arrive within `timing.body_read_timeout_s` of the request's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request body did not arrive within {0} s")]
pub struct BodyTimeout(pub u64);

/// A request body that fails with [`BodyTimeout`] once its deadline passes. Wrapped around every
/// request body when its headers arrive.
#[derive(Debug)]
pub struct DeadlineBody<B> {
    inner: B,
    deadline: Instant,
    timeout_s: u64,
    sleep: Option<Pin<Box<Sleep>>>,
    expired: bool,
}

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        DeadlineBody {
            inner,
            deadline: Instant::now() + timeout,
            timeout_s: timeout.as_secs(),
            sleep: None,
            expired: false,
        }
    }
}

impl<B> http_body::Body for DeadlineBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.expired = true;
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout_s)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("request body is larger than {} MiB", .limit / (1024 * 1024))]
    TooLarge { limit: usize },
    #[error(
        "the gateway is holding too many request bodies in memory right now; retry in a moment"
    )]
    Overloaded,
    #[error(transparent)]
    Timeout(BodyTimeout),
    #[error("could not read the request body: {0}")]
    Incomplete(String),
}

impl ReadError {
    /// The `reason` label of `droid2api_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            ReadError::TooLarge { .. } => super::rejected::TOO_LARGE,
            ReadError::Overloaded => super::rejected::OVERLOADED,
            ReadError::Timeout(_) => super::rejected::BODY_TIMEOUT,
            ReadError::Incomplete(_) => super::rejected::INCOMPLETE_BODY,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ReadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ReadError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ReadError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ReadError::Incomplete(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            ReadError::TooLarge { .. } => "request_too_large",
            ReadError::Overloaded => "overloaded",
            ReadError::Timeout(_) => "body_timeout",
            ReadError::Incomplete(_) => "incomplete_body",
        }
    }

    /// Seconds for `Retry-After`.
    pub fn retry_after(&self) -> Option<u64> {
        matches!(self, ReadError::Overloaded).then_some(1)
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        let mut out = ApiError::new(e.status(), e.to_string()).with_code(e.code());
        if let Some(s) = e.retry_after() {
            out = out.with_retry_after(s);
        }
        out
    }
}

/// Whether `Content-Type` names JSON: `application/json` or any `…/…+json`, parameters such as
/// `charset` allowed, case-insensitive. (`text/plain` JSON is refused: it is what a page can send
/// cross-origin without a preflight.)
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    token(kind)
        && token(subtype)
        && ((kind == "application" && subtype == "json") || subtype.ends_with("+json"))
}

/// Whether a request carries a body (a non-zero `Content-Length`, or a body not known to be
/// empty).
pub fn has_body(headers: &HeaderMap, body: &Body) -> bool {
    use http_body::Body as _;
    match content_length(headers) {
        Some(n) => n > 0,
        None => !body.is_end_stream() && body.size_hint().exact() != Some(0),
    }
}

/// The declared `Content-Length`, if any.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Whether a body error is (or wraps) the body deadline.
fn timeout_of(e: &(dyn std::error::Error + 'static)) -> Option<BodyTimeout> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<BodyTimeout>() {
            return Some(*t);
        }
        cur = err.source();
    }
    None
}

/// Reads a whole body of at most `max` bytes, reserving its bytes against `budget` as they
/// arrive. A declared `Content-Length` over `max` is refused before reading. The result keeps
/// its reservation until the last reference to it is dropped.
pub async fn read_limited(
    body: Body,
    headers: &HeaderMap,
    budget: &Arc<BodyBudget>,
    max: usize,
) -> Result<Bytes, ReadError> {
    if content_length(headers).is_some_and(|len| len > max as u64) {
        return Err(ReadError::TooLarge { limit: max });
    }
    let mut reservation = budget.reservation();
    let mut stream = body.into_data_stream();
    // One chunk is kept as it is; a second one starts a buffer.
    let mut first: Option<Bytes> = None;
    let mut buf: Option<BytesMut> = None;
    let mut len = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            let inner = e.into_inner();
            match timeout_of(inner.as_ref()) {
                Some(t) => ReadError::Timeout(t),
                None => ReadError::Incomplete(inner.to_string()),
            }
        })?;
        if chunk.is_empty() {
            continue;
        }
        if len + chunk.len() > max {
            return Err(ReadError::TooLarge { limit: max });
        }
        reservation
            .grow(chunk.len() as u64)
            .map_err(|Overloaded| ReadError::Overloaded)?;
        len += chunk.len();
        match (&mut first, &mut buf) {
            (None, None) => first = Some(chunk),
            (Some(f), None) => {
                let mut b = BytesMut::with_capacity(f.len() + chunk.len());
                b.extend_from_slice(f);
                b.extend_from_slice(&chunk);
                first = None;
                buf = Some(b);
            }
            (_, Some(b)) => b.extend_from_slice(&chunk),
        }
    }
    let data = match (first, buf) {
        (_, Some(b)) => b.freeze(),
        (Some(f), None) => f,
        (None, None) => return Ok(Bytes::new()),
    };
    Ok(Bytes::from_owner(Held {
        data,
        _reservation: reservation,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(parts: &[&'static [u8]]) -> Body {
        let frames: Vec<Result<Bytes, std::io::Error>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Body::from_stream(futures_util::stream::iter(frames))
    }

    #[test]
    fn json_content_types() {
        let ct = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v.parse().unwrap());
            is_json_content_type(&h)
        };
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            " application/json ",
            "application/vnd.api+json",
            "application/merge-patch+json; x=y",
        ] {
            assert!(ct(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonp",
            "application/json-seq",
            "json",
            "application/",
            "/json",
            "text/json",
            "",
        ] {
            assert!(!ct(bad), "{bad}");
        }
        assert!(!is_json_content_type(&HeaderMap::new()));
    }

    #[test]
    fn reservations_add_up_and_are_given_back() {
        let budget = BodyBudget::new(10);
        let mut a = budget.reservation();
        let mut b = budget.reservation();
        assert_eq!(a.grow(6), Ok(()));
        assert_eq!(b.grow(5), Err(Overloaded), "6 + 5 > 10");
        assert_eq!(b.held(), 0, "a refused growth reserves nothing");
        assert_eq!(b.grow(4), Ok(()));
        assert_eq!(budget.in_use(), 10);
        drop(a);
        assert_eq!(budget.in_use(), 4);
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn the_bytes_hold_their_reservation_until_dropped() {
        let budget = BodyBudget::new(100);
        let bytes = read_limited(
            chunked(&[b"hello ", b"world"]),
            &HeaderMap::new(),
            &budget,
            50,
        )
        .await
        .unwrap();
        assert_eq!(&bytes[..], b"hello world");
        assert_eq!(budget.in_use(), 11);
        let slice = bytes.slice(0..5);
        drop(bytes);
        assert_eq!(budget.in_use(), 11, "a slice still holds the buffer");
        drop(slice);
        assert_eq!(budget.in_use(), 0);
        // One chunk is passed through as it is.
        let one = read_limited(Body::from("{\"a\":1}"), &HeaderMap::new(), &budget, 50)
            .await
            .unwrap();
        assert_eq!(&one[..], b"{\"a\":1}");
        assert_eq!(budget.in_use(), 7);
        drop(one);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn over_budget_over_size_and_declared_size() {
        let budget = BodyBudget::new(8);
        let held = read_limited(Body::from("12345"), &HeaderMap::new(), &budget, 50)
            .await
            .unwrap();
        let e = read_limited(chunked(&[b"12", b"345"]), &HeaderMap::new(), &budget, 50)
            .await
            .unwrap_err();
        assert_eq!(e, ReadError::Overloaded);
        assert_eq!(budget.in_use(), 5, "the refused body gave its part back");
        drop(held);
        let e = read_limited(chunked(&[b"1234", b"5678"]), &HeaderMap::new(), &budget, 6)
            .await
            .unwrap_err();
        assert_eq!(e, ReadError::TooLarge { limit: 6 });
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, "7".parse().unwrap());
        let e = read_limited(Body::empty(), &h, &budget, 6)
            .await
            .unwrap_err();
        assert_eq!(e, ReadError::TooLarge { limit: 6 });
        assert_eq!(budget.in_use(), 0);
        let api: ApiError = ReadError::Overloaded.into();
        assert_eq!(
            (api.status.as_u16(), api.code, api.retry_after),
            (503, Some("overloaded"), Some(1))
        );
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tx.send(Ok(Bytes::from_static(b"part"))).await.unwrap();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let body = Body::new(DeadlineBody::new(
            Body::from_stream(stream),
            Duration::from_millis(100),
        ));
        let budget = BodyBudget::new(100);
        let e = tokio::time::timeout(
            Duration::from_secs(30),
            read_limited(body, &HeaderMap::new(), &budget, 50),
        )
        .await
        .expect("the deadline ends the read")
        .unwrap_err();
        assert_eq!(e, ReadError::Timeout(BodyTimeout(0)));
        assert_eq!(e.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(budget.in_use(), 0, "the part read was given back");
        drop(tx);
    }
}
