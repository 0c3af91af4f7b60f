//! HTTP control API under `/_mock/` (for tests that are not written in Rust, e.g. the Python SDK
//! conformance scripts). Control requests are not recorded.
//!
//! | method & path | body | effect |
//! |---|---|---|
//! | `GET /_mock/requests` | – | JSON list of recorded requests (body as a string, `json` parsed, `at_ms`) |
//! | `DELETE /_mock/requests` | – | forget recorded requests |
//! | `POST /_mock/rules` | a [`Rule`] or an array of them | append rules |
//! | `GET /_mock/rules` | – | the remaining rules |
//! | `DELETE /_mock/rules` | – | remove all rules |
//! | `POST /_mock/refresh_tokens` | `{"token": "rt-…"}` | add a valid WorkOS refresh token |
//! | `POST /_mock/bearer_status` | `{"bearer": "k", "status": 402, "body": {...}}` | that credential always gets that answer |
//! | `DELETE /_mock/bearer_status` | – | remove all per-credential overrides |
//! | `POST /_mock/expire` | `{"token": "at-…"}` or `{"all": true}` | expire access token(s) |
//! | `POST /_mock/workos_failure` | `{"status": 500}` or `{"status": null}` | force / stop forcing WorkOS errors |
//! | `GET /_mock/stats` | – | counters: refresh_count, active_streams, cancelled_streams, hanging_requests, requests |
//! | `POST /_mock/reset` | – | back to the initial state (requests, rules, tokens, overrides, counters) |
//! | `GET /_mock/bench` | – | bench mode: settings and counters (requests, cooled, banned, streams_completed); 409 outside bench mode |
//! | `POST /_mock/bench` | `{"delay_ms"?, "stream_deltas"?, "stream_interval_ms"?}` | bench mode: change settings; 409 outside bench mode |

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::rules::{Rule, json_response};
use crate::state::Shared;

type S = State<Arc<Shared>>;

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/requests", get(list_requests).delete(clear_requests))
        .route(
            "/rules",
            get(list_rules).post(add_rules).delete(clear_rules),
        )
        .route("/refresh_tokens", post(add_refresh_token))
        .route(
            "/bearer_status",
            post(set_bearer_status).delete(clear_bearer_status),
        )
        .route("/expire", post(expire))
        .route("/workos_failure", post(workos_failure))
        .route("/stats", get(stats))
        .route("/reset", post(reset))
        .route("/bench", get(bench_state).post(bench_update))
}

fn ok() -> Response {
    json_response(200, &json!({"ok": true}))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("mock: bad control body: {e}"))
}

fn bad(msg: String) -> Response {
    json_response(400, &json!({"error": msg}))
}

async fn list_requests(State(shared): S) -> Response {
    let list: Vec<Value> = shared
        .lock()
        .requests
        .iter()
        .map(crate::RecordedRequest::to_json)
        .collect();
    json_response(200, &Value::Array(list))
}

async fn clear_requests(State(shared): S) -> Response {
    shared.lock().requests.clear();
    ok()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<Rule>),
    One(Box<Rule>),
}

async fn add_rules(State(shared): S, body: Bytes) -> Response {
    let rules = match parse::<OneOrMany>(&body) {
        Ok(OneOrMany::Many(v)) => v,
        Ok(OneOrMany::One(r)) => vec![*r],
        Err(msg) => return bad(msg),
    };
    shared.lock().rules.extend(rules);
    ok()
}

async fn list_rules(State(shared): S) -> Response {
    let rules = shared.lock().rules.clone();
    json_response(200, &serde_json::to_value(rules).unwrap_or(Value::Null))
}

async fn clear_rules(State(shared): S) -> Response {
    shared.lock().rules.clear();
    ok()
}

#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

async fn add_refresh_token(State(shared): S, body: Bytes) -> Response {
    match parse::<TokenBody>(&body) {
        Ok(t) => {
            shared.lock().refresh_tokens.insert(t.token);
            ok()
        }
        Err(msg) => bad(msg),
    }
}

#[derive(Deserialize)]
struct BearerStatusBody {
    bearer: String,
    status: u16,
    #[serde(default)]
    body: Value,
}

async fn set_bearer_status(State(shared): S, body: Bytes) -> Response {
    match parse::<BearerStatusBody>(&body) {
        Ok(b) => {
            shared
                .lock()
                .bearer_status
                .insert(b.bearer, (b.status, b.body));
            ok()
        }
        Err(msg) => bad(msg),
    }
}

async fn clear_bearer_status(State(shared): S) -> Response {
    shared.lock().bearer_status.clear();
    ok()
}

#[derive(Deserialize)]
struct ExpireBody {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    all: bool,
}

async fn expire(State(shared): S, body: Bytes) -> Response {
    match parse::<ExpireBody>(&body) {
        Ok(e) => {
            let mut st = shared.lock();
            if e.all {
                let minted: Vec<String> = st.minted_access_tokens.iter().cloned().collect();
                st.expired.extend(minted);
            }
            if let Some(t) = e.token {
                st.expired.insert(t);
            }
            drop(st);
            ok()
        }
        Err(msg) => bad(msg),
    }
}

#[derive(Deserialize)]
struct FailureBody {
    #[serde(default)]
    status: Option<u16>,
}

async fn workos_failure(State(shared): S, body: Bytes) -> Response {
    match parse::<FailureBody>(&body) {
        Ok(f) => {
            shared.lock().workos_failure = f.status;
            ok()
        }
        Err(msg) => bad(msg),
    }
}

async fn stats(State(shared): S) -> Response {
    let requests = shared.lock().requests.len();
    json_response(
        200,
        &json!({
            "refresh_count": shared.refresh_calls.load(Ordering::SeqCst),
            "active_streams": shared.active_streams.load(Ordering::SeqCst),
            "cancelled_streams": shared.cancelled_streams.load(Ordering::SeqCst),
            "hanging_requests": shared.hanging.load(Ordering::SeqCst),
            "requests": requests,
        }),
    )
}

async fn reset(State(shared): S) -> Response {
    shared.reset();
    ok()
}

fn not_bench() -> Response {
    json_response(
        409,
        &json!({"error": "mock: not in bench mode (start it with --bench)"}),
    )
}

async fn bench_state(State(shared): S) -> Response {
    match shared.bench.as_ref() {
        Some(b) => json_response(200, &b.to_json()),
        None => not_bench(),
    }
}

async fn bench_update(State(shared): S, body: Bytes) -> Response {
    let Some(b) = shared.bench.as_ref() else {
        return not_bench();
    };
    match parse::<crate::bench::BenchUpdate>(&body) {
        Ok(u) => {
            b.update(&u);
            json_response(200, &b.to_json())
        }
        Err(msg) => bad(msg),
    }
}
