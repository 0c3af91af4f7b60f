//! The Node.js fork's `data/request_stats.json` (`upstream-factory.md` §7.1), read when the
//! installation has no `data/factory_usage.json`:
//!
//! ```text
//! {"total": {"tokens", "requests", "last_updated"},
//!  "daily": {"YYYY-MM-DD": {"tokens", "requests", "input_tokens", "output_tokens",
//!            "thinking_tokens", "cache_creation_tokens", "cache_read_tokens",
//!            "success_requests", "failed_requests", "last_updated"}},
//!  "by_model": {"<model>": {"total_tokens", "total_requests", …}}}
//! ```
//!
//! Days are local dates; `tokens` = input + output + thinking (cache tokens excluded). The file
//! has no key and no hours. It becomes one [`Source`] of the usage import ([`super::usage`]):
//! each daily bucket a day rollup under the credential `node` and the model `-` (input → input;
//! output + thinking → output, thinking → reasoning as well; cache creation → cache write; cache
//! read → cache read; `success_requests` → successes, all requests when the bucket has no
//! split), and `total` beyond the daily buckets (older than them: the Node version keeps 30
//! days) into the all-time totals — remembered and added only once, like factory_usage.json.
//!
//! When both files exist, factory_usage.json is imported and this one is not: it has no key
//! dimension and counts the same requests, so importing both would count them twice
//! ([`super::sources`] says so in a note).

use std::collections::BTreeMap;

use jiff::civil::Date;
use serde_json::Value;

use super::usage::{Figures, NodeUsage, Source, count, figures};
use crate::config::json_describe::kind_of;

/// How the file's history is remembered in the import marker (never a factory_usage.json key,
/// which is a mask or a fingerprint).
pub const LABEL: &str = "request_stats.json";

/// Parses `request_stats.json`. Errors name the field, as factory_usage.json's do.
pub fn parse(bytes: &[u8]) -> Result<NodeUsage, String> {
    let root: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let Some(root) = root.as_object() else {
        return Err(format!("expected a JSON object, got {}", kind_of(&root)));
    };
    let total = match root.get("total") {
        None | Some(Value::Null) => None,
        Some(Value::Object(t)) => Some(Figures::all_time(
            count(t.get("requests"), "total.requests")?,
            count(t.get("tokens"), "total.tokens")?,
        )),
        Some(other) => {
            return Err(format!("total: expected an object, got {}", kind_of(other)));
        }
    };
    let mut days = BTreeMap::new();
    match root.get("daily") {
        None | Some(Value::Null) => {}
        Some(Value::Object(daily)) => {
            for (k, v) in daily {
                let date: Date = k
                    .parse()
                    .map_err(|_| format!("daily[{k:?}]: expected a date YYYY-MM-DD"))?;
                days.insert(date, figures(v, &format!("daily[{k:?}]"))?);
            }
        }
        Some(other) => {
            return Err(format!("daily: expected an object, got {}", kind_of(other)));
        }
    }

    // `by_model` is not imported. Its figures have no dates, so they could only go into the
    // all-time (`total`) rollups of the model dimension. But every request of the file is
    // already there, under the model `-`: the daily buckets and `total` are imported with the
    // model unknown (they have no model split), and each dimension's all-time rows are one
    // partition of the same requests (the usage views add up a dimension's values). Adding
    // by_model under its models would count those requests twice in the model dimension;
    // moving them out of `-` instead would need the per-model split of the days too, which the
    // file does not have. So one note says so, and the file is only checked to be readable.
    let mut notes = Vec::new();
    match root.get("by_model") {
        None | Some(Value::Null) => {}
        Some(Value::Object(models)) => {
            for (name, v) in models {
                if !v.is_object() {
                    return Err(format!(
                        "by_model[{name:?}]: expected an object, got {}",
                        kind_of(v)
                    ));
                }
            }
            if !models.is_empty() {
                notes.push(format!(
                    "by_model ({} models) is not carried over: it has no dates, and its requests are already imported under the model \"-\" from the daily buckets and the total; under their models they would be counted twice",
                    models.len()
                ));
            }
        }
        Some(other) => {
            return Err(format!(
                "by_model: expected an object, got {}",
                kind_of(other)
            ));
        }
    }
    Ok(NodeUsage {
        sources: vec![Source::unkeyed(LABEL, total, days)],
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::migrate::usage::{Marker, UNMATCHED, UsagePlan, plan};
    use crate::store::sqlite::RollupRow;
    use jiff::tz::TimeZone;

    const FILE: &str = r#"{
      "total": {"tokens": 10000, "requests": 50, "last_updated": "2025-10-14T02:00:00.000Z"},
      "daily": {
        "2025-10-12": {"tokens": 1500, "requests": 10, "input_tokens": 1000, "output_tokens": 400,
                       "thinking_tokens": 100, "cache_creation_tokens": 200,
                       "cache_read_tokens": 3000, "success_requests": 9, "failed_requests": 1,
                       "last_updated": "2025-10-12T15:00:00.000Z"},
        "2025-10-13": {"tokens": 500, "requests": 5}
      },
      "by_model": {"claude-sonnet-4-5-20250929": {"total_tokens": 8000, "total_requests": 40},
                   "gpt-5-2025-08-07": {"total_tokens": 2000, "total_requests": 10}}
    }"#;

    fn keys() -> Vec<(String, String)> {
        vec![("key_a".into(), "fk-a-secret-aaaa-1111".into())]
    }

    fn rows<'a>(p: &'a UsagePlan, granularity: &str, dim: &str) -> Vec<&'a RollupRow> {
        p.rollups
            .iter()
            .filter(|r| r.granularity == granularity && r.dim == dim)
            .collect()
    }

    /// (requests, successes, total tokens) of the rows of one granularity and dimension.
    fn sum(p: &UsagePlan, granularity: &str, dim: &str) -> (u64, u64, u64) {
        rows(p, granularity, dim)
            .iter()
            .fold((0, 0, 0), |(r, s, t), row| {
                (
                    r + row.totals.requests,
                    s + row.totals.successes,
                    t + row.totals.tokens.total(),
                )
            })
    }

    #[test]
    fn daily_buckets_and_older_totals_under_the_node_credential() {
        let usage = parse(FILE.as_bytes()).unwrap();
        assert_eq!(usage.notes.len(), 1);
        assert!(usage.notes[0].contains("by_model (2 models) is not carried over"));
        let p = plan(&usage, &keys(), &Marker::default(), &TimeZone::UTC);
        assert_eq!((p.keys, p.matched, p.days, p.hours), (0, 0, 2, 0));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert!(rows(&p, "hour", "all").is_empty());
        let days = rows(&p, "day", "key");
        assert_eq!(days.len(), 2);
        assert!(days.iter().all(|r| r.value == UNMATCHED));
        assert!(rows(&p, "day", "model").iter().all(|r| r.value == "-"));
        // The split: output + thinking → output, thinking → reasoning, cache as it is.
        let first = &days[0].totals;
        assert_eq!(days[0].bucket_start, 1_760_227_200_000);
        assert_eq!((first.requests, first.successes), (10, 9));
        assert_eq!(first.tokens.input_tokens, 1000);
        assert_eq!(first.tokens.output_tokens, 500);
        assert_eq!(first.tokens.reasoning_tokens, 100);
        assert_eq!(first.tokens.cache_write_tokens, 200);
        assert_eq!(first.tokens.cache_read_tokens, 3000);
        // No success/failed split: every request succeeded.
        assert_eq!((days[1].totals.requests, days[1].totals.successes), (5, 5));
        assert_eq!(days[1].totals.tokens.input_tokens, 500);
        // Older than the days: total minus the days, tokens counted without cache as the file
        // counts them (10,000 - 1,500 - 500), requests as successful.
        assert_eq!((p.older_requests, p.older_tokens), (35, 8000));
        assert_eq!(sum(&p, "total", "key"), (50, 49, 5200 + 8000));
        assert_eq!(sum(&p, "total", "all"), (50, 49, 13_200));
        assert_eq!((p.requests, p.tokens), (50, 13_200));
    }

    #[test]
    fn a_second_plan_adds_nothing_then_only_growth() {
        let tz = TimeZone::UTC;
        let first = plan(
            &parse(FILE.as_bytes()).unwrap(),
            &keys(),
            &Marker::default(),
            &tz,
        );
        let marker = Marker::parse(Some(&first.marker.to_json())).unwrap();
        assert!(marker.has(LABEL));
        let again = plan(&parse(FILE.as_bytes()).unwrap(), &keys(), &marker, &tz);
        assert!(again.rollups.is_empty(), "{:?}", again.rollups);

        // One more request on 2025-10-13.
        let grown = FILE
            .replace(
                r#""2025-10-13": {"tokens": 500, "requests": 5}"#,
                r#""2025-10-13": {"tokens": 700, "requests": 6}"#,
            )
            .replace(
                r#""tokens": 10000, "requests": 50"#,
                r#""tokens": 10200, "requests": 51"#,
            );
        let third = plan(&parse(grown.as_bytes()).unwrap(), &keys(), &marker, &tz);
        assert_eq!(third.days, 1);
        assert_eq!(sum(&third, "day", "key"), (1, 1, 200));
        assert_eq!(sum(&third, "total", "key"), (1, 1, 200));
        assert_eq!(third.older_requests, 0);

        // Later still: the Node version pruned 2025-10-12 and recorded a new day; what the
        // pruned day held is not counted again as older.
        let marker = Marker::parse(Some(&third.marker.to_json())).unwrap();
        let pruned: Value = serde_json::from_str(&grown).unwrap();
        let mut pruned = pruned.as_object().unwrap().clone();
        pruned["total"] = serde_json::json!({"tokens": 10300, "requests": 52});
        pruned["daily"] = serde_json::json!({
            "2025-10-13": {"tokens": 700, "requests": 6},
            "2025-10-14": {"tokens": 100, "requests": 1}
        });
        let bytes = serde_json::to_vec(&pruned).unwrap();
        let fourth = plan(&parse(&bytes).unwrap(), &keys(), &marker, &tz);
        assert_eq!(fourth.days, 1);
        assert_eq!(sum(&fourth, "total", "all"), (1, 1, 100));
        assert_eq!((fourth.older_requests, fourth.older_tokens), (0, 0));
    }

    #[test]
    fn malformed_files_name_the_field() {
        for (text, needle) in [
            ("nope", "not valid JSON"),
            ("[]", "expected a JSON object, got an array"),
            (r#"{"total": 5}"#, "total: expected an object, got a number"),
            (
                r#"{"total": {"tokens": -1}}"#,
                "total.tokens: expected a whole number of at least 0",
            ),
            (
                r#"{"daily": []}"#,
                "daily: expected an object, got an array",
            ),
            (
                r#"{"daily": {"2025-13-40": {}}}"#,
                r#"daily["2025-13-40"]: expected a date"#,
            ),
            (
                r#"{"daily": {"2025-10-12": {"input_tokens": "many"}}}"#,
                r#"daily["2025-10-12"].input_tokens: expected a whole number of at least 0, got "many""#,
            ),
            (
                r#"{"daily": {"2025-10-12": 3}}"#,
                r#"daily["2025-10-12"]: expected an object"#,
            ),
            (
                r#"{"by_model": 3}"#,
                "by_model: expected an object, got a number",
            ),
            (
                r#"{"by_model": {"gpt-5": "x"}}"#,
                r#"by_model["gpt-5"]: expected an object, got a string"#,
            ),
        ] {
            let err = parse(text.as_bytes()).unwrap_err();
            assert!(err.contains(needle), "{err} lacks {needle}");
        }
        // An empty file imports nothing (the Node version writes one on its first start).
        let usage = parse(b"{}").unwrap();
        let p = plan(&usage, &[], &Marker::default(), &TimeZone::UTC);
        assert!(p.rollups.is_empty());
        assert!(usage.notes.is_empty());
    }
}
