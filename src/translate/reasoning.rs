//! Reasoning levels (`upstream-factory.md` §3.8) and the thinking `max_tokens` rule
//! (`translation.md` §5.3).
//!
//! | level | Anthropic `thinking` | `anthropic-beta` | Responses `reasoning` | Chat `reasoning_effort` |
//! |---|---|---|---|---|
//! | auto | client's, untouched | client's, untouched | client's | client's |
//! | low/medium/high | `{type:"enabled", budget_tokens}` | + interleaved-thinking | `{effort, summary:"auto"}` | level |
//! | off | removed | interleaved-thinking removed | removed | removed |

use serde_json::{Map, Value, json};

use crate::config::{Model, ReasoningBudgets, ReasoningLevel};

/// The beta that lets Claude think between tool calls.
pub const INTERLEAVED_THINKING_BETA: &str = "interleaved-thinking-2025-05-14";

/// Smallest thinking budget Anthropic accepts.
pub const MIN_THINKING_BUDGET: u64 = 1024;

/// The thinking budget of a fixed level (`None` for auto and off).
pub fn budget_for(level: ReasoningLevel, budgets: ReasoningBudgets) -> Option<u64> {
    match level {
        ReasoningLevel::Low => Some(budgets.low as u64),
        ReasoningLevel::Medium => Some(budgets.medium as u64),
        ReasoningLevel::High => Some(budgets.high as u64),
        ReasoningLevel::Auto | ReasoningLevel::Off => None,
    }
}

/// The outcome of the max_tokens rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThinkingPlan {
    pub max_tokens: u64,
    /// The budget to send; `None` when it would fall under 1024 and thinking is dropped.
    pub budget: Option<u64>,
}

/// `translation.md` §5.3: raise `max_tokens` so the answer keeps room next to the thinking
/// budget, cap it by the model, and shrink the budget to stay below `max_tokens`; a budget
/// under 1024 drops thinking.
///
/// Anthropic refuses `max_tokens` above 21,333 on a non-streaming call; the gateway's Messages
/// calls always stream (a non-streaming client's answer is assembled by
/// [`super::aggregate`]), so that limit never cuts the budget.
pub fn max_tokens_rule(
    budget: u64,
    requested: Option<u64>,
    default_answer: u64,
    cap: u64,
) -> ThinkingPlan {
    let m = requested.unwrap_or(default_answer).max(1);
    let max_tokens = if m > budget + 1024 {
        m.min(cap)
    } else {
        (budget + m).min(cap)
    };
    let mut b = budget;
    if b >= max_tokens {
        b = max_tokens.saturating_sub(1024);
    }
    ThinkingPlan {
        max_tokens,
        budget: (b >= MIN_THINKING_BUDGET).then_some(b),
    }
}

/// Edits the client's `anthropic-beta` list for a level: split on commas, trimmed, the
/// interleaved-thinking beta added when thinking is on, removed when off, re-joined with `", "`.
/// Auto passes the client's value through as it was. Returns `None` when nothing is left.
pub fn anthropic_beta(
    client: Option<&str>,
    level: ReasoningLevel,
    thinking_on: bool,
) -> Option<String> {
    if level == ReasoningLevel::Auto {
        return client.map(str::to_string).filter(|s| !s.trim().is_empty());
    }
    let mut betas: Vec<&str> = client
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .collect();
    betas.retain(|b| *b != INTERLEAVED_THINKING_BETA);
    if thinking_on {
        betas.push(INTERLEAVED_THINKING_BETA);
    }
    (!betas.is_empty()).then(|| betas.join(", "))
}

/// Applies a model's level to an Anthropic Messages body. Returns whether the level turned
/// thinking on (the caller adds the beta accordingly). Also fills `max_tokens` from the model's
/// default when the client sent none (Anthropic requires it).
pub fn apply_anthropic(
    body: &mut Map<String, Value>,
    model: &Model,
    budgets: ReasoningBudgets,
) -> bool {
    let requested = body.get("max_tokens").and_then(Value::as_u64);
    match model.reasoning {
        ReasoningLevel::Auto => {
            if requested.is_none() {
                body.insert("max_tokens".into(), json!(model.default_max_tokens));
            }
            false
        }
        ReasoningLevel::Off => {
            body.remove("thinking");
            if requested.is_none() {
                body.insert("max_tokens".into(), json!(model.default_max_tokens));
            }
            false
        }
        level => {
            let budget = budget_for(level, budgets).unwrap_or(MIN_THINKING_BUDGET);
            let plan = max_tokens_rule(
                budget,
                requested,
                model.default_max_tokens as u64,
                model.max_output_tokens as u64,
            );
            match plan.budget {
                Some(b) => {
                    body.insert("max_tokens".into(), json!(plan.max_tokens));
                    body.insert(
                        "thinking".into(),
                        json!({"type": "enabled", "budget_tokens": b}),
                    );
                    drop_sampling_forbidden_with_thinking(body);
                    true
                }
                None => {
                    body.remove("thinking");
                    if requested.is_none() {
                        body.insert("max_tokens".into(), json!(model.default_max_tokens));
                    }
                    false
                }
            }
        }
    }
}

/// Anthropic rejects these with thinking on: `temperature` other than 1, any `top_k`, and
/// `top_p` outside [0.95, 1].
pub fn drop_sampling_forbidden_with_thinking(body: &mut Map<String, Value>) {
    if let Some(t) = body.get("temperature")
        && t.as_f64() != Some(1.0)
    {
        body.remove("temperature");
    }
    body.remove("top_k");
    if let Some(p) = body.get("top_p") {
        let ok = p.as_f64().is_some_and(|p| (0.95..=1.0).contains(&p));
        if !ok {
            body.remove("top_p");
        }
    }
}

/// Applies a level to an OpenAI Responses body.
pub fn apply_responses(body: &mut Map<String, Value>, level: ReasoningLevel) {
    match level {
        ReasoningLevel::Auto => {}
        ReasoningLevel::Off => {
            body.remove("reasoning");
        }
        l => {
            body.insert(
                "reasoning".into(),
                json!({"effort": l.as_str(), "summary": "auto"}),
            );
        }
    }
}

/// Applies a level to an OpenAI Chat Completions body (common-type models).
pub fn apply_chat(body: &mut Map<String, Value>, level: ReasoningLevel) {
    match level {
        ReasoningLevel::Auto => {}
        ReasoningLevel::Off => {
            body.remove("reasoning_effort");
        }
        l => {
            body.insert("reasoning_effort".into(), json!(l.as_str()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelKind;

    fn model(level: ReasoningLevel) -> Model {
        Model {
            id: "claude-x".into(),
            name: "x".into(),
            kind: ModelKind::Anthropic,
            reasoning: level,
            provider: None,
            default_max_tokens: 4096,
            max_output_tokens: 64_000,
        }
    }

    #[test]
    fn rule_raises_max_tokens_to_leave_room_for_the_answer() {
        // Client asked 4096 with a 4096 budget: raised to budget + answer.
        assert_eq!(
            max_tokens_rule(4096, Some(4096), 4096, 64_000),
            ThinkingPlan {
                max_tokens: 8192,
                budget: Some(4096)
            }
        );
        // Client already left room.
        assert_eq!(
            max_tokens_rule(4096, Some(20_000), 4096, 64_000),
            ThinkingPlan {
                max_tokens: 20_000,
                budget: Some(4096)
            }
        );
        // Default answer when the client gave none.
        assert_eq!(
            max_tokens_rule(12_288, None, 4096, 64_000),
            ThinkingPlan {
                max_tokens: 16_384,
                budget: Some(12_288)
            }
        );
    }

    #[test]
    fn rule_caps_by_the_model_only() {
        // 24576 + 4096 = 28672 < 64000: the whole "high" budget, never cut to the 21,333 that
        // Anthropic allows a non-streaming call (the gateway's calls always stream).
        assert_eq!(
            max_tokens_rule(24_576, None, 4096, 64_000),
            ThinkingPlan {
                max_tokens: 28_672,
                budget: Some(24_576)
            }
        );
        // Client asked more than the model allows: capped by the model.
        assert_eq!(
            max_tokens_rule(4096, Some(100_000), 4096, 64_000),
            ThinkingPlan {
                max_tokens: 64_000,
                budget: Some(4096)
            }
        );
        // The model's cap shrinks the budget to fit.
        assert_eq!(
            max_tokens_rule(24_576, None, 4096, 20_000),
            ThinkingPlan {
                max_tokens: 20_000,
                budget: Some(18_976)
            }
        );
    }

    #[test]
    fn rule_drops_thinking_when_the_budget_cannot_reach_1024() {
        assert_eq!(
            max_tokens_rule(4096, Some(100), 4096, 2000),
            ThinkingPlan {
                max_tokens: 2000,
                budget: None
            }
        );
        assert_eq!(
            max_tokens_rule(4096, Some(10), 4096, 2048),
            ThinkingPlan {
                max_tokens: 2048,
                budget: Some(1024)
            }
        );
    }

    #[test]
    fn beta_edits() {
        let l = ReasoningLevel::High;
        assert_eq!(
            anthropic_beta(None, l, true).as_deref(),
            Some(INTERLEAVED_THINKING_BETA)
        );
        assert_eq!(
            anthropic_beta(Some("a ,b,, interleaved-thinking-2025-05-14"), l, true).as_deref(),
            Some("a, b, interleaved-thinking-2025-05-14")
        );
        assert_eq!(
            anthropic_beta(
                Some("a, interleaved-thinking-2025-05-14"),
                ReasoningLevel::Off,
                false
            )
            .as_deref(),
            Some("a")
        );
        assert_eq!(
            anthropic_beta(
                Some("interleaved-thinking-2025-05-14"),
                ReasoningLevel::Off,
                false
            ),
            None
        );
        assert_eq!(
            anthropic_beta(Some("x,y"), ReasoningLevel::Auto, false).as_deref(),
            Some("x,y")
        );
        assert_eq!(anthropic_beta(None, ReasoningLevel::Off, false), None);
    }

    #[test]
    fn fixed_level_sets_thinking_and_drops_forbidden_sampling() {
        let mut body = json!({"max_tokens": 1000, "temperature": 0.2, "top_k": 5, "top_p": 0.5, "thinking": {"type": "disabled"}})
            .as_object()
            .cloned()
            .unwrap();
        assert!(apply_anthropic(
            &mut body,
            &model(ReasoningLevel::Low),
            ReasoningBudgets::default()
        ));
        assert_eq!(
            Value::Object(body),
            json!({"max_tokens": 5096, "thinking": {"type": "enabled", "budget_tokens": 4096}})
        );
    }

    #[test]
    fn high_level_gets_its_whole_budget_without_a_client_stream() {
        // A client that did not ask for a stream: the call streams upstream all the same, so
        // "high" keeps 24,576 tokens of thinking and max_tokens 28,672 (before: 20,309 and
        // 21,333).
        let mut body = json!({"stream": false}).as_object().cloned().unwrap();
        assert!(apply_anthropic(
            &mut body,
            &model(ReasoningLevel::High),
            ReasoningBudgets::default()
        ));
        assert_eq!(body["max_tokens"], 28_672);
        assert_eq!(
            body["thinking"],
            json!({"type": "enabled", "budget_tokens": 24_576})
        );
    }

    #[test]
    fn temperature_one_and_high_top_p_survive_thinking() {
        let mut body = json!({"temperature": 1, "top_p": 0.97})
            .as_object()
            .cloned()
            .unwrap();
        drop_sampling_forbidden_with_thinking(&mut body);
        assert_eq!(
            Value::Object(body),
            json!({"temperature": 1, "top_p": 0.97})
        );
    }

    #[test]
    fn auto_and_off() {
        let client = json!({"max_tokens": 100, "thinking": {"type": "enabled", "budget_tokens": 2000}, "temperature": 0.3});
        let mut body = client.as_object().cloned().unwrap();
        assert!(!apply_anthropic(
            &mut body,
            &model(ReasoningLevel::Auto),
            ReasoningBudgets::default()
        ));
        assert_eq!(Value::Object(body), client);
        let mut body = client.as_object().cloned().unwrap();
        assert!(!apply_anthropic(
            &mut body,
            &model(ReasoningLevel::Off),
            ReasoningBudgets::default()
        ));
        assert_eq!(
            Value::Object(body),
            json!({"max_tokens": 100, "temperature": 0.3})
        );
        let mut body = Map::new();
        apply_anthropic(
            &mut body,
            &model(ReasoningLevel::Auto),
            ReasoningBudgets::default(),
        );
        assert_eq!(body["max_tokens"], 4096);
    }

    #[test]
    fn responses_and_chat_levels() {
        let mut b = json!({"reasoning": {"effort": "high"}})
            .as_object()
            .cloned()
            .unwrap();
        apply_responses(&mut b, ReasoningLevel::Auto);
        assert_eq!(b["reasoning"], json!({"effort": "high"}));
        apply_responses(&mut b, ReasoningLevel::Medium);
        assert_eq!(
            b["reasoning"],
            json!({"effort": "medium", "summary": "auto"})
        );
        apply_responses(&mut b, ReasoningLevel::Off);
        assert!(!b.contains_key("reasoning"));

        let mut c = json!({"reasoning_effort": "minimal"})
            .as_object()
            .cloned()
            .unwrap();
        apply_chat(&mut c, ReasoningLevel::Auto);
        assert_eq!(c["reasoning_effort"], "minimal");
        apply_chat(&mut c, ReasoningLevel::High);
        assert_eq!(c["reasoning_effort"], "high");
        apply_chat(&mut c, ReasoningLevel::Off);
        assert!(!c.contains_key("reasoning_effort"));
    }
}
