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
//! escapes are stepped over inline rather than through one `memchr2` call each; runs of digits
//! and of whitespace are skipped eight bytes at a time.
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
    let over = |c: &Counted| c.weight(per) > cap;
    let mut i = 0;
    let n = bytes.len();
    while i < n {
        match bytes[i] {
            b'{' | b'[' => {
                c.values += 1;
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
                while i < n && is_whitespace(bytes[i]) {
                    i += 1;
                }
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
                i += 1;
                if is_whitespace(b) {
                    i = skip_whitespace(bytes, i);
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

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The eight bytes at `i`, little-endian (`None` near the end).
fn word(bytes: &[u8], i: usize) -> Option<u64> {
    let chunk: [u8; 8] = bytes.get(i..i.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(chunk))
}

/// The high bit of each byte of `x` that equals `c` (exact: no carries between bytes).
fn eq_bytes(x: u64, c: u8) -> u64 {
    let y = x ^ (ONES * u64::from(c));
    !(((y & !HIGH).wrapping_add(!HIGH)) | y) & HIGH
}

/// Past the run of whitespace at `i`, eight bytes at a time while it lasts.
fn skip_whitespace(bytes: &[u8], mut i: usize) -> usize {
    while let Some(x) = word(bytes, i) {
        let ws = eq_bytes(x, b' ') | eq_bytes(x, b'\n') | eq_bytes(x, b'\r') | eq_bytes(x, b'\t');
        if ws != HIGH {
            break;
        }
        i += 8;
    }
    i
}

/// Past the run of ASCII digits at `i`, eight bytes at a time while it lasts (the byte loop of
/// the caller finishes the run).
fn skip_digits(bytes: &[u8], mut i: usize) -> usize {
    const NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const THREES: u64 = 0x3030_3030_3030_3030;
    while let Some(x) = word(bytes, i) {
        // Every byte is 0x30..=0x3F, and stays in 0x30..=0x3F after adding 6: '0'..='9'.
        let all_digits = x & NIBBLES == THREES && x.wrapping_add(ONES * 6) & NIBBLES == THREES;
        if !all_digits {
            break;
        }
        i += 8;
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
