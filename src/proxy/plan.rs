//! Planning a proxied request: parsed body → model → translation → the prepared upstream
//! request and the shape of the answer. No I/O, no credential, no clock.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde_json::Value;

use super::Route;
use crate::config::{Model, ModelKind, Settings};
use crate::error::ApiError;
use crate::reasoning_cache::ReasoningCache;
use crate::translate::lazy::{self, TopLevel};
use crate::translate::responses_chat::{Turn, TurnLookup};
use crate::translate::{self, Context, Prepared};
use crate::usage::WireFormat;

/// How the upstream answer is shaped for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Shape {
    /// Same format both ways: bytes relayed.
    Passthrough,
    /// A Chat Completions client served from another format.
    Chat {
        from: ModelKind,
        /// The model name the client asked for (echoed in every chunk).
        client_model: String,
        include_usage: bool,
    },
}

/// Everything the dispatch needs: what to send where, and how to answer.
#[derive(Debug)]
pub(super) struct Plan<'a> {
    pub model: &'a Model,
    pub prepared: Prepared,
    pub url: String,
    /// The upstream wire format.
    pub format: WireFormat,
    pub shape: Shape,
    /// The upstream body, encoded once (sent again unchanged on a replay).
    pub body: Bytes,
    /// The reasoning round trip of a Chat request on an openai-type model (`translation.md`
    /// §4.4): the reply's turn is worth keeping (`include` asks for encrypted reasoning).
    pub keep_turn: bool,
    /// The `call_id`s of the cached turns sent back in this request.
    pub reinserted: Vec<String>,
    /// Where the reply's turn goes when `keep_turn` (set by the pipeline, which owns the cache).
    pub turn_cache: Option<Arc<ReasoningCache<Turn>>>,
}

fn include_usage(body: &Value) -> bool {
    body.pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn with_query(base: &str, query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => format!("{base}?{q}"),
        _ => base.to_string(),
    }
}

fn wrong_type(model: &Model, route: Route, expected: &str) -> ApiError {
    ApiError::bad_request(format!(
        "model {} is of type {}; {} serves {expected} models only",
        model.id,
        model.kind.as_str(),
        route.label()
    ))
    .with_param("model")
    .with_code("invalid_model_type")
}

/// The model a request names, or 404 `model_not_found`.
fn find_model<'a>(settings: &'a Settings, requested: &str) -> Result<&'a Model, ApiError> {
    settings.find_model(requested).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("model {requested} not found; GET /v1/models lists the models"),
        )
        .with_param("model")
        .with_code("model_not_found")
    })
}

/// Plans a same-format request (`/v1/messages`, count_tokens, `/v1/responses`) from its
/// top-level fields, parsing only those the preparer touches (`translate::lazy`). `None` when
/// the route is not one of those or the lazy path declines: the caller then parses the body
/// and calls [`plan`], which answers exactly as it always did.
pub(super) fn plan_lazy<'a>(
    settings: &'a Settings,
    route: Route,
    headers: &HeaderMap,
    query: Option<&str>,
    top: &TopLevel<'_>,
    requested: &str,
) -> Option<Result<Plan<'a>, ApiError>> {
    if route == Route::ChatCompletions {
        return None;
    }
    let model = match find_model(settings, requested) {
        Ok(m) => m,
        Err(e) => return Some(Err(e)),
    };
    let ctx = Context {
        system_prompt: &settings.system_prompt,
        budgets: settings.reasoning_budgets,
        // Only the chat translators parse embedded JSON.
        embedded_json_values: 0,
    };
    let client_beta = headers.get("anthropic-beta").and_then(|v| v.to_str().ok());
    let prepared = match route {
        Route::Messages | Route::CountTokens => {
            if model.kind != ModelKind::Anthropic {
                return Some(Err(wrong_type(model, route, "anthropic")));
            }
            let count = route == Route::CountTokens;
            lazy::prepare(top, &lazy::MESSAGES_FIELDS, |v| {
                translate::passthrough::prepare_messages(v, model, &ctx, client_beta, count)
            })
        }
        Route::Responses => {
            if model.kind != ModelKind::OpenAi {
                return Some(Err(wrong_type(model, route, "openai")));
            }
            lazy::prepare(top, &lazy::RESPONSES_FIELDS, |v| {
                translate::passthrough::prepare_responses(v, model, &ctx)
            })
        }
        Route::ChatCompletions => None,
    };
    let (prepared, body) = match prepared? {
        Ok(p) => p,
        Err(e) => return Some(Err(e.into())),
    };
    let (url, format) = match route {
        Route::Messages => (&settings.endpoints.anthropic, WireFormat::Anthropic),
        Route::CountTokens => (&settings.endpoints.count_tokens, WireFormat::Anthropic),
        _ => (&settings.endpoints.openai, WireFormat::Responses),
    };
    Some(Ok(Plan {
        model,
        prepared,
        url: with_query(url, query),
        format,
        shape: Shape::Passthrough,
        body: Bytes::from(body),
        keep_turn: false,
        reinserted: Vec::new(),
        turn_cache: None,
    }))
}

/// Plans one request: `value` is the parsed body, `requested` its `model`,
/// `embedded_json_values` what `limits.max_json_values` leaves after the body's own values;
/// `turns` finds the cached turns of the reasoning round trip.
#[allow(clippy::too_many_arguments)]
pub(super) fn plan<'a>(
    settings: &'a Settings,
    route: Route,
    headers: &HeaderMap,
    query: Option<&str>,
    value: Value,
    requested: &str,
    embedded_json_values: u64,
    turns: TurnLookup<'_>,
) -> Result<Plan<'a>, ApiError> {
    let model = find_model(settings, requested)?;
    let ctx = Context {
        system_prompt: &settings.system_prompt,
        budgets: settings.reasoning_budgets,
        embedded_json_values,
    };
    let client_beta = headers.get("anthropic-beta").and_then(|v| v.to_str().ok());
    let chat = |from: ModelKind, value: &Value| Shape::Chat {
        from,
        client_model: requested.to_string(),
        include_usage: include_usage(value),
    };
    let mut keep_turn = false;
    let mut reinserted = Vec::new();
    let (prepared, url, format, shape) = match route {
        Route::Messages | Route::CountTokens => {
            if model.kind != ModelKind::Anthropic {
                return Err(wrong_type(model, route, "anthropic"));
            }
            let count = route == Route::CountTokens;
            let p =
                translate::passthrough::prepare_messages(value, model, &ctx, client_beta, count)?;
            let base = if count {
                &settings.endpoints.count_tokens
            } else {
                &settings.endpoints.anthropic
            };
            (
                p,
                with_query(base, query),
                WireFormat::Anthropic,
                Shape::Passthrough,
            )
        }
        Route::Responses => {
            if model.kind != ModelKind::OpenAi {
                return Err(wrong_type(model, route, "openai"));
            }
            let p = translate::passthrough::prepare_responses(value, model, &ctx)?;
            (
                p,
                with_query(&settings.endpoints.openai, query),
                WireFormat::Responses,
                Shape::Passthrough,
            )
        }
        Route::ChatCompletions => match model.kind {
            ModelKind::Common => {
                let p = translate::passthrough::prepare_common_chat(value, model, &ctx)?;
                (
                    p,
                    settings.endpoints.common.clone(),
                    WireFormat::Chat,
                    Shape::Passthrough,
                )
            }
            ModelKind::Anthropic => {
                let shape = chat(ModelKind::Anthropic, &value);
                let p =
                    translate::anthropic_chat::chat_to_anthropic(value, model, &ctx, client_beta)?;
                (
                    p,
                    settings.endpoints.anthropic.clone(),
                    WireFormat::Anthropic,
                    shape,
                )
            }
            ModelKind::OpenAi => {
                let shape = chat(ModelKind::OpenAi, &value);
                let r = translate::responses_chat::chat_to_responses_with(
                    value,
                    model,
                    &ctx,
                    Some(turns),
                )?;
                keep_turn = r.encrypted_reasoning;
                reinserted = r.reinserted;
                (
                    r.prepared,
                    settings.endpoints.openai.clone(),
                    WireFormat::Responses,
                    shape,
                )
            }
        },
    };
    let body = Bytes::from(translate::encode(&prepared.body));
    Ok(Plan {
        model,
        prepared,
        url,
        format,
        shape,
        body,
        keep_turn,
        reinserted,
        turn_cache: None,
    })
}
