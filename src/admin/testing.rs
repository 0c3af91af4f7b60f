//! Key tests: one key (`POST /admin/keys/:id/test`) and every key of a pool filter as a
//! background job (`POST /admin/keys/test-all`, `GET /admin/jobs/:id`; `?wait=true` answers
//! with the finished job, for the Node version's scripts).
//!
//! A test is the smallest real call: a non-streaming Anthropic Messages request (`max_tokens`
//! 1, no thinking whatever the model's reasoning level, no system prompt) to the first
//! configured anthropic model with the full Factory header set and the key as the credential,
//! within 30 s. 200 → success, 402 → banned, 401 → disabled; anything else (429, 5xx, 403, 400,
//! timeout, connection error) is inconclusive and changes nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::{AdminError, AdminState, Query, Reply, check_pool_filter, ok, path_id, reply};
use crate::app::App;
use crate::config::{Model, ModelKind};
use crate::credentials::pool::{KeyFilter, Outcome, PoolError};
use crate::store::records::{DisabledBy, KeyStatus, LastTest, TestResult};
use crate::upstream::{UpstreamError, UpstreamRequest, headers};

/// The whole-test timeout.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of an upstream answer read for its message.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Jobs kept in memory.
const JOBS_KEPT: usize = 100;

/// The answer of one test.
#[derive(Debug, Clone)]
struct TestReport {
    status: u16,
    result: TestResult,
    message: String,
}

impl TestReport {
    fn json(&self) -> Value {
        json!({
            "ok": self.result == TestResult::Success,
            "status": self.status,
            "result": self.result.as_str(),
            "message": self.message,
        })
    }
}

/// The model tests use: the first configured anthropic model.
fn test_model(app: &App) -> Result<&Model, AdminError> {
    app.settings
        .models
        .iter()
        .find(|m| m.kind == ModelKind::Anthropic)
        .ok_or_else(|| {
            AdminError::bad_request(
                "keys are tested with an anthropic model and none is configured: add one to models[] in config.json",
            )
        })
}

/// Sends the test call; returns the upstream status and its body (bounded).
async fn call(
    app: &App,
    model: &Model,
    key: &crate::secret::Secret,
) -> Result<(u16, Vec<u8>), UpstreamError> {
    let body = json!({
        "model": model.id,
        "max_tokens": 1,
        "stream": false,
        "messages": [{"role": "user", "content": "ping"}],
    });
    let req = UpstreamRequest {
        url: app.settings.endpoints.anthropic.clone(),
        headers: headers::build(headers::HeaderInput {
            kind: ModelKind::Anthropic,
            model,
            client: &HeaderMap::new(),
            credential: key,
            stream: false,
            anthropic_beta: None,
            user_agent: &app.settings.user_agent,
        }),
        body: bytes::Bytes::from(body.to_string()),
    };
    let mut resp = app.upstream.send(req).await?;
    let status = resp.status().as_u16();
    let mut buf = Vec::new();
    while buf.len() < MAX_ANSWER_BYTES {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            Ok(None) => break,
            // The status is known; a body cut short only loses the message.
            Err(_) => break,
        }
    }
    Ok((status, buf))
}

/// Tests one key and records the result. `Err` only when the key is unknown (or vanished) or
/// the record could not be saved.
async fn run_test(app: &App, id: &str) -> Result<TestReport, AdminError> {
    let model = test_model(app)?;
    let Some(view) = app.pool.get(id) else {
        return Err(AdminError::not_found(format!("key {id} not found")));
    };
    let secret = view.rec.secret.clone();
    // An upstream echoing a credential (this key or any other) never reaches the report.
    let scrubber = std::sync::Arc::clone(app.credentials.scrubber());
    let scrub = |s: String| scrubber.scrub_string(s, &[&secret]);
    let answer = tokio::time::timeout(TEST_TIMEOUT, call(app, model, &secret)).await;
    let (report, outcome) = match answer {
        Ok(Ok((200, _))) => (
            TestReport {
                status: 200,
                result: TestResult::Success,
                message: "the key works: Factory answered 200".into(),
            },
            Outcome::Success,
        ),
        Ok(Ok((402, body))) => {
            let reason = scrub(crate::translate::error_message(&body));
            (
                TestReport {
                    status: 402,
                    result: TestResult::Banned,
                    message: format!(
                        "402 Payment Required: {}",
                        if reason.is_empty() {
                            "no credits"
                        } else {
                            &reason
                        }
                    ),
                },
                Outcome::PaymentRequired(reason),
            )
        }
        Ok(Ok((401, body))) => {
            let reason = scrub(crate::translate::error_message(&body));
            (
                TestReport {
                    status: 401,
                    result: TestResult::Disabled,
                    message: format!(
                        "401 Unauthorized: Factory rejected the key{}",
                        if reason.is_empty() {
                            String::new()
                        } else {
                            format!(" ({reason})")
                        }
                    ),
                },
                Outcome::Unauthorized,
            )
        }
        Ok(Ok((status, body))) => {
            let reason = scrub(crate::translate::error_message(&body));
            (
                TestReport {
                    status,
                    result: TestResult::Inconclusive,
                    message: format!(
                        "inconclusive: Factory answered {status}{}; the key's state is unchanged",
                        if reason.is_empty() {
                            String::new()
                        } else {
                            format!(" ({reason})")
                        }
                    ),
                },
                Outcome::Cancelled,
            )
        }
        Ok(Err(e)) => (
            TestReport {
                status: 0,
                result: TestResult::Inconclusive,
                message: format!(
                    "inconclusive: {}; the key's state is unchanged",
                    scrub(e.to_string())
                ),
            },
            Outcome::Cancelled,
        ),
        Err(_) => (
            TestReport {
                status: 0,
                result: TestResult::Inconclusive,
                message: format!(
                    "inconclusive: no answer within {} s; the key's state is unchanged",
                    TEST_TIMEOUT.as_secs()
                ),
            },
            Outcome::Cancelled,
        ),
    };
    // A key an admin disabled stays the admin's: the test is recorded but changes nothing
    // (a 402 would otherwise turn it into an automatic ban that a later success lifts).
    let admin_disabled = app.pool.get(id).is_some_and(|v| {
        v.rec.status == KeyStatus::Disabled && v.rec.disabled_by == Some(DisabledBy::Admin)
    });
    let outcome = if admin_disabled && outcome != Outcome::Success {
        Outcome::Cancelled
    } else {
        outcome
    };
    let test = LastTest {
        at: app.pool.now(),
        result: report.result,
        status: report.status,
    };
    match app.pool.record_test(id, &outcome, test).await {
        Ok(rec) => {
            tracing::info!(key = %id, result = report.result.as_str(), upstream_status = report.status, status = rec.status.as_str(), "key tested");
            Ok(report)
        }
        Err(PoolError::NotFound(_)) => Err(AdminError::not_found(format!(
            "key {id} was deleted during its test"
        ))),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn test_one(
    State(st): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
) -> Reply {
    let id = path_id(id)?;
    let report = run_test(&st.app, &id).await?;
    let mut data = report.json();
    // The Node version's names, for its scripts: `success` (= `ok`) and the key's status after
    // the test.
    if let Value::Object(m) = &mut data {
        m.insert(
            "success".into(),
            (report.result == TestResult::Success).into(),
        );
        let status = st.app.pool.get(&id).map(|v| v.rec.status.as_str());
        m.insert("key_status".into(), status.into());
    }
    reply(StatusCode::OK, data, "key tested")
}

// ----- jobs ---------------------------------------------------------------------------------

/// Progress of one test-all job.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    state: &'static str,
    total: u64,
    done: u64,
    success: u64,
    banned: u64,
    disabled: u64,
    inconclusive: u64,
}

/// One test-all job: its progress, and a token cancelled once it is over (done or failed).
#[derive(Debug)]
struct Job {
    progress: Mutex<Progress>,
    finished: tokio_util::sync::CancellationToken,
}

impl Job {
    fn progress(&self) -> Progress {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.progress.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Marks the job over with its final state and wakes whoever waits for it.
    fn finish(&self, state: &'static str) {
        self.update(|p| p.state = state);
        self.finished.cancel();
    }
}

/// The last [`JOBS_KEPT`] jobs.
#[derive(Debug, Default)]
pub(super) struct Jobs {
    inner: Mutex<JobsInner>,
}

#[derive(Debug, Default)]
struct JobsInner {
    order: VecDeque<String>,
    by_id: HashMap<String, Arc<Job>>,
}

impl Jobs {
    fn insert(&self, id: &str, total: u64) -> Arc<Job> {
        let job = Arc::new(Job {
            progress: Mutex::new(Progress {
                state: "queued",
                total,
                ..Progress::default()
            }),
            finished: tokio_util::sync::CancellationToken::new(),
        });
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.order.push_back(id.to_string());
        inner.by_id.insert(id.to_string(), Arc::clone(&job));
        while inner.order.len() > JOBS_KEPT {
            if let Some(old) = inner.order.pop_front() {
                inner.by_id.remove(&old);
            }
        }
        job
    }

    fn get(&self, id: &str) -> Option<Progress> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.by_id.get(id).map(|j| j.progress())
    }
}

/// The default and the longest wait of `POST /admin/keys/test-all?wait=true`, in seconds.
const WAIT_DEFAULT_S: usize = 120;
const WAIT_MAX_S: usize = 600;

/// `POST /admin/keys/test-all?pool=`: starts a job over every key of the filter (any status)
/// and answers 202 `{job_id}`. With `wait=true` (the Node version answered with the results),
/// the call waits for the job up to `wait_s` seconds (default 120, at most 600) and answers 200
/// with the finished job as `GET /admin/jobs/:id` shows it; past the wait, 202 `{job_id}` as
/// without it, and the job goes on.
pub(super) async fn test_all(State(st): State<AdminState>, RawQuery(raw): RawQuery) -> Reply {
    let q = Query::parse(raw.as_deref())?;
    let pool = q.get("pool").map(str::to_string);
    check_pool_filter(&st.app, pool.as_deref())?;
    let wait = matches!(
        q.one_of("wait", &["true", "false", "1", "0"], "false")?,
        "true" | "1"
    );
    let wait_s = q.number("wait_s", WAIT_DEFAULT_S, 1, WAIT_MAX_S)?;
    test_model(&st.app)?;
    let ids = st.app.pool.ids(&KeyFilter {
        status: None,
        pool,
        q: None,
    });
    let job_id = format!("job_{}", uuid::Uuid::now_v7().simple());
    let job = st.jobs.insert(&job_id, ids.len() as u64);
    let app = st.app.clone();
    let concurrency = app.pool.settings().test_concurrency.max(1) as usize;
    let log_id = job_id.clone();
    let runner = Arc::clone(&job);
    st.app.tasks.spawn(async move {
        let job = runner;
        job.update(|p| p.state = "running");
        let stop = app.shutdown.clone();
        let mut tests = futures_util::stream::iter(ids)
            .map(|id| {
                let app = app.clone();
                async move { run_test(&app, &id).await }
            })
            .buffer_unordered(concurrency);
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    job.finish("failed");
                    tracing::warn!(job = %log_id, "key test job stopped by shutdown");
                    return;
                }
                next = tests.next() => match next {
                    None => break,
                    Some(r) => job.update(|p| {
                        p.done += 1;
                        match r.map(|r| r.result) {
                            Ok(TestResult::Success) => p.success += 1,
                            Ok(TestResult::Banned) => p.banned += 1,
                            Ok(TestResult::Disabled) => p.disabled += 1,
                            // Inconclusive, or the key vanished meanwhile.
                            Ok(TestResult::Inconclusive) | Err(_) => p.inconclusive += 1,
                        }
                    }),
                },
            }
        }
        job.finish("done");
        let p = job.progress();
        tracing::info!(job = %log_id, total = p.total, success = p.success, banned = p.banned, disabled = p.disabled, inconclusive = p.inconclusive, "key test job done");
    });
    if wait {
        let over =
            tokio::time::timeout(Duration::from_secs(wait_s as u64), job.finished.cancelled())
                .await;
        if over.is_ok() {
            return reply(
                StatusCode::OK,
                progress_json(&job.progress()),
                "key test job done",
            );
        }
        return reply(
            StatusCode::ACCEPTED,
            json!({"job_id": job_id}),
            &format!("key test job still running after {wait_s} s: poll GET /admin/jobs/{job_id}"),
        );
    }
    reply(
        StatusCode::ACCEPTED,
        json!({"job_id": job_id}),
        "key test job started",
    )
}

/// A job as `GET /admin/jobs/:id` shows it.
fn progress_json(p: &Progress) -> Value {
    json!({
        "state": p.state,
        "total": p.total,
        "done": p.done,
        "success": p.success,
        "banned": p.banned,
        "disabled": p.disabled,
        "inconclusive": p.inconclusive,
    })
}

pub(super) async fn job(
    State(st): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
) -> Reply {
    let id = path_id(id)?;
    let p = st.jobs.get(&id).ok_or_else(|| {
        AdminError::not_found(format!(
            "job {id} not found (the last {JOBS_KEPT} jobs are kept)"
        ))
    })?;
    ok(progress_json(&p))
}

/// Runs the admin key test for the balance sync (a banned key whose balance shows tokens again
/// gets one test; its result is recorded like any other test).
#[derive(Debug, Clone)]
pub struct KeyTestRunner(pub App);

impl crate::usage::sync::KeyTester for KeyTestRunner {
    fn test(&self, key_id: String) -> futures_util::future::BoxFuture<'static, ()> {
        let app = self.0.clone();
        Box::pin(async move {
            match run_test(&app, &key_id).await {
                Ok(r) => {
                    tracing::info!(key = %key_id, result = r.result.as_str(), "automatic key test after a balance sync")
                }
                Err(e) => {
                    tracing::warn!(key = %key_id, error = %e.message, "automatic key test failed")
                }
            }
        })
    }
}
