//! A byte-level pre-scan of a JSON document: counts its values (and the escape sequences in its
//! strings) before any DOM is built, so a request body packed with millions of tiny values is
//! refused for the price of reading a prefix of it (contract §9, `limits.max_json_values`).
//!
//! The scanner does not validate: serde_json does that afterwards, on bodies the scan let
//! through. What it guarantees is a bound: for any input, serde_json builds no more values than
//! [`count_values`] counts (on valid JSON the two counts are equal; on invalid JSON serde stops
//! at the first error, and everything it built before lies in a valid prefix that the scanner
//! read the same way). A value is counted at the byte that starts it:
//!
//! - `{` and `[` (objects and arrays);
//! - a string, unless the next byte that is not whitespace is `:` (then it is an object key);
//! - a scalar: a run of `-`, `+`, `.`, digits and ASCII letters that starts with `-`, a digit,
//!   `t`, `f` or `n` (`-1.5e+3`, `true`, `false`, `null`); anything else is left for serde to
//!   reject.
//!
//! Escape sequences are counted too (one per backslash that starts one, in keys and values):
//! decoding one costs the parser a few nanoseconds, so a 32 MiB string of `\n` is as expensive
//! as a million small values. Callers weigh them ([`Counted::weight`]).
//!
//! Strings are skipped with `memchr2` for `"` and `\`; a backslash skips the byte after it
//! (`\u` escapes need nothing more: hex digits are neither quotes nor backslashes). Dense
//! escapes are stepped over inline rather than through one `memchr2` call each; long runs of
//! digits and of whitespace are skipped 32 bytes at a time.
//!
//! Pure, no allocation; the cost is linear in the bytes read, and the scan stops as soon as the
//! cap is exceeded.

/// What a scan counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counted {
    /// JSON values (objects, arrays, strings that are not keys, scalars).
    pub values: u64,
    /// Escape sequences in strings (keys included).
    pub escapes: u64,
    /// Bytes of whitespace outside strings (what [`strip_whitespace`] would remove).
    pub whitespace: u64,
    /// The deepest nesting of objects and arrays (0 for a scalar).
    pub max_depth: u32,
}

impl Counted {
    /// Values plus one per `escapes_per_value` escape sequences: what the cap bounds.
    pub fn weight(&self, escapes_per_value: u64) -> u64 {
        self.values
            .saturating_add(self.escapes / escapes_per_value.max(1))
    }
}

/// The weight went over the cap: the scan stopped there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("more than {cap} JSON values")]
pub struct TooManyValues {
    pub cap: u64,
}

/// Counts the values and escape sequences of `bytes` (see the module docs), stopping with
/// [`TooManyValues`] as soon as [`Counted::weight`] exceeds `cap`.
pub fn count_values(
    bytes: &[u8],
    cap: u64,
    escapes_per_value: u64,
) -> Result<Counted, TooManyValues> {
    let per = escapes_per_value.max(1);
    let mut c = Counted::default();
    let mut depth = 0u32;
    let over = |c: &Counted| c.weight(per) > cap;
    let mut i = 0;
    let n = bytes.len();
    while i < n {
        match bytes[i] {
            b'{' | b'[' => {
                c.values += 1;
                depth = depth.saturating_add(1);
                c.max_depth = c.max_depth.max(depth);
                i += 1;
            }
            b'"' => {
                // Escapes allowed in this string before the weight exceeds the cap.
                let room = cap
                    .saturating_sub(c.weight(per))
                    .saturating_add(1)
                    .saturating_mul(per)
                    .saturating_sub(c.escapes % per);
                let (end, escapes) = string_end(bytes, i + 1, room);
                c.escapes += escapes;
                let Some(end) = end else {
                    return Err(TooManyValues { cap });
                };
                i = end;
                let after = i;
                while i < n && is_whitespace(bytes[i]) {
                    i += 1;
                }
                c.whitespace += (i - after) as u64;
                if i < n && bytes[i] == b':' {
                    // An object key: not a value.
                    i += 1;
                    if over(&c) {
                        return Err(TooManyValues { cap });
                    }
                    continue;
                }
                c.values += 1;
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                c.values += 1;
                i = skip_digits(bytes, i + 1);
                while i < n && is_scalar_byte(bytes[i]) {
                    i = skip_digits(bytes, i + 1);
                }
            }
            b => {
                let start = i;
                i += 1;
                if b == b'}' || b == b']' {
                    depth = depth.saturating_sub(1);
                    continue;
                }
                if is_whitespace(b) {
                    i = skip_whitespace(bytes, i);
                    while i < n && is_whitespace(bytes[i]) {
                        i += 1;
                    }
                    c.whitespace += (i - start) as u64;
                }
                continue;
            }
        }
        if over(&c) {
            return Err(TooManyValues { cap });
        }
    }
    Ok(c)
}

/// Skips the string whose contents start at `i`: returns the index just past its closing
/// quote (the length of `bytes` when it is never closed) and the escape sequences it holds, or
/// `None` for the index as soon as there are `room` escapes.
fn string_end(bytes: &[u8], mut i: usize, room: u64) -> (Option<usize>, u64) {
    let n = bytes.len();
    let mut escapes = 0u64;
    loop {
        // Step inline until 16 plain bytes in a row: between dense escapes a `memchr2` call
        // costs more than the few bytes it would skip.
        let mut plain = 0;
        while i < n && plain < 16 {
            match bytes[i] {
                b'"' => return (Some(i + 1), escapes),
                b'\\' => {
                    escapes += 1;
                    if escapes >= room {
                        return (None, escapes);
                    }
                    i += 2;
                    plain = 0;
                }
                _ => {
                    i += 1;
                    plain += 1;
                }
            }
        }
        if i >= n {
            return (Some(n), escapes);
        }
        match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
            None => return (Some(n), escapes),
            Some(k) => {
                i += k;
                if bytes[i] == b'"' {
                    return (Some(i + 1), escapes);
                }
                escapes += 1;
                if escapes >= room {
                    return (None, escapes);
                }
                i += 2;
            }
        }
    }
}

/// `bytes` without the whitespace outside its strings, for a parser that reads whitespace a
/// byte at a time (serde_json spends ~3 ns on each: a 32 MiB body of indentation would cost
/// ~100 ms to parse; stripped, it costs a copy). A run of whitespace between two bytes that
/// may belong to numbers or literals becomes one space, so tokens never merge: a valid
/// document keeps its value, an invalid one stays invalid (`[1 2]` is not made `[12]`).
pub fn strip_whitespace(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    strip_until(bytes, &mut out, usize::MAX);
    out
}

/// The index in `bytes` of what is index `stripped` of [`strip_whitespace`]`(bytes)` (to
/// place a parse error in the original body).
pub fn unstripped_index(bytes: &[u8], stripped: usize) -> usize {
    let mut out = Vec::new();
    strip_until(bytes, &mut out, stripped)
}

/// Strips whitespace (see [`strip_whitespace`]) into `out` until it holds `limit` bytes;
/// returns the index in `bytes` reached.
fn strip_until(bytes: &[u8], out: &mut Vec<u8>, limit: usize) -> usize {
    let n = bytes.len();
    let mut i = 0;
    while i < n && out.len() < limit {
        let room = limit - out.len();
        if bytes[i] == b'"' {
            let end = string_end(bytes, i + 1, u64::MAX).0.unwrap_or(n);
            let take = (end - i).min(room);
            out.extend_from_slice(&bytes[i..i + take]);
            i += take;
        } else if is_whitespace(bytes[i]) {
            let start = i;
            i = skip_whitespace(bytes, i + 1);
            while i < n && is_whitespace(bytes[i]) {
                i += 1;
            }
            if start > 0 && i < n && is_scalar_byte(bytes[start - 1]) && is_scalar_byte(bytes[i]) {
                out.push(b' ');
            }
        } else {
            let start = i;
            while i < n && i - start < room && bytes[i] != b'"' && !is_whitespace(bytes[i]) {
                i += 1;
            }
            out.extend_from_slice(&bytes[start..i]);
        }
    }
    i
}

/// Bytes tested at once when skipping runs of digits or whitespace.
const BLOCK: usize = 32;

/// Whether every byte of `block` satisfies `pred` (no early exit: vector compares).
fn all(block: &[u8], pred: impl Fn(u8) -> bool) -> bool {
    let mut ok = true;
    for &b in block {
        ok &= pred(b);
    }
    ok
}

/// Past the run of whitespace at `i`, a block at a time while it lasts (the byte loop of the
/// caller finishes the run).
fn skip_whitespace(bytes: &[u8], mut i: usize) -> usize {
    // Four equality tests joined without short-circuit: vector compares (a `matches!` may
    // become a bit test per byte).
    let ws = |b: u8| (b == b' ') | (b == b'\n') | (b == b'\t') | (b == b'\r');
    while let Some(block) = bytes.get(i..i + BLOCK)
        && all(block, ws)
    {
        i += BLOCK;
    }
    i
}

/// Past the run of ASCII digits at `i`, a block at a time while it lasts (the byte loop of the
/// caller finishes the run).
fn skip_digits(bytes: &[u8], mut i: usize) -> usize {
    while let Some(block) = bytes.get(i..i + BLOCK)
        && all(block, |b| b.is_ascii_digit())
    {
        i += BLOCK;
    }
    i
}

/// JSON whitespace.
fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// A byte that may continue a number or a literal (`true`, `false`, `null`).
fn is_scalar_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.')
}

#[cfg(test)]
mod tests;
