//! Token usage picked from upstream replies, streamed or not.
//!
//! [`Usage`] uses the token fields of contract.md §7: `input_tokens` is the **uncached** input as
//! Anthropic counts it, `cache_read_tokens` and `cache_write_tokens` are the cached parts,
//! `output_tokens` includes reasoning, `reasoning_tokens` is the part of output spent on
//! reasoning, and `total_tokens = input + cache_read + cache_write + output`. Serialized, a
//! [`Usage`] is exactly the contract's token object `T` (those six fields, `total_tokens`
//! included).
//!
//! Mapping per upstream wire format ([`WireFormat`]); a missing field counts as 0, a count above
//! [`MAX_TOKENS`] (10^12) counts as that, and a subtraction never goes below 0:
//!
//! | format | where | rule |
//! |---|---|---|
//! | Anthropic | body `usage`, `message_start.message.usage` | `input_tokens` → input, `cache_read_input_tokens` → cache_read, `cache_creation_input_tokens` → cache_write, `output_tokens` → output; reasoning is not reported → 0 |
//! | Anthropic | `message_delta.usage` | **cumulative**: every field present *replaces* the value seen so far, never adds to it (translation.md §3.1, §3.3, §7 rows 13–14: `message_start` output 1 + `message_delta` 89 = 89) |
//! | Responses | body `usage`, `response.usage` of the terminal event (`response.completed`, `response.incomplete`, `response.failed`) | `input_tokens` *includes* cached tokens: input = `input_tokens − input_tokens_details.cached_tokens`, cache_read = `cached_tokens`, output = `output_tokens`, reasoning = `output_tokens_details.reasoning_tokens` (translation.md §4.2, §4.3) |
//! | Chat | body `usage`, any chunk with a non-null `usage` object (the last one wins) | `prompt_tokens` *includes* cached tokens: input = `prompt_tokens − prompt_tokens_details.cached_tokens − cache_creation_input_tokens`, cache_read = `cached_tokens`, cache_write = top-level `cache_creation_input_tokens` (LiteLLM-style extension), output = `completion_tokens`, reasoning = `completion_tokens_details.reasoning_tokens` |
//!
//! Streams: [`UsageSniffer`] watches decoded events ([`crate::sse::Event`]) and dispatches on the
//! JSON `type` field, falling back to the SSE event name when `type` is absent (translation.md
//! §0 G2). [`SseTap`] does the decoding too, for pass-through routes that forward the upstream
//! bytes unchanged (§0 G7). Malformed JSON, non-object JSON and unknown event types are ignored
//! (§0 G6); nothing here panics on upstream input.
//!
//! Terminal markers ([`UsageSniffer::completed`]): Anthropic `message_stop`; Responses
//! `response.completed`, `response.incomplete`, `response.failed` (Responses has no `[DONE]`,
//! §4.3); Chat `data: [DONE]` only. A Chat chunk with a `finish_reason` is *not* terminal (the
//! usage chunk follows it when `include_usage` is on); the reason is recorded and available from
//! [`UsageSniffer::finish_reason`]. A stream cut short keeps whatever usage was seen and stays
//! `completed() == false` (§3.3: end of body without `message_stop` is a truncated stream).
//!
//! This module root is pure: no I/O, no clocks, no globals. Its submodules are not:
//! [`recorder`] queues one record per request to the store's writer, and [`buckets`] turns times
//! into the configured zone's hours and days.

pub mod buckets;
pub mod recorder;
pub mod sync;

use std::borrow::Cow;

use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::Value;

use crate::sse::{Decoder, Event};

/// Token counts of one upstream reply (contract.md §7 meanings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Uncached input tokens, as Anthropic counts them.
    pub input_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write_tokens: u64,
    /// Output tokens, reasoning included.
    pub output_tokens: u64,
    /// The part of `output_tokens` spent on reasoning.
    pub reasoning_tokens: u64,
}

impl Usage {
    /// `input + cache_read + cache_write + output` (saturating).
    pub fn total_tokens(&self) -> u64 {
        self.input_side_tokens().saturating_add(self.output_tokens)
    }

    /// Every input token, cached or not: `input + cache_read + cache_write` (saturating). What
    /// a key's `input_tokens` counter adds per request.
    pub fn input_side_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_tokens)
    }

    /// Field-by-field sum, saturating at `u64::MAX`.
    pub fn saturating_add(&self, other: &Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_add(other.input_tokens),
            cache_read_tokens: self
                .cache_read_tokens
                .saturating_add(other.cache_read_tokens),
            cache_write_tokens: self
                .cache_write_tokens
                .saturating_add(other.cache_write_tokens),
            output_tokens: self.output_tokens.saturating_add(other.output_tokens),
            reasoning_tokens: self.reasoning_tokens.saturating_add(other.reasoning_tokens),
        }
    }

    /// Each field clamped to [`MAX_TOKENS`] (what parsing already guarantees).
    pub fn clamped(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens.min(MAX_TOKENS),
            cache_read_tokens: self.cache_read_tokens.min(MAX_TOKENS),
            cache_write_tokens: self.cache_write_tokens.min(MAX_TOKENS),
            output_tokens: self.output_tokens.min(MAX_TOKENS),
            reasoning_tokens: self.reasoning_tokens.min(MAX_TOKENS),
        }
    }
}

/// Serializes as contract.md §7's token object:
/// `{input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens, total_tokens}`.
impl Serialize for Usage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Usage", 6)?;
        s.serialize_field("input_tokens", &self.input_tokens)?;
        s.serialize_field("cache_read_tokens", &self.cache_read_tokens)?;
        s.serialize_field("cache_write_tokens", &self.cache_write_tokens)?;
        s.serialize_field("output_tokens", &self.output_tokens)?;
        s.serialize_field("reasoning_tokens", &self.reasoning_tokens)?;
        s.serialize_field("total_tokens", &self.total_tokens())?;
        s.end()
    }
}

/// The upstream wire format a reply is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// Anthropic Messages.
    Anthropic,
    /// OpenAI Responses.
    Responses,
    /// OpenAI Chat Completions.
    Chat,
}

/// Usage of a non-streaming reply body: its top-level `usage` object (an Anthropic message, a
/// Responses response object, a Chat completion). `None` when there is no `usage` object.
pub fn from_json(format: WireFormat, body: &Value) -> Option<Usage> {
    let usage = object(body.get("usage"))?;
    Some(match format {
        WireFormat::Anthropic => anthropic_usage(usage),
        WireFormat::Responses => responses_usage(usage),
        WireFormat::Chat => chat_usage(usage),
    })
}

/// The usage of a whole reply given as bytes: only the top-level `usage` member is built, the
/// rest of the reply is skipped without building it (a relayed reply is parsed for nothing
/// else). Same result as [`from_json`] on the parsed reply.
pub fn from_reply_bytes(format: WireFormat, body: &[u8]) -> Option<Usage> {
    /// The last `usage` member wins, as in a parsed object.
    struct Reply(Option<Value>);
    impl<'de> serde::Deserialize<'de> for Reply {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Reply;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Reply, A::Error> {
                    let mut usage = None;
                    while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                        if key == "usage" {
                            usage = Some(map.next_value::<Value>()?);
                        } else {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                    Ok(Reply(usage))
                }
            }
            d.deserialize_map(V)
        }
    }
    let Reply(usage) = serde_json::from_slice::<Reply>(body).ok()?;
    let usage = usage.filter(Value::is_object)?;
    Some(match format {
        WireFormat::Anthropic => anthropic_usage(&usage),
        WireFormat::Responses => responses_usage(&usage),
        WireFormat::Chat => chat_usage(&usage),
    })
}

/// `v` if it is a JSON object.
fn object(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| v.is_object())
}

/// The most tokens one field of one reply may count (10^12). An upstream reporting more (or a
/// number beyond `u64`) is clamped here, so absurd usage cannot poison key counters, rollups and
/// totals; sums of clamped counts cannot overflow for millions of requests, and every sum
/// saturates anyway.
pub const MAX_TOKENS: u64 = 1_000_000_000_000;

/// A token count: a non-negative integer (or a non-negative finite float, truncated), clamped
/// to [`MAX_TOKENS`]. Anything else (negative, not a number) is not a count.
fn count(v: Option<&Value>) -> Option<u64> {
    let v = v?;
    v.as_u64()
        .or_else(|| {
            v.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                // Truncation is the intent; values beyond u64 saturate.
                .map(|f| f as u64)
        })
        .map(|n| n.min(MAX_TOKENS))
}

/// `obj[key]` as a count, 0 when missing.
fn field(obj: &Value, key: &str) -> u64 {
    count(obj.get(key)).unwrap_or(0)
}

/// `obj[outer][key]` as a count, 0 when missing.
fn nested(obj: &Value, outer: &str, key: &str) -> u64 {
    count(obj.get(outer).and_then(|o| o.get(key))).unwrap_or(0)
}

fn anthropic_usage(u: &Value) -> Usage {
    Usage {
        input_tokens: field(u, "input_tokens"),
        cache_read_tokens: field(u, "cache_read_input_tokens"),
        cache_write_tokens: field(u, "cache_creation_input_tokens"),
        output_tokens: field(u, "output_tokens"),
        reasoning_tokens: 0,
    }
}

/// Apply a cumulative `message_delta.usage`: each present field replaces. Returns whether
/// `output_tokens` was present.
fn anthropic_replace(usage: &mut Usage, u: &Value) -> bool {
    if let Some(n) = count(u.get("input_tokens")) {
        usage.input_tokens = n;
    }
    if let Some(n) = count(u.get("cache_read_input_tokens")) {
        usage.cache_read_tokens = n;
    }
    if let Some(n) = count(u.get("cache_creation_input_tokens")) {
        usage.cache_write_tokens = n;
    }
    match count(u.get("output_tokens")) {
        Some(n) => {
            usage.output_tokens = n;
            true
        }
        None => false,
    }
}

fn responses_usage(u: &Value) -> Usage {
    let cached = nested(u, "input_tokens_details", "cached_tokens");
    Usage {
        input_tokens: field(u, "input_tokens").saturating_sub(cached),
        cache_read_tokens: cached,
        cache_write_tokens: 0,
        output_tokens: field(u, "output_tokens"),
        reasoning_tokens: nested(u, "output_tokens_details", "reasoning_tokens"),
    }
}

fn chat_usage(u: &Value) -> Usage {
    let cached = nested(u, "prompt_tokens_details", "cached_tokens");
    let written = field(u, "cache_creation_input_tokens");
    Usage {
        input_tokens: field(u, "prompt_tokens")
            .saturating_sub(cached)
            .saturating_sub(written),
        cache_read_tokens: cached,
        cache_write_tokens: written,
        output_tokens: field(u, "completion_tokens"),
        reasoning_tokens: nested(u, "completion_tokens_details", "reasoning_tokens"),
    }
}

/// Number of Unicode scalar values of `v` if it is a string, else 0.
fn chars(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_str)
        .map_or(0, |s| u64::try_from(s.chars().count()).unwrap_or(u64::MAX))
}

/// The typed, borrowed shapes of [`UsageSniffer::text_delta_chars`].
mod light {
    use std::borrow::Cow;

    use serde::Deserialize;

    /// The Responses events whose string `delta` is generated text.
    pub(super) const RESPONSES_TEXT_DELTAS: [&str; 6] = [
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_text.delta",
    ];

    /// Anthropic `content_block_delta`.
    #[derive(Deserialize)]
    pub(super) struct BlockDelta<'a> {
        #[serde(rename = "type", borrow, default)]
        pub kind: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        pub delta: Option<Delta<'a>>,
    }

    #[derive(Deserialize)]
    pub(super) struct Delta<'a> {
        #[serde(borrow, default)]
        pub text: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        pub thinking: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        pub partial_json: Option<Cow<'a, str>>,
    }

    /// A Responses `*.delta` event.
    #[derive(Deserialize)]
    pub(super) struct TextDelta<'a> {
        #[serde(rename = "type", borrow, default)]
        pub kind: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        pub delta: Option<Cow<'a, str>>,
    }
}

/// An event's data parsed as JSON, when it is a JSON object (anything else is `None`).
pub fn parse_object(data: &str) -> Option<Value> {
    serde_json::from_str::<Value>(data)
        .ok()
        .filter(Value::is_object)
}

/// Watches the decoded SSE events of one upstream stream (pass-through or translated) and keeps
/// the usage seen so far. See the module docs for the per-format rules.
#[derive(Debug, Clone)]
pub struct UsageSniffer {
    format: WireFormat,
    usage: Usage,
    saw_usage: bool,
    saw_output_usage: bool,
    completed: bool,
    errored: bool,
    text_chars: u64,
    finish_reason: Option<String>,
}

impl UsageSniffer {
    /// A sniffer for a stream in `format`.
    pub fn new(format: WireFormat) -> Self {
        Self {
            format,
            usage: Usage::default(),
            saw_usage: false,
            saw_output_usage: false,
            completed: false,
            errored: false,
            text_chars: 0,
            finish_reason: None,
        }
    }

    /// Look at the next event of the stream.
    pub fn on_event(&mut self, ev: &Event) {
        if ev.is_done() {
            self.on_parsed(ev, None);
            return;
        }
        if let Some(n) = self.text_delta_chars(ev) {
            self.add_chars(n);
            return;
        }
        let json = parse_object(&ev.data);
        self.on_parsed(ev, json.as_ref());
    }

    /// The fast path for the events that make up almost all of a stream, text deltas: their
    /// characters from a borrowed, typed parse instead of a `Value` (no map, no allocation
    /// unless the text has escapes). `None` when the event is of another kind or has an
    /// unusual shape; the general path then decides, so the result is the same either way.
    fn text_delta_chars(&self, ev: &Event) -> Option<u64> {
        if !ev.data.trim_start().starts_with('{') {
            return None;
        }
        let name = ev.name();
        let len = |s: &Option<Cow<'_, str>>| {
            s.as_deref()
                .map_or(0, |s| u64::try_from(s.chars().count()).unwrap_or(u64::MAX))
        };
        match self.format {
            WireFormat::Anthropic if name == "content_block_delta" => {
                let e: light::BlockDelta<'_> = serde_json::from_str(&ev.data).ok()?;
                if e.kind.as_deref().is_some_and(|k| k != name) {
                    return None;
                }
                Some(e.delta.map_or(0, |d| {
                    len(&d.text)
                        .saturating_add(len(&d.thinking))
                        .saturating_add(len(&d.partial_json))
                }))
            }
            WireFormat::Responses if light::RESPONSES_TEXT_DELTAS.contains(&name) => {
                let e: light::TextDelta<'_> = serde_json::from_str(&ev.data).ok()?;
                if e.kind.as_deref().is_some_and(|k| k != name) {
                    return None;
                }
                Some(len(&e.delta))
            }
            _ => None,
        }
    }

    /// Look at the next event of the stream, already parsed by the caller ([`parse_object`]:
    /// `None` when its data is not a JSON object), so that a translator and the sniffer share
    /// one parse per event.
    pub fn on_parsed(&mut self, ev: &Event, json: Option<&Value>) {
        if ev.is_done() {
            // Chat's terminal sentinel; the other formats never send it.
            if self.format == WireFormat::Chat {
                self.completed = true;
            }
            return;
        }
        let Some(json) = json else {
            // Unparseable data: ignored, except that an SSE event named `error` still is one.
            if ev.name() == "error" {
                self.errored = true;
            }
            return;
        };
        let kind = json
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_else(|| ev.name());
        match self.format {
            WireFormat::Anthropic => self.on_anthropic(kind, json),
            WireFormat::Responses => self.on_responses(kind, json),
            WireFormat::Chat => self.on_chat(ev.name(), json),
        }
    }

    fn on_anthropic(&mut self, kind: &str, json: &Value) {
        match kind {
            "message_start" => {
                if let Some(u) = object(json.get("message").and_then(|m| m.get("usage"))) {
                    // The output count here is a placeholder (1–2 tokens); it is kept, but
                    // only `message_delta` makes `saw_output_usage` true.
                    self.usage = anthropic_usage(u);
                    self.saw_usage = true;
                }
            }
            "message_delta" => {
                if let Some(u) = object(json.get("usage")) {
                    self.saw_usage = true;
                    if anthropic_replace(&mut self.usage, u) {
                        self.saw_output_usage = true;
                    }
                }
                if let Some(reason) = json
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.finish_reason = Some(reason.to_owned());
                }
            }
            "content_block_start" => {
                if let Some(block) = json.get("content_block") {
                    self.add_chars(chars(block.get("text")) + chars(block.get("thinking")));
                }
            }
            "content_block_delta" => {
                if let Some(delta) = json.get("delta") {
                    self.add_chars(
                        chars(delta.get("text"))
                            + chars(delta.get("thinking"))
                            + chars(delta.get("partial_json")),
                    );
                }
            }
            "message_stop" => self.completed = true,
            "error" => self.errored = true,
            _ => {}
        }
    }

    fn on_responses(&mut self, kind: &str, json: &Value) {
        match kind {
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.completed = true;
                if kind == "response.failed" {
                    self.errored = true;
                }
                let response = json.get("response");
                if let Some(u) = object(response.and_then(|r| r.get("usage"))) {
                    self.usage = responses_usage(u);
                    self.saw_usage = true;
                    if count(u.get("output_tokens")).is_some() {
                        self.saw_output_usage = true;
                    }
                }
                let status = response
                    .and_then(|r| r.get("status"))
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| kind.trim_start_matches("response."));
                self.finish_reason = Some(status.to_owned());
            }
            k if light::RESPONSES_TEXT_DELTAS.contains(&k) => {
                self.add_chars(chars(json.get("delta")))
            }
            "error" => self.errored = true,
            _ => {}
        }
    }

    fn on_chat(&mut self, event_name: &str, json: &Value) {
        if event_name == "error" || json.get("error").is_some_and(|e| !e.is_null()) {
            self.errored = true;
        }
        if let Some(u) = object(json.get("usage")) {
            self.usage = chat_usage(u);
            self.saw_usage = true;
            if count(u.get("completion_tokens")).is_some() {
                self.saw_output_usage = true;
            }
        }
        let Some(choices) = json.get("choices").and_then(Value::as_array) else {
            return;
        };
        for choice in choices {
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(reason.to_owned());
            }
            let Some(delta) = choice.get("delta") else {
                continue;
            };
            // Some upstreams send the same reasoning text as both fields: count it once.
            let reasoning = match delta.get("reasoning_content") {
                Some(Value::String(_)) => chars(delta.get("reasoning_content")),
                _ => chars(delta.get("reasoning")),
            };
            let mut n = chars(delta.get("content")) + chars(delta.get("refusal")) + reasoning;
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for call in calls {
                    n += chars(call.get("function").and_then(|f| f.get("arguments")));
                }
            }
            n += chars(delta.get("function_call").and_then(|f| f.get("arguments")));
            self.add_chars(n);
        }
    }

    fn add_chars(&mut self, n: u64) {
        self.text_chars = self.text_chars.saturating_add(n);
    }

    /// The usage seen so far (zeros where nothing was reported).
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Whether upstream reported any usage object at all.
    pub fn saw_usage(&self) -> bool {
        self.saw_usage
    }

    /// Whether upstream reported a real output count: Anthropic `message_delta.usage.output_tokens`
    /// (not `message_start`'s placeholder), Responses terminal `output_tokens`, Chat
    /// `completion_tokens`. When false the caller may estimate output from
    /// [`UsageSniffer::streamed_text_chars`] (about chars / 4).
    pub fn saw_output_usage(&self) -> bool {
        self.saw_output_usage
    }

    /// Whether the stream's terminal event was seen: Anthropic `message_stop`; Responses
    /// `response.completed` / `response.incomplete` / `response.failed`; Chat `[DONE]`.
    /// This means "not truncated", not "succeeded": see [`UsageSniffer::errored`].
    pub fn completed(&self) -> bool {
        self.completed
    }

    /// Whether upstream signalled an error: an `error` event (by JSON `type` or, for data that is
    /// not a JSON object, by SSE event name), a Chat chunk with a non-null `error` key, or
    /// Responses `response.failed`.
    pub fn errored(&self) -> bool {
        self.errored
    }

    /// Characters (Unicode scalar values) of visible text, refusal, reasoning and tool-argument
    /// deltas seen so far, for estimating output when upstream reported none.
    pub fn streamed_text_chars(&self) -> u64 {
        self.text_chars
    }

    /// The upstream's own stop indicator, untranslated: Chat `finish_reason` (last non-null),
    /// Anthropic `message_delta.delta.stop_reason`, Responses terminal `response.status`.
    pub fn finish_reason(&self) -> Option<&str> {
        self.finish_reason.as_deref()
    }
}

/// A pass-through tap: feed it the raw upstream byte pieces (exactly as they are forwarded,
/// unchanged) and it decodes and sniffs alongside.
///
/// At [`SseTap::finish`] a final event lacking its blank line is still looked at (usage that
/// upstream did send counts); [`SseTap::ended_cleanly`] tells whether the bytes ended on an
/// event boundary.
#[derive(Debug, Clone)]
pub struct SseTap {
    decoder: Decoder,
    sniffer: UsageSniffer,
    events: Vec<Event>,
    ended_cleanly: Option<bool>,
}

impl SseTap {
    /// A tap for an upstream stream in `format`.
    pub fn new(format: WireFormat) -> Self {
        Self {
            decoder: Decoder::new().with_dispatch_incomplete(true),
            sniffer: UsageSniffer::new(format),
            events: Vec::new(),
            ended_cleanly: None,
        }
    }

    /// Look at the next piece of upstream bytes.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.decoder.feed(chunk, &mut self.events);
        self.drain();
    }

    /// End of the upstream body. Only the first call has an effect.
    pub fn finish(&mut self) {
        if self.ended_cleanly.is_none() {
            self.ended_cleanly = Some(self.decoder.finish(&mut self.events));
            self.drain();
        }
    }

    /// What was sniffed so far.
    pub fn sniffer(&self) -> &UsageSniffer {
        &self.sniffer
    }

    /// The sniffer, consuming the tap.
    pub fn into_sniffer(self) -> UsageSniffer {
        self.sniffer
    }

    /// `None` before [`SseTap::finish`]; then whether the bytes ended on an event boundary
    /// (no unterminated line or event; see [`Decoder::finish`]).
    pub fn ended_cleanly(&self) -> Option<bool> {
        self.ended_cleanly
    }

    fn drain(&mut self) {
        for ev in self.events.drain(..) {
            self.sniffer.on_event(&ev);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
