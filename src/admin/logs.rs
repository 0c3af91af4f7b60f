//! `GET /admin/logs/stream` (contract §11): the gateway's log lines as server-sent events, for
//! the console's live log view. The last lines kept ([`crate::telemetry::tail::HISTORY`]) come
//! first, then every new line as it is written. One event per line (`data:`); a console that
//! fell behind gets `event: skipped` with the number of lines it missed; a comment every 15 s
//! keeps proxies from closing an idle stream. Every line goes through the secret scrubber (pool
//! keys, tokens and the admin key are masked) before it leaves the process, although no log
//! line is meant to hold one. The stream ends when the gateway shuts down.

use std::collections::VecDeque;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::broadcast::error::RecvError;

use super::{AdminState, Reply};
use crate::telemetry::tail;

/// Pause after which a comment is sent on an idle stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// One SSE event: the line's own line breaks (if any) become several `data:` fields.
fn event(line: &str) -> Bytes {
    let mut out = String::with_capacity(line.len() + 8);
    for part in line.split('\n') {
        out.push_str("data: ");
        out.push_str(part.trim_end_matches('\r'));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

pub(super) async fn stream(State(st): State<AdminState>) -> Reply {
    let app = st.app.clone();
    let (history, rx) = tail::tail().subscribe();
    let scrub = move |line: &str| -> Bytes {
        let admin_key = app.settings.admin_access_key.as_ref();
        let extra: Vec<&crate::secret::Secret> = admin_key.into_iter().collect();
        event(&app.credentials.scrubber().scrub(line, &extra))
    };
    let shutdown = st.app.shutdown.clone();
    let state = (VecDeque::from(history), rx, scrub, shutdown);
    let body = futures_util::stream::unfold(
        state,
        |(mut history, mut rx, scrub, shutdown)| async move {
            if let Some(line) = history.pop_front() {
                let out = scrub(&line);
                return Some((
                    Ok::<_, std::convert::Infallible>(out),
                    (history, rx, scrub, shutdown),
                ));
            }
            let out = tokio::select! {
                () = shutdown.cancelled() => return None,
                r = tokio::time::timeout(KEEPALIVE, rx.recv()) => match r {
                    Err(_) => Bytes::from_static(b": keepalive\n\n"),
                    Ok(Ok(line)) => scrub(&line),
                    Ok(Err(RecvError::Lagged(n))) => Bytes::from(format!("event: skipped\ndata: {n}\n\n")),
                    Ok(Err(RecvError::Closed)) => return None,
                },
            };
            Some((Ok(out), (history, rx, scrub, shutdown)))
        },
    );
    let mut resp = Response::new(Body::from_stream(body));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_event_and_line_breaks_stay_inside_it() {
        assert_eq!(&event("a b")[..], b"data: a b\n\n");
        assert_eq!(&event("one\r\ntwo")[..], b"data: one\ndata: two\n\n");
    }
}
