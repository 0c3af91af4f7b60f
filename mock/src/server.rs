//! The upstream router: records every request, checks it, then answers from the scripted rules
//! or the default "model".
//!
//! Order of decisions for an LLM call:
//! 1. record the request;
//! 2. header checks (400, route-format error, message `mock: ...` naming the header);
//! 3. per-credential override from `set_bearer_status` (that status and body);
//! 4. expired access token (401 `authentication_error`, `mock: token expired`);
//! 5. body rules of the route's wire format (400 `invalid_request_error`, `mock: ...`);
//! 6. the first matching scripted [`Rule`](crate::Rule) (its use is consumed);
//! 7. the default reply.
//!
//! WorkOS: record, count, forced failure (`set_workos_failure`), form checks, rules, then the
//! single-use refresh-token rotation.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use serde_json::{Value, json};

use crate::checks::{LlmRoute, check_llm_headers};
use crate::rules::{self, json_response};
use crate::state::{RecordedRequest, Shared};
use crate::{Generated, anthropic, bench, control, openai, workos};

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Llm(LlmRoute),
    WorkOs,
    /// `GET /api/organization` (Factory balance API).
    Organization,
    /// `GET /api/organization/members/chat-usage` (Factory balance API).
    ChatUsage,
    Unknown,
}

fn route_of(path: &str) -> Route {
    match path {
        "/api/llm/a/v1/messages" => Route::Llm(LlmRoute::AnthropicMessages),
        "/api/llm/a/v1/messages/count_tokens" => Route::Llm(LlmRoute::AnthropicCountTokens),
        "/api/llm/o/v1/responses" => Route::Llm(LlmRoute::Responses),
        "/api/llm/o/v1/chat/completions" => Route::Llm(LlmRoute::Chat),
        "/user_management/authenticate" => Route::WorkOs,
        "/api/organization" => Route::Organization,
        "/api/organization/members/chat-usage" => Route::ChatUsage,
        _ => Route::Unknown,
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let mut router = Router::new().nest("/_mock", control::router());
    if shared.bench.is_some() {
        // Bench mode: the three LLM routes and `/v1/models` answer from `bench`; the rest
        // (WorkOS, balance, count_tokens, unknown paths) stays the normal mock.
        use axum::routing::{get, post};
        router = router
            .route("/api/llm/a/v1/messages", post(bench::anthropic))
            .route("/api/llm/o/v1/responses", post(bench::responses))
            .route("/api/llm/o/v1/chat/completions", post(bench::chat))
            .route("/v1/models", get(bench::models));
    }
    router.fallback(upstream).with_state(shared)
}

/// Every non-control request lands here.
async fn upstream(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (body, too_large) = match axum::body::to_bytes(body, shared.options.max_body_bytes).await {
        Ok(b) => (b, false),
        Err(_) => (bytes::Bytes::new(), true),
    };
    let rec = RecordedRequest::new(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query(),
        &parts.headers,
        body,
    );
    shared.record(rec.clone());
    if too_large {
        return json_response(
            413,
            &json!({"error": "mock: request body too large or unreadable"}),
        );
    }
    let route = route_of(&rec.path);
    let expected = match route {
        Route::Llm(_) | Route::WorkOs => Some(Method::POST),
        Route::Organization | Route::ChatUsage => Some(Method::GET),
        Route::Unknown => None,
    };
    if let Some(m) = expected
        && parts.method != m
    {
        return json_response(
            405,
            &json!({"error": format!("mock: {} expects {m}", rec.path)}),
        );
    }
    match route {
        Route::Llm(r) => llm(&shared, r, &rec).await,
        Route::WorkOs => workos_authenticate(&shared, &rec).await,
        Route::Organization | Route::ChatUsage => balance(&shared, route, &rec).await,
        Route::Unknown => unknown(&shared, &rec).await,
    }
}

fn llm_error(route: LlmRoute, status: u16, error_type: &str, message: &str) -> Response {
    let body = if route.is_anthropic() {
        anthropic::error_body(error_type, message)
    } else {
        openai::error_body(error_type, message)
    };
    json_response(status, &body)
}

/// Per-credential overrides: a `set_bearer_status` credential, or an expired access token.
fn credential_gate(shared: &Shared, bearer: &str) -> Option<Response> {
    let (override_reply, expired) = {
        let st = shared.lock();
        (
            st.bearer_status.get(bearer).cloned(),
            st.expired.contains(bearer),
        )
    };
    if let Some((status, body)) = override_reply {
        return Some(json_response(status, &body));
    }
    if expired {
        return Some(json_response(
            401,
            &anthropic::error_body("authentication_error", "mock: token expired"),
        ));
    }
    None
}

async fn llm(shared: &Arc<Shared>, route: LlmRoute, rec: &RecordedRequest) -> Response {
    if let Err(msg) = check_llm_headers(route, rec) {
        return llm_error(route, 400, "invalid_request_error", &msg);
    }
    let bearer = rec.bearer().unwrap_or_default();
    if let Some(resp) = credential_gate(shared, bearer) {
        return resp;
    }
    let valid = match route {
        LlmRoute::AnthropicMessages => anthropic::validate(rec, false),
        LlmRoute::AnthropicCountTokens => anthropic::validate(rec, true),
        LlmRoute::Responses => openai::validate_responses(rec),
        LlmRoute::Chat => openai::validate_chat(rec),
    };
    if let Err(msg) = valid {
        return llm_error(route, 400, "invalid_request_error", &msg);
    }
    if let Some(reply) = shared.take_rule(&rec.uri(), Some(bearer)) {
        return rules::render(shared, reply).await;
    }
    let body = rec.json.clone().unwrap_or(Value::Null);
    let n = shared.next_id();
    let generated = match route {
        LlmRoute::AnthropicMessages => anthropic::default_reply(&body, n),
        LlmRoute::AnthropicCountTokens => Generated::Json(anthropic::count_tokens_reply(&body)),
        LlmRoute::Responses => openai::default_responses_reply(&body, n),
        LlmRoute::Chat => openai::default_chat_reply(&body, n),
    };
    let request_id_header = if route.is_anthropic() {
        "request-id"
    } else {
        "x-request-id"
    };
    let request_id = vec![(request_id_header.to_owned(), format!("req_mock_{n}"))];
    match generated {
        Generated::Json(value) => {
            let mut resp = json_response(200, &value);
            rules::apply_headers(&mut resp, &request_id);
            resp
        }
        Generated::Stream(events) => {
            let plan = rules::sse_plan(
                shared,
                &events,
                0,
                false,
                shared.options.default_crlf,
                crate::sse::StreamEnd::Close,
            );
            rules::stream_response(shared, axum::http::StatusCode::OK, request_id, plan)
        }
    }
}

async fn workos_authenticate(shared: &Arc<Shared>, rec: &RecordedRequest) -> Response {
    shared
        .refresh_calls
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let forced = shared.lock().workos_failure;
    if let Some(status) = forced {
        return json_response(
            status,
            &workos::error_body("server_error", "mock: forced WorkOS failure"),
        );
    }
    let token = match workos::parse_refresh_form(rec) {
        Ok(t) => t,
        Err(msg) => return json_response(400, &workos::error_body("invalid_request", &msg)),
    };
    if let Some(reply) = shared.take_rule(&rec.uri(), None) {
        return rules::render(shared, reply).await;
    }
    let (status, body) = workos::redeem(shared, &token);
    json_response(status, &body)
}

/// Factory's balance API (`upstream-factory.md` §1.7) with a healthy trial organisation by
/// default; script other answers with rules on `/api/organization`.
async fn balance(shared: &Arc<Shared>, route: Route, rec: &RecordedRequest) -> Response {
    let Some(bearer) = rec.bearer().filter(|b| !b.is_empty()) else {
        return json_response(401, &json!({"error": "mock: missing bearer credential"}));
    };
    if let Some(resp) = credential_gate(shared, bearer) {
        return resp;
    }
    if let Some(reply) = shared.take_rule(&rec.uri(), Some(bearer)) {
        return rules::render(shared, reply).await;
    }
    let body = if route == Route::Organization {
        json!({"organization": {
            "id": "org_mock",
            "name": "Mock Org",
            "subscription": {
                "freeTrialAllocation": {"standardTokens": 20_000_000u64, "premiumTokens": 0},
                "orbSubscription": {"trial_info": {"end_date": "2099-01-01T00:00:00Z"}},
            },
        }})
    } else {
        let tier = |allowance: u64| {
            json!({"userTokens": 0, "orgTotalTokensUsed": 0, "orgOverageUsed": 0,
                   "basicAllowance": allowance, "totalAllowance": allowance,
                   "orgOverageLimit": 0, "usedRatio": 0.0})
        };
        json!({"usage": {
            "startDate": "2026-11-01T00:00:00Z",
            "endDate": "2026-12-01T00:00:00Z",
            "standard": tier(20_000_000),
            "premium": tier(0),
        }})
    };
    json_response(200, &body)
}

/// Unknown paths: a matching rule answers, else 404.
async fn unknown(shared: &Arc<Shared>, rec: &RecordedRequest) -> Response {
    if let Some(reply) = shared.take_rule(&rec.uri(), rec.bearer()) {
        return rules::render(shared, reply).await;
    }
    let mut resp = json_response(
        404,
        &json!({"error": format!("mock: no route for {} {}", rec.method, rec.path)}),
    );
    resp.headers_mut()
        .insert("x-mock", HeaderValue::from_static("unknown-route"));
    resp
}
