//! Dispatching a planned request: lease a credential → send → fail over → the answer.
//!
//! **Replay rule (contract §10).** A request goes to another key only when nothing of it can
//! have reached Factory — the connection (TCP, TLS, proxy) could not be opened, or the stream
//! was refused before processing (HTTP/2 `REFUSED_STREAM`, `GOAWAY`) — or when Factory answered
//! with a status that says another key may do better (401/402/429/5xx). A timeout or a reset
//! after the request left is answered to the client (504/502) without a replay: Factory may be
//! working on it, and a replay would spend a second key's quota on the same prompt.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;

use super::RequestLog;
use super::plan::Plan;
use crate::app::App;
use crate::credentials::pool::{Conversation, KeyPool, Outcome};
use crate::credentials::{CredentialLabel, Lease};
use crate::error::ApiError;
use crate::secret::Secret;
use crate::store::records::EventSource;
use crate::telemetry::metrics as m;
use crate::upstream::{FailureKind, UpstreamError, UpstreamRequest, UpstreamResponse, headers};

/// What the attempts ended with.
pub(super) enum Answer {
    /// A 2xx response, body not yet read.
    Ok(UpstreamResponse),
    /// An error answer, read whole and scrubbed of every secret.
    Failed {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
}

/// The last failure of a request that may still be replayed.
enum Failure {
    Answered(Answer),
    Transport(UpstreamError),
}

/// Reports an attempt's outcome to the pool exactly once; an attempt dropped before it was
/// reported (the client went away) is reported as cancelled, which releases a half-open probe.
struct AttemptGuard<'a> {
    pool: &'a KeyPool,
    key: Option<String>,
}

impl<'a> AttemptGuard<'a> {
    fn new(pool: &'a KeyPool, key: Option<String>) -> Self {
        AttemptGuard { pool, key }
    }

    fn report(mut self, outcome: Outcome) {
        if let Some(id) = self.key.take() {
            self.pool.report(&id, &outcome, EventSource::Traffic);
        }
    }
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.key.take() {
            self.pool
                .report(&id, &Outcome::Cancelled, EventSource::Traffic);
        }
    }
}

/// Times one request is sent again after the upstream refused its stream unread.
const MAX_REFUSED: u32 = 2;

/// `Retry-After` in seconds (the delta-seconds form).
pub(super) fn retry_after(h: &HeaderMap) -> Option<u64> {
    h.get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Runs the attempts of one request. `client_cred` is the client's own credential (level 5);
/// the secrets this request used are pushed to `used` (for scrubbing later error text). Every
/// attempt's pick follows and moves the `conversation`'s pin, so a failover re-pins the
/// conversation to the key that finally served (contract §14).
pub(super) async fn dispatch(
    app: &App,
    plan: &Plan<'_>,
    client_headers: &HeaderMap,
    client_cred: Option<&str>,
    conversation: Option<Conversation>,
    used: &mut Vec<Secret>,
    log: &mut RequestLog,
) -> Result<Answer, ApiError> {
    let settings = &app.settings;
    let pool = Arc::clone(app.credentials.pool());
    let scrubber = Arc::clone(app.credentials.scrubber());
    let max_attempts = pool.settings().max_attempts.max(1) as usize;
    let mut tried: Vec<String> = Vec::new();
    let mut refreshed = false;
    let mut refreshed_lease: Option<Lease> = None;
    let mut last_failure: Option<Failure> = None;
    let mut refused = 0;
    loop {
        let lease = match refreshed_lease.take() {
            Some(l) => l,
            None => match app
                .credentials
                .lease(client_cred, &tried, conversation)
                .await
            {
                Ok(l) => l,
                // Every key this request could use has been tried: the last upstream answer.
                Err(e) => {
                    return match last_failure.take() {
                        Some(Failure::Answered(a)) => Ok(a),
                        Some(Failure::Transport(t)) => Err(t.into()),
                        None => Err(e.into()),
                    };
                }
            },
        };
        log.credential = lease.label.as_str().to_string();
        used.push(lease.secret.clone());
        let pool_key = match &lease.label {
            CredentialLabel::Pool(id) => Some(id.clone()),
            _ => None,
        };
        let guard = AttemptGuard::new(&pool, pool_key.clone());
        log.attempts += 1;
        let can_fail_over = pool_key.is_some() && tried.len() + 1 < max_attempts;
        let req = UpstreamRequest {
            url: plan.url.clone(),
            headers: headers::build(headers::HeaderInput {
                kind: plan.model.kind,
                model: plan.model,
                client: client_headers,
                credential: &lease.secret,
                // A whole answer assembled from a stream is a streamed call upstream.
                stream: plan.prepared.stream || plan.prepared.aggregate,
                anthropic_beta: plan.prepared.anthropic_beta.as_deref(),
                user_agent: &settings.user_agent,
            }),
            body: plan.body.clone(),
        };
        let resp = match app.upstream.send(req).await {
            Ok(r) => r,
            // The upstream turned the stream away before reading it (HTTP/2 `REFUSED_STREAM`,
            // a `GOAWAY` naming an earlier stream): nothing was sent and no key is to blame,
            // so the request goes again without counting against the key or the failover
            // budget, a bounded number of times.
            Err(e) if e.kind() == Some(FailureKind::Refused) && refused < MAX_REFUSED => {
                refused += 1;
                tracing::debug!(request_id = %log.request_id, refused, detail = %e.detail(), "upstream refused the stream before reading it; sending again");
                drop(guard);
                continue;
            }
            Err(e) => {
                metrics::counter!(m::UPSTREAM_ERRORS, "status" => "0").increment(1);
                let kind = e.kind().map_or("other", |k| k.as_str());
                tracing::warn!(request_id = %log.request_id, credential = %log.credential, kind, error = %e, detail = %e.detail(), "upstream call failed");
                guard.report(if e.is_timeout() {
                    Outcome::Timeout
                } else {
                    Outcome::Connect
                });
                if e.nothing_sent()
                    && can_fail_over
                    && let Some(id) = pool_key
                {
                    metrics::counter!(m::POOL_FAILOVERS, "status" => "0").increment(1);
                    tracing::info!(request_id = %log.request_id, key = %id, kind, "nothing reached the upstream; replaying on another key");
                    tried.push(id);
                    last_failure = Some(Failure::Transport(e));
                    continue;
                }
                return Err(e.into());
            }
        };
        let status = resp.status();
        if status.is_success() {
            guard.report(Outcome::Success);
            log.pool_key = pool_key;
            return Ok(Answer::Ok(resp));
        }
        // An error answer: read it (small) to classify it and, maybe, relay it.
        let upstream_headers = resp.headers().clone();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                guard.report(Outcome::Connect);
                return Err(e.into());
            }
        };
        // An upstream echoing a credential never passes it on (client, pool reason, logs).
        let body = {
            let extra: Vec<&Secret> = used.iter().collect();
            scrubber
                .scrub_bytes(&body, &extra)
                .map_or(body, Bytes::from)
        };
        metrics::counter!(m::UPSTREAM_ERRORS, "status" => status.as_u16().to_string()).increment(1);
        if status == StatusCode::UNAUTHORIZED
            && !refreshed
            && let (CredentialLabel::Refresh, Some(generation), Some(r)) = (
                &lease.label,
                lease.generation,
                app.credentials.refresh_manager(),
            )
        {
            // A refresh-token lease is never a pool key: the guard has nothing to report.
            refreshed = true;
            if let Ok((secret, generation)) = r.after_unauthorized(generation).await {
                tracing::info!(request_id = %log.request_id, "upstream 401 with the access token: refreshed, retrying once");
                refreshed_lease = Some(Lease {
                    secret,
                    label: CredentialLabel::Refresh,
                    generation: Some(generation),
                });
                continue;
            }
        }
        let outcome = Outcome::from_status(
            status.as_u16(),
            &crate::translate::error_message(&body),
            retry_after(&upstream_headers),
        );
        guard.report(outcome.clone());
        tracing::info!(request_id = %log.request_id, credential = %log.credential, status = status.as_u16(), "upstream answered with an error");
        let failure = Answer::Failed {
            status,
            headers: upstream_headers,
            body,
        };
        if can_fail_over
            && outcome.retryable()
            && let Some(id) = pool_key
        {
            metrics::counter!(m::POOL_FAILOVERS, "status" => status.as_u16().to_string())
                .increment(1);
            tracing::info!(request_id = %log.request_id, key = %id, status = status.as_u16(), "failing over to another key");
            tried.push(id);
            last_failure = Some(Failure::Answered(failure));
            continue;
        }
        return Ok(failure);
    }
}
