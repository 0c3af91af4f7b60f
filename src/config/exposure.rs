//! The exposure settings of contract §9: inbound limits, allowed browser origins, whether to
//! trust `X-Forwarded-For`, and the weak admin-key rule.

/// Inbound limits (config.json `limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open client connections at most; over it, new ones wait in the listen backlog.
    pub max_connections: u32,
    /// Request bodies held in memory at once across all requests, in MiB.
    pub max_inflight_body_mb: u64,
    /// JSON values one request body may hold (every [`ESCAPES_PER_VALUE`] escape sequences in
    /// its strings count as one more); over it → 400 `too_many_values` before any parsing.
    pub max_json_values: u64,
}

/// Escape sequences in strings (`\n`, `\"`, `\u00e9`, …) that count as one JSON value toward
/// [`Limits::max_json_values`]: each costs the parser and the encoder about an eighth of what a
/// small value costs.
pub const ESCAPES_PER_VALUE: u64 = 8;

/// Bounds of `limits.max_json_values`.
pub const MAX_JSON_VALUES_RANGE: (u64, u64) = (1_000, 100_000_000);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_inflight_body_mb: 1024,
            // The worst accepted 32 MiB body of every translator stays under contract §9's
            // 50 ms at this count (benches/translate_worst.rs), twice what a long agent session
            // sends (tens of thousands).
            max_json_values: 100_000,
        }
    }
}

impl Limits {
    /// [`Limits::max_inflight_body_mb`] in bytes.
    pub fn max_inflight_body_bytes(&self) -> u64 {
        self.max_inflight_body_mb.saturating_mul(1024 * 1024)
    }
}

/// Placeholder admin keys from sample configurations and documentation: never a real key.
pub const PLACEHOLDER_ADMIN_KEYS: [&str; 7] = [
    "your-admin-key-here",
    "your-admin-password-change-me",
    "your-secure-admin-password",
    "changeme",
    "admin",
    "password",
    "123456",
];

/// The shortest usable admin key, in characters.
pub const MIN_ADMIN_KEY_CHARS: usize = 16;

/// Why an `ADMIN_ACCESS_KEY` is too weak to protect the admin API, or `None` when it is usable.
/// The reason never contains the key.
pub fn admin_key_weakness(key: &str) -> Option<String> {
    const FIX: &str = "set ADMIN_ACCESS_KEY to a long random value (for example `openssl rand -hex 24`) and restart";
    if PLACEHOLDER_ADMIN_KEYS
        .iter()
        .any(|p| p.eq_ignore_ascii_case(key))
    {
        return Some(format!(
            "ADMIN_ACCESS_KEY is a well-known placeholder value, so the admin API is disabled: {FIX}"
        ));
    }
    if key.chars().count() < MIN_ADMIN_KEY_CHARS {
        return Some(format!(
            "ADMIN_ACCESS_KEY is shorter than {MIN_ADMIN_KEY_CHARS} characters, so the admin API is disabled: {FIX}"
        ));
    }
    None
}

/// An allowed origin in its canonical form (lowercase, no trailing slash), `*`, or `None` when
/// the value is not an origin (`scheme://host[:port]`, nothing after it).
pub fn normalize_origin(value: &str) -> Option<String> {
    let v = value.trim();
    if v == "*" {
        return Some(v.to_string());
    }
    let v = v.strip_suffix('/').unwrap_or(v).to_ascii_lowercase();
    let (scheme, rest) = v.split_once("://")?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let rest_ok = !rest.is_empty()
        && !rest.starts_with(':')
        && !rest
            .chars()
            .any(|c| matches!(c, '/' | '?' | '#' | '@' | '\\') || c.is_whitespace());
    let port_ok = match rest.rsplit_once(':') {
        // An IPv6 literal's colons sit inside brackets.
        Some((host, port)) if !port.contains(']') => {
            !host.is_empty() && !port.is_empty() && port.parse::<u16>().is_ok()
        }
        _ => true,
    };
    (scheme_ok && rest_ok && port_ok).then_some(v)
}

/// Checks a list of origins (with their index in the list); each bad entry becomes an error
/// naming `field[i]`.
pub(super) fn origins<'a>(
    field: &str,
    values: impl IntoIterator<Item = (usize, &'a str)>,
    errors: &mut Vec<String>,
) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (i, v) in values {
        match normalize_origin(v) {
            Some(o) => {
                if !out.contains(&o) {
                    out.push(o);
                }
            }
            None => {
                ok = false;
                errors.push(format!(
                    "{field}[{i}]: expected an origin such as \"https://app.example.com\" or \"*\", got {v:?}"
                ));
            }
        }
    }
    ok.then_some(out)
}

/// Parses a boolean environment switch (`1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`).
pub(super) fn env_switch(name: &str, value: &str, errors: &mut Vec<String>) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => {
            errors.push(format!("{name}: expected 1 or 0, got {value:?}"));
            None
        }
    }
}
