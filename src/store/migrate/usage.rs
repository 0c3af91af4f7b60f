//! The Node.js version's `data/factory_usage.json` (`upstream-factory.md` §7.3) into the usage
//! rollups — and, when it is absent, its `data/request_stats.json` ([`super::stats`]), read into
//! the same [`NodeUsage`] as one source without a key.
//!
//! The file holds, per key (named by a mask such as `fk-1...cdef`, or by the key itself), an
//! all-time `total_tokens`/`total_requests` and buckets `daily["YYYY-MM-DD"]` and
//! `hourly["YYYY-MM-DDTHH:00"]` of `{tokens, requests}` (optionally split into input / output /
//! cache / thinking tokens and successes / failures). It has no model and no zone: dates and
//! hours are read as the gateway's time zone. What survives:
//!
//! - per key (when the mask names exactly one pool key; else under the credential `node`), per
//!   day and per hour, requests and tokens — the day and hour rollups, so the dashboard's charts
//!   and `/admin/usage` show them; the model is unknown (`-`);
//! - the all-time totals, including what is older than the file's daily buckets (the `total`
//!   rollup), so `/factory/balance/*` all-time figures match the Node version's;
//! - tokens without a split count as input tokens; requests count as successful.
//!
//! No usage record is made (the file has none), so a series filtered by key *and* model does not
//! reach the imported history.
//!
//! Safe to run again: what was imported is remembered per file key and bucket (the meta entry
//! [`MARKER`]); a second run adds only what grew since (a Node version still running keeps
//! adding to its buckets) and imports nothing from an unchanged file.

use std::collections::{BTreeMap, HashMap};

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::json_describe::{kind_of, show_at_most};
use crate::secret::mask;
use crate::store::records::Millis;
use crate::store::sqlite::{RollupRow, Tokens, UsageTotals};
use crate::usage::buckets;

/// The meta entry remembering what was imported.
pub const MARKER: &str = "node_usage_import";
/// The credential of history whose key is not (or not unambiguously) in the pool.
pub const UNMATCHED: &str = "node";

/// One bucket's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Figures {
    requests: u64,
    successes: u64,
    input: u64,
    cache_read: u64,
    cache_write: u64,
    output: u64,
    reasoning: u64,
}

impl Figures {
    /// A file's all-time totals: no split, so the tokens count as input and the requests as
    /// successful.
    pub(super) fn all_time(requests: u64, tokens: u64) -> Figures {
        Figures {
            requests,
            successes: requests,
            input: tokens,
            ..Figures::default()
        }
    }

    fn tokens(&self) -> u64 {
        self.input
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_write)
            .saturating_add(self.output)
    }

    fn add(&mut self, o: &Figures) {
        self.requests = self.requests.saturating_add(o.requests);
        self.successes = self.successes.saturating_add(o.successes);
        self.input = self.input.saturating_add(o.input);
        self.cache_read = self.cache_read.saturating_add(o.cache_read);
        self.cache_write = self.cache_write.saturating_add(o.cache_write);
        self.output = self.output.saturating_add(o.output);
        self.reasoning = self.reasoning.saturating_add(o.reasoning);
    }

    /// Field by field, what `self` has beyond `done` (never negative).
    fn beyond(&self, done: &Figures) -> Figures {
        Figures {
            requests: self.requests.saturating_sub(done.requests),
            successes: self.successes.saturating_sub(done.successes),
            input: self.input.saturating_sub(done.input),
            cache_read: self.cache_read.saturating_sub(done.cache_read),
            cache_write: self.cache_write.saturating_sub(done.cache_write),
            output: self.output.saturating_sub(done.output),
            reasoning: self.reasoning.saturating_sub(done.reasoning),
        }
    }

    /// Field by field maximum.
    fn max(&self, o: &Figures) -> Figures {
        Figures {
            requests: self.requests.max(o.requests),
            successes: self.successes.max(o.successes),
            input: self.input.max(o.input),
            cache_read: self.cache_read.max(o.cache_read),
            cache_write: self.cache_write.max(o.cache_write),
            output: self.output.max(o.output),
            reasoning: self.reasoning.max(o.reasoning),
        }
    }

    fn is_zero(&self) -> bool {
        *self == Figures::default()
    }

    fn totals(&self) -> UsageTotals {
        UsageTotals {
            requests: self.requests,
            successes: self.successes,
            tokens: Tokens {
                input_tokens: self.input,
                cache_read_tokens: self.cache_read,
                cache_write_tokens: self.cache_write,
                output_tokens: self.output,
                reasoning_tokens: self.reasoning,
            },
        }
    }
}

/// Which file a [`Source`] comes from, and so how it is attributed and how its all-time
/// `tokens` are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A `factory_usage.json` entry: a key (matched to the pool), whose totals count every token.
    FactoryUsage,
    /// `request_stats.json`: no key (always the credential [`UNMATCHED`]); its `tokens` are
    /// input + output + thinking, cache tokens excluded (`upstream-factory.md` §7.1).
    RequestStats,
}

impl Origin {
    /// The tokens of `f` as the file's all-time `tokens` counts them.
    fn counted(self, f: &Figures) -> u64 {
        match self {
            Origin::FactoryUsage => f.tokens(),
            Origin::RequestStats => f.input.saturating_add(f.output),
        }
    }
}

/// One key's history in the file.
#[derive(Debug, Clone)]
pub struct Source {
    origin: Origin,
    /// The file's name for the key: a mask, or the key itself (then only held here, to match).
    name: String,
    /// How it is remembered and shown: the file's mask, or a fingerprint of a whole key.
    pub label: String,
    total: Option<Figures>,
    days: BTreeMap<Date, Figures>,
    hours: BTreeMap<DateTime, Figures>,
}

/// A parsed `factory_usage.json` (or `request_stats.json`).
#[derive(Debug, Clone, Default)]
pub struct NodeUsage {
    pub sources: Vec<Source>,
    /// What the file holds that is not imported, and why.
    pub notes: Vec<String>,
}

impl Source {
    /// The history of `request_stats.json`: all-time `total` (tokens as input, requests as
    /// successes) and daily buckets, no hours, no key; remembered under `label`.
    pub(super) fn unkeyed(
        label: &str,
        total: Option<Figures>,
        days: BTreeMap<Date, Figures>,
    ) -> Self {
        Source {
            origin: Origin::RequestStats,
            name: label.to_string(),
            label: label.to_string(),
            total,
            days,
            hours: BTreeMap::new(),
        }
    }
}

/// What was imported before (the [`MARKER`] meta entry).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Marker {
    #[serde(default)]
    sources: BTreeMap<String, SourceMark>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SourceMark {
    #[serde(default)]
    total: Figures,
    #[serde(default)]
    days: BTreeMap<String, Figures>,
    #[serde(default)]
    hours: BTreeMap<String, Figures>,
}

impl Marker {
    /// Reads the meta value; an unreadable one counts as empty (with the reason).
    pub fn parse(value: Option<&str>) -> Result<Marker, String> {
        match value {
            None => Ok(Marker::default()),
            Some(v) => serde_json::from_str(v).map_err(|e| e.to_string()),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Whether the source remembered as `label` was imported before.
    pub fn has(&self, label: &str) -> bool {
        self.sources.contains_key(label)
    }
}

/// What the usage import will write.
#[derive(Debug, Default)]
pub struct UsagePlan {
    pub rollups: Vec<RollupRow>,
    pub marker: Marker,
    /// Keys (file entries) with anything new.
    pub keys: usize,
    /// File entries attributed to a pool key.
    pub matched: usize,
    pub days: usize,
    pub hours: usize,
    pub requests: u64,
    pub tokens: u64,
    /// Requests and tokens only in the all-time totals (older than the daily buckets).
    pub older_requests: u64,
    pub older_tokens: u64,
    pub warnings: Vec<String>,
}

/// Parses `factory_usage.json`. Errors name the field (keys masked).
pub fn parse(bytes: &[u8]) -> Result<NodeUsage, String> {
    let root: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let Some(root) = root.as_object() else {
        return Err(format!("expected a JSON object, got {}", kind_of(&root)));
    };
    let usage = match root.get("usage") {
        Some(Value::Object(u)) => u,
        Some(other) => return Err(format!("usage: expected an object, got {}", kind_of(other))),
        None => return Err("usage: missing (expected {\"usage\": {<key>: {…}}})".into()),
    };
    let mut out = NodeUsage::default();
    for (name, entry) in usage {
        let label = label_of(name);
        let at = format!("usage[{label:?}]");
        let Some(e) = entry.as_object() else {
            return Err(format!("{at}: expected an object, got {}", kind_of(entry)));
        };
        let total = match (e.get("total_tokens"), e.get("total_requests")) {
            (None, None) => None,
            (t, r) => {
                let tokens = count(t, &format!("{at}.total_tokens"))?;
                let requests = count(r, &format!("{at}.total_requests"))?;
                Some(Figures::all_time(requests, tokens))
            }
        };
        let mut days = BTreeMap::new();
        for (k, v) in buckets_of(e, "daily", &at)? {
            let date: Date = k
                .parse()
                .map_err(|_| format!("{at}.daily[{k:?}]: expected a date YYYY-MM-DD"))?;
            days.insert(date, figures(v, &format!("{at}.daily[{k:?}]"))?);
        }
        let mut hours = BTreeMap::new();
        for (k, v) in buckets_of(e, "hourly", &at)? {
            let hour = parse_hour(k)
                .ok_or_else(|| format!("{at}.hourly[{k:?}]: expected an hour YYYY-MM-DDTHH:00"))?;
            hours.insert(hour, figures(v, &format!("{at}.hourly[{k:?}]"))?);
        }
        out.sources.push(Source {
            origin: Origin::FactoryUsage,
            name: name.clone(),
            label,
            total,
            days,
            hours,
        });
    }
    Ok(out)
}

/// How a file key is shown and remembered: a mask as it is, a whole key by a fingerprint.
fn label_of(name: &str) -> String {
    if split_mask(name).is_some() {
        name.to_string()
    } else {
        let digest = Sha256::digest(name.as_bytes());
        format!("{} (sha256:{})", mask(name), &hex::encode(digest)[..12])
    }
}

/// `fk-1...cdef` / `fk-1…cdef` → (`fk-1`, `cdef`).
fn split_mask(name: &str) -> Option<(&str, &str)> {
    let (head, tail) = name.split_once("...").or_else(|| name.split_once('…'))?;
    (!head.is_empty() && !tail.is_empty()).then_some((head, tail))
}

pub(super) fn buckets_of<'a>(
    e: &'a Map<String, Value>,
    field: &str,
    at: &str,
) -> Result<Vec<(&'a String, &'a Value)>, String> {
    match e.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(m)) => Ok(m.iter().collect()),
        Some(other) => Err(format!(
            "{at}.{field}: expected an object, got {}",
            kind_of(other)
        )),
    }
}

/// `YYYY-MM-DDTHH:00` (also `THH`, `THH:00:00`).
fn parse_hour(k: &str) -> Option<DateTime> {
    let (date, time) = k.split_once('T')?;
    let date: Date = date.parse().ok()?;
    let hour: i8 = match time.split(':').collect::<Vec<_>>().as_slice() {
        [h] | [h, "00"] | [h, "00", "00"] if h.len() == 2 => h.parse().ok()?,
        _ => return None,
    };
    (0..24).contains(&hour).then(|| date.at(hour, 0, 0, 0))
}

/// A non-negative whole number (absent: 0).
pub(super) fn count(v: Option<&Value>, at: &str) -> Result<u64, String> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0)
                    .map(|f| f as u64)
            })
            .ok_or_else(|| format!("{at}: expected a whole number of at least 0, got {n}")),
        Some(other) => Err(format!(
            "{at}: expected a whole number of at least 0, got {}",
            show_at_most(other, 40)
        )),
    }
}

/// A bucket: `{tokens, requests}` and optional splits.
pub(super) fn figures(v: &Value, at: &str) -> Result<Figures, String> {
    let Some(o) = v.as_object() else {
        return Err(format!("{at}: expected an object, got {}", kind_of(v)));
    };
    let get = |names: &[&str]| -> Result<u64, String> {
        for n in names {
            if let Some(v) = o.get(*n) {
                return count(Some(v), &format!("{at}.{n}"));
            }
        }
        Ok(0)
    };
    let tokens = get(&["tokens", "total_tokens"])?;
    let input = get(&["input_tokens", "prompt_tokens"])?;
    let output = get(&["output_tokens", "completion_tokens"])?;
    let thinking = get(&["thinking_tokens", "reasoning_tokens"])?;
    let cache_read = get(&["cache_read_tokens", "cache_read_input_tokens"])?;
    let cache_write = get(&["cache_creation_tokens", "cache_write_tokens"])?;
    let success = get(&["success_requests"])?;
    let failed = get(&["failed_requests"])?;
    let mut requests = get(&["requests", "total_requests"])?;
    if requests == 0 {
        requests = success.saturating_add(failed);
    }
    let successes = if o.contains_key("success_requests") {
        success.min(requests)
    } else {
        requests.saturating_sub(failed)
    };
    let mut f = Figures {
        requests,
        successes,
        input,
        cache_read,
        cache_write,
        // Thinking counts as part of the output here.
        output: output.saturating_add(thinking),
        reasoning: thinking,
    };
    // A total beyond the split (or without one) counts as input.
    f.input = f.input.saturating_add(tokens.saturating_sub(f.tokens()));
    Ok(f)
}

/// Finds the pool key a file entry names: the key itself, or a mask matching exactly one key.
/// `keys` holds (id, secret).
fn resolve<'a>(name: &str, keys: &'a [(String, String)]) -> Result<&'a str, usize> {
    if let Some((id, _)) = keys.iter().find(|(_, s)| s == name) {
        return Ok(id);
    }
    let Some((head, tail)) = split_mask(name) else {
        return Err(0);
    };
    let found: Vec<&(String, String)> = keys
        .iter()
        .filter(|(_, s)| {
            s.len() >= head.len() + tail.len() && s.starts_with(head) && s.ends_with(tail)
        })
        .collect();
    match found.as_slice() {
        [(id, _)] => Ok(id),
        other => Err(other.len()),
    }
}

/// Local start of a date / an hour in `tz` (a missing local time moves forward).
fn day_start(d: Date, tz: &TimeZone) -> Millis {
    d.to_zoned_datetime(tz.clone())
        .map(|z| z.timestamp().as_millisecond())
        .unwrap_or_default()
}

fn hour_start(h: DateTime, tz: &TimeZone) -> Millis {
    let at = h
        .to_zoned_datetime(tz.clone())
        .map(|z| z.timestamp().as_millisecond())
        .unwrap_or_default();
    buckets::buckets(at, tz).0
}

/// A rollup row's place: granularity, dimension, value, bucket start.
type RowKey = (&'static str, &'static str, String, Millis);

/// Plans the import: what is new against `marker`, attributed to the pool's `keys` (id, secret),
/// bucketed in `tz`.
pub fn plan(
    usage: &NodeUsage,
    keys: &[(String, String)],
    marker: &Marker,
    tz: &TimeZone,
) -> UsagePlan {
    let mut out = UsagePlan {
        marker: marker.clone(),
        ..UsagePlan::default()
    };
    let mut rows: BTreeMap<RowKey, Figures> = BTreeMap::new();
    let mut add = |granularity: &'static str, credential: &str, start: Millis, f: &Figures| {
        for (dim, value) in [("all", ""), ("key", credential), ("model", "-")] {
            rows.entry((granularity, dim, value.to_string(), start))
                .or_default()
                .add(f);
        }
    };
    let mut unmatched: HashMap<String, usize> = HashMap::new();

    for s in &usage.sources {
        let credential = match (s.origin, resolve(&s.name, keys)) {
            // No key to match: the whole file is the credential `node`, without a note.
            (Origin::RequestStats, _) => UNMATCHED.to_string(),
            (Origin::FactoryUsage, Ok(id)) => {
                out.matched += 1;
                id.to_string()
            }
            (Origin::FactoryUsage, Err(n)) => {
                unmatched.insert(s.label.clone(), n);
                UNMATCHED.to_string()
            }
        };
        let mark = out.marker.sources.entry(s.label.clone()).or_default();

        // Days: the file's daily buckets, else the sum of its hours on that date.
        let mut days = s.days.clone();
        let mut derived: BTreeMap<Date, Figures> = BTreeMap::new();
        for (h, f) in &s.hours {
            if !s.days.contains_key(&h.date()) {
                derived.entry(h.date()).or_default().add(f);
            }
        }
        days.extend(derived);

        let mut new_days = Figures::default();
        let mut anything = false;
        for (d, f) in &days {
            let label = d.to_string();
            let done = mark.days.get(&label).copied().unwrap_or_default();
            let delta = f.beyond(&done);
            if delta.is_zero() {
                continue;
            }
            add("day", &credential, day_start(*d, tz), &delta);
            new_days.add(&delta);
            mark.days.insert(label, f.max(&done));
            out.days += 1;
            anything = true;
        }
        for (h, f) in &s.hours {
            let label = h.strftime("%Y-%m-%dT%H:00").to_string();
            let done = mark.hours.get(&label).copied().unwrap_or_default();
            let delta = f.beyond(&done);
            if delta.is_zero() {
                continue;
            }
            add("hour", &credential, hour_start(*h, tz), &delta);
            mark.hours.insert(label, f.max(&done));
            out.hours += 1;
            anything = true;
        }

        // All time: the new days, plus what the file's totals hold beyond all its buckets
        // (tokens counted as the file counts them: request_stats.json's leave cache tokens out).
        // Requests older than the buckets count as successful: the totals have no split.
        let counted = |f: &Figures| s.origin.counted(f);
        let file_total = s.total.unwrap_or_default();
        let mut all_days = Figures::default();
        for f in days.values() {
            all_days.add(f);
        }
        let mut total = new_days;
        let already = mark.total;
        let beyond = |file: u64, days: u64, done: u64, new: u64| {
            file.max(days).saturating_sub(done).saturating_sub(new)
        };
        let older_requests = beyond(
            file_total.requests,
            all_days.requests,
            already.requests,
            new_days.requests,
        );
        let older = Figures {
            requests: older_requests,
            successes: older_requests,
            input: beyond(
                counted(&file_total),
                counted(&all_days),
                counted(&already),
                counted(&new_days),
            ),
            ..Figures::default()
        };
        total.add(&older);
        if !total.is_zero() {
            add("total", &credential, 0, &total);
            mark.total.add(&total);
            out.requests = out.requests.saturating_add(total.requests);
            out.tokens = out.tokens.saturating_add(total.tokens());
            out.older_requests = out.older_requests.saturating_add(older.requests);
            out.older_tokens = out.older_tokens.saturating_add(older.tokens());
            anything = true;
        }
        if anything && s.origin == Origin::FactoryUsage {
            out.keys += 1;
        }
    }

    let mut unmatched: Vec<(String, usize)> = unmatched.into_iter().collect();
    unmatched.sort();
    for (label, n) in unmatched {
        out.warnings.push(if n == 0 {
            format!(
                "factory_usage.json: {label} matches no key in the pool: its history is kept under the credential \"{UNMATCHED}\""
            )
        } else {
            format!(
                "factory_usage.json: {label} matches {n} keys in the pool: its history is kept under the credential \"{UNMATCHED}\""
            )
        });
    }
    out.rollups = rows
        .into_iter()
        .map(|((granularity, dim, value, bucket_start), f)| RollupRow {
            granularity: granularity.to_string(),
            dim: dim.to_string(),
            value,
            bucket_start,
            totals: f.totals(),
        })
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &[u8] = br#"{
      "usage": {
        "fk-a...1111": {
          "total_tokens": 1000, "total_requests": 20,
          "daily": {"2025-10-12": {"tokens": 300, "requests": 5},
                    "2025-10-13": {"tokens": 200, "requests": 4}},
          "hourly": {"2025-10-13T09:00": {"tokens": 120, "requests": 2},
                     "2025-10-13T10:00": {"tokens": 80, "requests": 2},
                     "2025-10-14T01:00": {"tokens": 50, "requests": 1}}
        },
        "fk-x...9999": {"total_tokens": 10, "total_requests": 1,
          "daily": {"2025-10-12": {"tokens": 10, "requests": 1}}}
      },
      "timestamp": "2025-10-14T01:30:00.000Z"
    }"#;

    fn keys() -> Vec<(String, String)> {
        vec![
            ("key_a".into(), "fk-a-secret-aaaa-1111".into()),
            ("key_b".into(), "fk-b-secret-bbbb-2222".into()),
        ]
    }

    fn sum(p: &UsagePlan, granularity: &str, dim: &str, value: &str) -> (u64, u64) {
        p.rollups
            .iter()
            .filter(|r| r.granularity == granularity && r.dim == dim && r.value == value)
            .fold((0, 0), |(r, t), row| {
                (r + row.totals.requests, t + row.totals.tokens.total())
            })
    }

    #[test]
    fn plan_attributes_and_keeps_all_time_totals() {
        let usage = parse(FILE).unwrap();
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        let p = plan(&usage, &keys(), &Marker::default(), &tz);
        assert_eq!(p.matched, 1);
        assert_eq!(p.keys, 2);
        // Days: 2 of key a, 1 derived from its 2025-10-14 hour, 1 of the unknown key.
        assert_eq!(p.days, 4);
        assert_eq!(p.hours, 3);
        assert_eq!(sum(&p, "day", "key", "key_a"), (10, 550));
        assert_eq!(sum(&p, "total", "key", "key_a"), (20, 1000));
        assert_eq!(sum(&p, "hour", "key", "key_a"), (5, 250));
        assert_eq!(sum(&p, "total", "key", UNMATCHED), (1, 10));
        assert_eq!(sum(&p, "total", "all", ""), (21, 1010));
        assert_eq!(sum(&p, "total", "model", "-"), (21, 1010));
        assert_eq!((p.older_requests, p.older_tokens), (10, 450));
        assert!(p.warnings.iter().any(|w| w.contains("fk-x...9999")));
        // The local day of 2025-10-12 in Shanghai starts at 16:00 UTC the day before.
        let day = p
            .rollups
            .iter()
            .find(|r| r.granularity == "day" && r.value == "key_a")
            .unwrap();
        assert_eq!(
            day.bucket_start,
            "2025-10-11T16:00:00Z"
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_millisecond()
        );
        // Unsplit tokens are input; requests are successes.
        assert_eq!(day.totals.tokens.input_tokens, 300);
        assert_eq!(day.totals.successes, 5);
    }

    #[test]
    fn second_plan_with_the_marker_adds_nothing_then_only_growth() {
        let usage = parse(FILE).unwrap();
        let tz = TimeZone::UTC;
        let first = plan(&usage, &keys(), &Marker::default(), &tz);
        let marker = Marker::parse(Some(&first.marker.to_json())).unwrap();
        let again = plan(&usage, &keys(), &marker, &tz);
        assert!(again.rollups.is_empty(), "{:?}", again.rollups);
        assert_eq!((again.keys, again.days, again.hours), (0, 0, 0));

        let grown = String::from_utf8(FILE.to_vec())
            .unwrap()
            .replace(
                r#""2025-10-13": {"tokens": 200, "requests": 4}"#,
                r#""2025-10-13": {"tokens": 260, "requests": 5}"#,
            )
            .replace(
                r#""total_tokens": 1000, "total_requests": 20"#,
                r#""total_tokens": 1060, "total_requests": 21"#,
            );
        let grown = parse(grown.as_bytes()).unwrap();
        let third = plan(&grown, &keys(), &again.marker, &tz);
        assert_eq!(third.days, 1);
        assert_eq!(sum(&third, "day", "key", "key_a"), (1, 60));
        assert_eq!(sum(&third, "total", "key", "key_a"), (1, 60));
    }

    #[test]
    fn splits_whole_keys_and_ambiguous_masks() {
        let file = br#"{"usage": {
            "fk-b-secret-bbbb-2222": {"daily": {"2025-10-12": {"tokens": 100,
                "prompt_tokens": 60, "completion_tokens": 30, "requests": 3, "failed_requests": 1}}},
            "fk-...1111": {"daily": {"2025-10-12": {"tokens": 1, "requests": 1}}}
        }}"#;
        let mut keys = keys();
        keys.push(("key_c".into(), "fk-c-other-cccc-1111".into()));
        let usage = parse(file).unwrap();
        // A whole key is never shown: only its mask and a fingerprint.
        assert!(usage.sources[0].label.starts_with("fk-b-s…2222 (sha256:"));
        let p = plan(&usage, &keys, &Marker::default(), &TimeZone::UTC);
        let day = p
            .rollups
            .iter()
            .find(|r| r.granularity == "day" && r.value == "key_b")
            .unwrap();
        assert_eq!(day.totals.tokens.input_tokens, 70);
        assert_eq!(day.totals.tokens.output_tokens, 30);
        assert_eq!((day.totals.requests, day.totals.successes), (3, 2));
        assert!(p.warnings.iter().any(|w| w.contains("matches 2 keys")));
        assert!(!p.marker.to_json().contains("fk-b-secret"));
    }

    #[test]
    fn malformed_files_name_the_field() {
        for (bytes, needle) in [
            (&b"nope"[..], "not valid JSON"),
            (&b"{}"[..], "usage: missing"),
            (&br#"{"usage": []}"#[..], "usage: expected an object"),
            (
                &br#"{"usage": {"fk-a...1111": {"daily": {"2025-13-40": {}}}}}"#[..],
                "usage[\"fk-a...1111\"].daily[\"2025-13-40\"]",
            ),
            (
                &br#"{"usage": {"fk-a...1111": {"daily": {"2025-10-12": {"tokens": "many"}}}}}"#[..],
                "usage[\"fk-a...1111\"].daily[\"2025-10-12\"].tokens: expected a whole number",
            ),
            (
                &br#"{"usage": {"fk-a...1111": {"hourly": {"2025-10-12T25:00": {}}}}}"#[..],
                "hourly[\"2025-10-12T25:00\"]",
            ),
            (
                &br#"{"usage": {"fk-a...1111": {"total_tokens": -5}}}"#[..],
                "total_tokens: expected a whole number",
            ),
        ] {
            let err = parse(bytes).unwrap_err();
            assert!(err.contains(needle), "{err} lacks {needle}");
        }
        // A whole key in a malformed entry is named by its mask only.
        let err = parse(br#"{"usage": {"fk-whole-secret-key-123456": 5}}"#).unwrap_err();
        assert!(!err.contains("whole-secret"), "{err}");
    }
}
