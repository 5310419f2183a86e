//! Stored values (docs/XIAN.md §2) and their canonical bytes (§3.2), which
//! are what the state root hashes.
//!
//! Xian hashes `encode_abci_json(decode(stored))`: Python's `json.loads` with
//! an `object_hook` that turns tagged objects into Python types, then
//! `json.dumps(separators=(",", ":"))` (ASCII-only) after turning decimals,
//! date-times and bytes into strings and sorting object keys. Any difference
//! is a different app hash, so this module follows that code, quirks included:
//!
//! * An object is tagged when it *contains* a tag key; its other keys are
//!   dropped. Tags are tried in Xian's order: `__time__`, `__delta__`,
//!   `__set__`, `__frozenset__`, `__bytes__`, `__bytearray__`, `__fixed__`,
//!   `__big_int__`. Deltas, sets and bytearrays have no canonical form.
//! * JSON integers are exact (Python ints); other numbers are doubles written
//!   as `repr(float)` writes them (`1e5` → `100000.0`, `1e400` → `Infinity`).
//!   Python's `NaN`/`Infinity` literals and lone `\uD800`-style escapes are
//!   read, and a repeated object key keeps its last value.
//! * `__fixed__` text goes through Xian's `neg_sci_not` rewrite (which gives
//!   `"1.5e-0"` → `15`), Python's `Decimal` grammar and `fix_precision`: at
//!   most 30 fractional digits (cut toward zero) and 61 integer digits.
//!
//! Where Xian's code raises, this returns an error: such a state has no app
//! hash. The known gap the other way round: Python also reads non-ASCII
//! decimal digits inside tag payloads (`{"__big_int__":"١٢"}`); those are
//! rejected here, so they fail loudly rather than hash differently.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Deepest nesting read. Python's recursion limit (1000 frames) stops Xian
/// before this, so nothing Xian can hash is refused for depth.
const MAX_DEPTH: usize = 1000;
/// Python (3.11+) refuses to convert longer integers from or to text.
const MAX_INT_DIGITS: usize = 4300;
/// Xian's decimal type: fractional digits kept, integer digits allowed.
const FRAC_DIGITS: i64 = 30;
const INT_DIGITS: i64 = 61;
/// Python's decimal module refuses exponents beyond this.
const MAX_EXPONENT: i64 = 999_999_999_999_999_999;

/// Tag keys in the order Xian's `as_object` tries them.
const TAGS: [&str; 8] = [
    "__time__",
    "__delta__",
    "__set__",
    "__frozenset__",
    "__bytes__",
    "__bytearray__",
    "__fixed__",
    "__big_int__",
];

/// A stored value that has no canonical form. `path` fields locate the
/// offending part: `$` is the whole value, then `[0]` / `["key"]` steps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not JSON as Python's `json.loads` reads it.
    #[error("stored value is not valid JSON: {reason} at byte {offset}")]
    Json { offset: usize, reason: &'static str },
    /// Nested deeper than any value Xian can decode.
    #[error("stored value nests arrays/objects more than {MAX_DEPTH} deep (at byte {offset})")]
    TooDeep { offset: usize },
    /// A part that Xian's decoder rejects, e.g. a `__fixed__` that is no decimal.
    #[error("invalid {what} at ${path}: {problem}")]
    Invalid {
        path: String,
        what: &'static str,
        problem: String,
    },
    /// A tagged type Xian's root encoder cannot write (`__delta__`, sets,
    /// bytearrays): Xian's own root computation fails on such a state.
    #[error(
        "{tag} ({}) at ${path} has no canonical form: Xian's state root cannot encode it, so such a state has no state root",
        tag_meaning(tag)
    )]
    NoCanonicalForm { path: String, tag: &'static str },
}

fn tag_meaning(tag: &str) -> &'static str {
    match tag {
        "__delta__" => "a time delta",
        "__set__" => "a set",
        "__frozenset__" => "a frozen set",
        "__bytearray__" => "a bytearray",
        _ => "a tagged value",
    }
}

impl ValueError {
    fn invalid(what: &'static str, problem: String) -> Self {
        ValueError::Invalid {
            path: String::new(),
            what,
            problem,
        }
    }

    /// Prefixes the step from a parent to the failing part, as the error
    /// travels up (errors are rare, so building the path late is cheap).
    fn under(mut self, step: impl FnOnce() -> String) -> Self {
        if let ValueError::Invalid { path, .. } | ValueError::NoCanonicalForm { path, .. } = &mut self {
            path.insert_str(0, &step());
        }
        self
    }
}

/// Whether a stored JSON text is null (what [`canonical_bytes`] answers
/// `Ok(None)` for), without parsing it: JSON allows only whitespace around a
/// bare `null`.
pub fn is_null(stored: &str) -> bool {
    stored.trim_matches([' ', '\t', '\n', '\r']) == "null"
}

/// Canonical value bytes (docs/XIAN.md §3.2) of a stored JSON text; `Ok(None)`
/// when the value is JSON null (such keys are left out of the root).
pub fn canonical_bytes(stored: &str) -> Result<Option<Vec<u8>>, ValueError> {
    let mut p = Parser {
        s: stored.as_bytes(),
        pos: 0,
        depth: 0,
    };
    p.ws();
    let value = p.value()?;
    p.ws();
    if p.pos != p.s.len() {
        return Err(p.err("extra data after the value"));
    }
    if matches!(value, Val::Null) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(stored.len());
    write_value(&value, &mut out)?;
    Ok(Some(out))
}

/// A value as Python holds it after `json.loads(stored, object_hook=as_object)`.
enum Val {
    Null,
    Bool(bool),
    /// A Python int, as its exact decimal text.
    Int(String),
    Float(f64),
    /// A Python str in generalised UTF-8: lone surrogates (which Python strings
    /// can hold) are encoded like any code point, so bytewise order is still
    /// code-point order, Python's string order.
    Str(Vec<u8>),
    List(Vec<Val>),
    /// Keys sorted and unique.
    Dict(Vec<(Vec<u8>, Val)>),
    /// A decoded `__fixed__`, as the plain decimal text the root writes.
    Decimal(String),
    /// A decoded `__time__` or `__bytes__`, as the text the root writes.
    Text(String),
    /// A decoded delta, set or bytearray: fine to hold, impossible to hash.
    NoForm(&'static str),
}

fn kind(v: &Val) -> &'static str {
    match v {
        Val::Null => "null",
        Val::Bool(_) => "a boolean",
        Val::Int(_) => "an integer",
        Val::Float(_) => "a float",
        Val::Str(_) => "a string",
        Val::List(_) => "an array",
        Val::Dict(_) => "an object",
        Val::Decimal(_) => "a __fixed__",
        Val::Text(_) => "a __time__ or __bytes__",
        Val::NoForm(_) => "a value without canonical form",
    }
}

// ---------------------------------------------------------------------------
// Reading: Python's json scanner.

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn err(&self, reason: &'static str) -> ValueError {
        ValueError::Json {
            offset: self.pos,
            reason,
        }
    }

    fn ws(&mut self) {
        while matches!(self.s.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        let hit = self.s[self.pos..].starts_with(lit.as_bytes());
        if hit {
            self.pos += lit.len();
        }
        hit
    }

    fn peek_digit(&self) -> bool {
        self.s.get(self.pos).is_some_and(u8::is_ascii_digit)
    }

    fn value(&mut self) -> Result<Val, ValueError> {
        match self.s.get(self.pos) {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => Ok(Val::Str(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ if self.eat("null") => Ok(Val::Null),
            _ if self.eat("true") => Ok(Val::Bool(true)),
            _ if self.eat("false") => Ok(Val::Bool(false)),
            _ if self.eat("NaN") => Ok(Val::Float(f64::NAN)),
            _ if self.eat("Infinity") => Ok(Val::Float(f64::INFINITY)),
            _ => Err(self.err("expected a value")),
        }
    }

    fn number(&mut self) -> Result<Val, ValueError> {
        if self.eat("-Infinity") {
            return Ok(Val::Float(f64::NEG_INFINITY));
        }
        let start = self.pos;
        let neg = self.eat("-");
        let int_start = self.pos;
        match self.s.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("expected a value")),
        }
        let int_end = self.pos;
        let mut float = false;
        if self.s.get(self.pos) == Some(&b'.') && self.s.get(self.pos + 1).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
            self.digits();
            float = true;
        }
        if matches!(self.s.get(self.pos), Some(b'e' | b'E')) {
            // Like Python's scanner: an exponent without digits is not part of
            // the number (and then fails as extra data).
            let save = self.pos;
            self.pos += 1;
            if matches!(self.s.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.peek_digit() {
                self.digits();
                float = true;
            } else {
                self.pos = save;
            }
        }
        let ascii = |a: usize, b: usize| std::str::from_utf8(&self.s[a..b]).expect("ASCII digits");
        if float {
            // JSON's number syntax is a subset of Rust's float syntax, and both
            // round correctly, as Python's float() does.
            return Ok(Val::Float(ascii(start, self.pos).parse().expect("float syntax")));
        }
        let digits = ascii(int_start, int_end);
        if digits.len() > MAX_INT_DIGITS {
            return Err(ValueError::invalid("integer", too_many_digits(digits.len())));
        }
        Ok(Val::Int(int_text(neg, digits)))
    }

    fn digits(&mut self) {
        while self.peek_digit() {
            self.pos += 1;
        }
    }

    /// A JSON string (the cursor is on its opening quote), decoded.
    fn string(&mut self) -> Result<Vec<u8>, ValueError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let run = self.pos;
            while let Some(&b) = self.s.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.extend_from_slice(&self.s[run..self.pos]);
            match self.s.get(self.pos) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let escape = self.s.get(self.pos + 1).copied();
                    self.pos += 2;
                    match escape {
                        Some(b'"') => out.push(b'"'),
                        Some(b'\\') => out.push(b'\\'),
                        Some(b'/') => out.push(b'/'),
                        Some(b'b') => out.push(0x08),
                        Some(b'f') => out.push(0x0c),
                        Some(b'n') => out.push(b'\n'),
                        Some(b'r') => out.push(b'\r'),
                        Some(b't') => out.push(b'\t'),
                        Some(b'u') => {
                            let mut cp = self.hex4()?;
                            // A high surrogate pairs with an immediately following
                            // low one; otherwise it stays a lone surrogate.
                            if (0xD800..0xDC00).contains(&cp) && self.s[self.pos..].starts_with(b"\\u") {
                                let save = self.pos;
                                self.pos += 2;
                                let low = self.hex4()?;
                                if (0xDC00..0xE000).contains(&low) {
                                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                                } else {
                                    self.pos = save;
                                }
                            }
                            push_code_point(&mut out, cp);
                        }
                        _ => {
                            self.pos -= 2;
                            return Err(self.err("invalid escape in string"));
                        }
                    }
                }
                Some(_) => return Err(self.err("control character in string")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, ValueError> {
        let text = self
            .s
            .get(self.pos..self.pos + 4)
            .and_then(|h| std::str::from_utf8(h).ok());
        match text.filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit())) {
            Some(h) => {
                self.pos += 4;
                Ok(u32::from_str_radix(h, 16).expect("hex digits"))
            }
            None => Err(self.err("invalid \\uXXXX escape")),
        }
    }

    fn enter(&mut self) -> Result<(), ValueError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ValueError::TooDeep { offset: self.pos });
        }
        self.pos += 1;
        self.ws();
        Ok(())
    }

    fn array(&mut self) -> Result<Val, ValueError> {
        self.enter()?;
        let mut items = Vec::new();
        if !self.eat("]") {
            loop {
                self.ws();
                let i = items.len();
                items.push(self.value().map_err(|e| e.under(|| format!("[{i}]")))?);
                self.ws();
                if self.eat("]") {
                    break;
                }
                if !self.eat(",") {
                    return Err(self.err("expected ',' or ']'"));
                }
            }
        }
        self.depth -= 1;
        Ok(Val::List(items))
    }

    fn object(&mut self) -> Result<Val, ValueError> {
        self.enter()?;
        let mut pairs: Vec<(Vec<u8>, Val)> = Vec::new();
        if !self.eat("}") {
            loop {
                self.ws();
                if self.s.get(self.pos) != Some(&b'"') {
                    return Err(self.err("expected a string key"));
                }
                let key = self.string()?;
                self.ws();
                if !self.eat(":") {
                    return Err(self.err("expected ':'"));
                }
                self.ws();
                let value = self.value().map_err(|e| e.under(|| key_step(&key)))?;
                pairs.push((key, value));
                self.ws();
                if self.eat("}") {
                    break;
                }
                if !self.eat(",") {
                    return Err(self.err("expected ',' or '}'"));
                }
            }
        }
        self.depth -= 1;
        // A Python dict: sorted here for the encoder; the last duplicate wins
        // (the sort is stable, so it is the last of each run).
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut map: Vec<(Vec<u8>, Val)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match map.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => map.push(pair),
            }
        }
        as_object(map)
    }
}

fn key_step(key: &[u8]) -> String {
    format!("[{:?}]", String::from_utf8_lossy(key))
}

/// Appends a code point as UTF-8, a lone surrogate in UTF-8's 3-byte pattern.
fn push_code_point(out: &mut Vec<u8>, cp: u32) {
    match char::from_u32(cp) {
        Some(c) => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        None => out.extend_from_slice(&[
            0xE0 | (cp >> 12) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]),
    }
}

/// Decodes what `push_code_point` and the input (valid UTF-8) produce.
fn code_points(s: &[u8]) -> impl Iterator<Item = u32> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let b0 = u32::from(*s.get(i)?);
        let (len, init) = match b0 {
            0x00..=0x7F => (1, b0),
            0xC0..=0xDF => (2, b0 & 0x1F),
            0xE0..=0xEF => (3, b0 & 0x0F),
            _ => (4, b0 & 0x07),
        };
        let cp = s[i + 1..i + len]
            .iter()
            .fold(init, |cp, &b| (cp << 6) | u32::from(b & 0x3F));
        i += len;
        Some(cp)
    })
}

// ---------------------------------------------------------------------------
// Tags: Xian's `as_object` hook.

fn as_object(mut map: Vec<(Vec<u8>, Val)>) -> Result<Val, ValueError> {
    for tag in TAGS {
        if let Ok(i) = map.binary_search_by(|(k, _)| k.as_slice().cmp(tag.as_bytes())) {
            let payload = map.swap_remove(i).1;
            let decoded = match tag {
                "__time__" => time(&payload).map(Val::Text),
                "__bytes__" => bytes(&payload).map(Val::Text),
                "__fixed__" => fixed(&payload).map(Val::Decimal),
                "__big_int__" => big_int(&payload).map(Val::Int),
                _ => Ok(Val::NoForm(tag)),
            };
            return decoded.map_err(|problem| ValueError::invalid(tag, problem));
        }
    }
    Ok(Val::Dict(map))
}

/// A payload's text for error messages, cut short.
fn show(s: &str) -> String {
    if s.chars().count() <= 80 {
        format!("{s:?}")
    } else {
        format!("{:?}…", s.chars().take(80).collect::<String>())
    }
}

fn too_many_digits(n: usize) -> String {
    format!("{n} digits, more than the {MAX_INT_DIGITS} Python converts to or from text")
}

fn payload_text<'a>(v: &'a Val, needs: &str) -> Result<&'a str, String> {
    match v {
        Val::Str(b) => std::str::from_utf8(b).map_err(|_| "a string with a lone surrogate".to_string()),
        other => Err(format!("needs {needs}, found {}", kind(other))),
    }
}

/// `ContractingDecimal(payload)`, written as `_decimal_to_plain_string` does.
fn fixed(v: &Val) -> Result<String, String> {
    let text: Cow<str> = match v {
        Val::Int(s) => Cow::Borrowed(s),
        Val::Float(f) => Cow::Owned(python_float_repr(*f)), // str(float); inf/nan fail below either way
        other => Cow::Borrowed(payload_text(other, "a string or number")?),
    };
    let (neg, digits, exp) = python_decimal(&neg_sci_not(&text)).map_err(|why| format!("{} {why}", show(&text)))?;
    plain_decimal(neg, &digits, exp).ok_or_else(|| {
        format!(
            "{} has more than {INT_DIGITS} integer digits, which Xian's decimal type does not hold",
            show(&text)
        )
    })
}

/// Xian's `neg_sci_not`, a string rewrite meant for `"1.5e-7"` that Xian runs
/// before `Decimal()`. Reproduced as is: `"1.5e-0"` becomes `"15"`, and
/// `"-1e-3"` becomes the invalid `"0.00-1"`.
fn neg_sci_not(s: &str) -> Cow<'_, str> {
    let mut parts = s.split("e-");
    let (Some(base), Some(exp), None) = (parts.next(), parts.next(), parts.next()) else {
        return Cow::Borrowed(s);
    };
    match python_float(base) {
        Some(f) if f > 9.0 => return Cow::Borrowed(s),
        None => return Cow::Borrowed(s),
        _ => {}
    }
    let Some(exp) = python_int(exp).ok().map(|e| {
        e.parse::<i64>()
            .unwrap_or(if e.starts_with('-') { i64::MIN } else { i64::MAX })
    }) else {
        return Cow::Borrowed(s);
    };
    // Past 64 zeros the value is below 10^-30 (0 after `fix_precision`) however
    // many there are, so capping them changes nothing but memory.
    let zeros = "0".repeat(exp.saturating_sub(1).clamp(0, 64) as usize);
    let numbers = zeros + &base.replace('.', "");
    Cow::Owned(if exp > 0 { format!("0.{numbers}") } else { numbers })
}

/// Python's `str.isspace()`.
fn py_isspace(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r' | '\x1c'..='\x20' | '\u{85}' | '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}'
            | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

/// Text as `float()` and `int()` read it: non-ASCII whitespace counts as a
/// space, then ASCII whitespace is stripped. `None` for other non-ASCII.
fn int_float_text(s: &str) -> Option<String> {
    let mapped: Option<String> = s
        .chars()
        .map(|c| match c {
            _ if c.is_ascii() => Some(c),
            _ if py_isspace(c) => Some(' '),
            _ => None,
        })
        .collect();
    Some(
        mapped?
            .trim_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r'])
            .to_string(),
    )
}

/// Whether every `_` sits between two digits (Python's numeric literal rule).
fn underscores_ok(s: &str) -> bool {
    let b = s.as_bytes();
    (0..b.len())
        .all(|i| b[i] != b'_' || (i > 0 && b[i - 1].is_ascii_digit() && b.get(i + 1).is_some_and(u8::is_ascii_digit)))
}

/// Python's `float(s)`, or `None` where it raises.
fn python_float(s: &str) -> Option<f64> {
    let t = int_float_text(s)?;
    if !underscores_ok(&t) {
        return None;
    }
    // Rust's float syntax matches Python's here: sign, "1.", ".5", exponents,
    // and case-insensitive inf / infinity / nan.
    t.replace('_', "").parse().ok()
}

/// Python's `int(s)` (base 10) as exact decimal text.
fn python_int(s: &str) -> Result<String, String> {
    let t = int_float_text(s).unwrap_or_default();
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, &t[..]),
    };
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit() || b == b'_') || !underscores_ok(body) {
        return Err(format!("{} is not an integer", show(s)));
    }
    let digits = body.replace('_', "");
    if digits.len() > MAX_INT_DIGITS {
        return Err(too_many_digits(digits.len()));
    }
    Ok(int_text(neg, &digits))
}

/// Sign and digits as Python prints the int: no leading zeros, no `-0`.
fn int_text(neg: bool, digits: &str) -> String {
    let digits = digits.trim_start_matches('0');
    match (digits.is_empty(), neg) {
        (true, _) => "0".to_string(),
        (false, true) => format!("-{digits}"),
        (false, false) => digits.to_string(),
    }
}

/// Python's `Decimal(s)` for finite values: `(negative, digits, exponent)`
/// meaning ±digits × 10^exponent.
fn python_decimal(s: &str) -> Result<(bool, String, i64), &'static str> {
    const NOT_DECIMAL: &str = "is not a decimal number";
    // Decimal() drops every underscore and strips Python whitespace.
    let mapped: Option<String> = s
        .chars()
        .filter(|&c| c != '_')
        .map(|c| match c {
            _ if py_isspace(c) => Some(' '),
            _ if c.is_ascii() => Some(c),
            _ => None,
        })
        .collect();
    let mapped = mapped.ok_or(NOT_DECIMAL)?;
    let t = mapped.trim_matches(' ');
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = body.to_ascii_lowercase();
    if lower == "inf" || lower == "infinity" || lower.starts_with("nan") || lower.starts_with("snan") {
        return Err("is not a finite number (Xian's decimals cannot be NaN or Infinity)");
    }
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty()) || !all_digits(int_part) || !all_digits(frac_part) {
        return Err(NOT_DECIMAL);
    }
    let exp = match exp {
        None => 0,
        Some(e) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !all_digits(digits) {
                return Err(NOT_DECIMAL);
            }
            let magnitude = digits
                .parse::<i64>()
                .ok()
                .filter(|m| *m <= MAX_EXPONENT)
                .ok_or("has an exponent beyond Python's decimal range")?;
            if e.starts_with('-') {
                -magnitude
            } else {
                magnitude
            }
        }
    };
    Ok((neg, format!("{int_part}{frac_part}"), exp - frac_part.len() as i64))
}

/// `fix_precision` then `format(d, "f")` with trailing zeros cut: the plain
/// decimal, or `None` past 61 integer digits.
fn plain_decimal(neg: bool, digits: &str, exp: i64) -> Option<String> {
    let digits = digits.trim_start_matches('0');
    let n = digits.len() as i64;
    let point = n + exp; // digits before the decimal point
    if point > INT_DIGITS {
        return None;
    }
    let keep = (point + FRAC_DIGITS).clamp(0, n) as usize; // cut toward zero
    if keep == 0 {
        return Some("0".into());
    }
    let (int_part, frac_part) = if point <= 0 {
        ("0".to_string(), "0".repeat(-point as usize) + &digits[..keep])
    } else if point >= n {
        (digits.to_string() + &"0".repeat((point - n) as usize), String::new())
    } else {
        (
            digits[..point as usize].to_string(),
            digits[point as usize..keep].to_string(),
        )
    };
    let frac_part = frac_part.trim_end_matches('0');
    let mut out = String::with_capacity(int_part.len() + frac_part.len() + 2);
    if neg {
        out.push('-');
    }
    out.push_str(&int_part);
    if !frac_part.is_empty() {
        out.push('.');
        out.push_str(frac_part);
    }
    Some(out)
}

/// `int(payload)`.
fn big_int(v: &Val) -> Result<String, String> {
    match v {
        Val::Int(s) => Ok(s.clone()),
        Val::Bool(b) => Ok(u8::from(*b).to_string()),
        // int() of a float or decimal truncates toward zero.
        Val::Float(f) if f.is_finite() && f.abs() < 1e38 => Ok((f.trunc() as i128).to_string()),
        Val::Decimal(d) => {
            let int_part = d.split('.').next().unwrap_or("0");
            Ok(int_text(int_part.starts_with('-'), int_part.trim_start_matches('-')))
        }
        other => python_int(payload_text(other, "a string or integer")?),
    }
}

/// `Datetime(*payload)`, written as `str(datetime)`.
fn time(v: &Val) -> Result<String, String> {
    let Val::List(items) = v else {
        return Err(format!(
            "needs [year, month, day(, hour, minute, second, microsecond)], found {}",
            kind(v)
        ));
    };
    if !(3..=7).contains(&items.len()) {
        return Err(format!("needs 3 to 7 numbers, found {}", items.len()));
    }
    let mut n = [0i64; 7];
    for (slot, item) in n.iter_mut().zip(items) {
        *slot = match item {
            Val::Int(s) => s.parse().map_err(|_| format!("{s} is out of range"))?,
            Val::Bool(b) => i64::from(*b), // Python's bool is an int
            other => return Err(format!("needs integers, found {}", kind(other))),
        };
    }
    let [y, mo, d, h, mi, s, us] = n;
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => 0,
    };
    let valid = (1..=9999).contains(&y)
        && (1..=month_days).contains(&d)
        && (0..24).contains(&h)
        && (0..60).contains(&mi)
        && (0..60).contains(&s)
        && (0..1_000_000).contains(&us);
    if !valid {
        return Err(format!("{n:?} is not a valid date-time"));
    }
    let mut out = format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}");
    if us != 0 {
        let _ = write!(out, ".{us:06}");
    }
    Ok(out)
}

/// `bytes.fromhex(payload)`, written as UTF-8 text or, failing that, as
/// Python's `str(bytes)` (`b'\xff'`), which is what Xian's encoder does.
fn bytes(v: &Val) -> Result<String, String> {
    let hex_text = payload_text(v, "a hex string")?;
    let bad = || {
        format!(
            "{} is not hex (pairs of hex digits, whitespace between pairs)",
            show(hex_text)
        )
    };
    let b = hex_text.as_bytes();
    let (mut raw, mut i) = (Vec::with_capacity(b.len() / 2), 0);
    loop {
        while b
            .get(i)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r'))
        {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let pair = b.get(i..i + 2).and_then(|p| std::str::from_utf8(p).ok());
        let byte = pair.and_then(|p| u8::from_str_radix(p, 16).ok().filter(|_| !p.starts_with('+')));
        raw.push(byte.ok_or_else(bad)?);
        i += 2;
    }
    Ok(String::from_utf8(raw).unwrap_or_else(|e| python_bytes_repr(e.as_bytes())))
}

/// Python's `repr(bytes)`.
fn python_bytes_repr(b: &[u8]) -> String {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    let mut out = String::from("b");
    out.push(quote as char);
    for &c in b {
        match c {
            b'\\' => out.push_str("\\\\"),
            _ if c == quote => {
                out.push('\\');
                out.push(c as char);
            }
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            0x20..=0x7e => out.push(c as char),
            _ => {
                let _ = write!(out, "\\x{c:02x}");
            }
        }
    }
    out.push(quote as char);
    out
}

// ---------------------------------------------------------------------------
// Writing: Python's json.dumps(separators=(",", ":"), ensure_ascii=True).

fn write_value(v: &Val, out: &mut Vec<u8>) -> Result<(), ValueError> {
    match v {
        Val::Null => out.extend_from_slice(b"null"),
        Val::Bool(true) => out.extend_from_slice(b"true"),
        Val::Bool(false) => out.extend_from_slice(b"false"),
        Val::Int(s) => out.extend_from_slice(s.as_bytes()),
        Val::Float(f) => out.extend_from_slice(python_float_repr(*f).as_bytes()),
        Val::Str(s) => write_string(s, out),
        Val::Decimal(s) | Val::Text(s) => write_string(s.as_bytes(), out),
        Val::List(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out).map_err(|e| e.under(|| format!("[{i}]")))?;
            }
            out.push(b']');
        }
        Val::Dict(map) => {
            out.push(b'{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_value(item, out).map_err(|e| e.under(|| key_step(k)))?;
            }
            out.push(b'}');
        }
        Val::NoForm(tag) => {
            return Err(ValueError::NoCanonicalForm {
                path: String::new(),
                tag,
            })
        }
    }
    Ok(())
}

/// A JSON string, ASCII-only: short escapes where JSON has them, `\u00e9`
/// (lowercase) for the rest outside 0x20–0x7E, surrogate pairs beyond the BMP.
fn write_string(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for cp in code_points(s) {
        match cp {
            0x22 => out.extend_from_slice(b"\\\""),
            0x5C => out.extend_from_slice(b"\\\\"),
            0x0A => out.extend_from_slice(b"\\n"),
            0x0D => out.extend_from_slice(b"\\r"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0C => out.extend_from_slice(b"\\f"),
            0x20..=0x7E => out.push(cp as u8),
            0..=0xFFFF => push_u_escape(cp, out),
            _ => {
                let v = cp - 0x10000;
                push_u_escape(0xD800 | (v >> 10), out);
                push_u_escape(0xDC00 | (v & 0x3FF), out);
            }
        }
    }
    out.push(b'"');
}

fn push_u_escape(unit: u32, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\u");
    out.extend((0..4).rev().map(|i| HEX[((unit >> (4 * i)) & 0xF) as usize]));
}

/// Python's `repr(float)` as `json.dumps` writes it: the shortest digits that
/// round-trip, positional for decimal exponents in [-4, 16), else `d.ddde+XX`;
/// `NaN`, `Infinity`, `-Infinity` for the non-finite.
fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0.0");
    }
    // Rust's `{:e}` also gives the shortest round-trip digits: "1.2345e-7".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("integer exponent");
    let digits = mantissa.replace('.', "");
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat(-point as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
        };
        format!("{sign}{body}")
    } else {
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        String::from_utf8(canonical_bytes(s).unwrap().unwrap()).unwrap()
    }

    fn err(s: &str) -> String {
        canonical_bytes(s).unwrap_err().to_string()
    }

    #[test]
    fn is_null_agrees_with_the_parser() {
        for s in [
            "null",
            " null\n",
            "\t\r null ",
            "nul",
            "null x",
            "\"null\"",
            "[null]",
            "0",
            "",
            "nulll",
            "\u{a0}null",
        ] {
            let parsed = matches!(canonical_bytes(s), Ok(None));
            assert_eq!(is_null(s), parsed, "{s:?}");
        }
    }

    /// Expected outputs computed with Python 3.11 from Xian's code
    /// (`encode_abci_json(decode(stored))`).
    #[test]
    fn fixed_like_xian() {
        for (payload, want) in [
            ("12.50", "12.5"),
            ("-0", "0"),
            ("-0.000", "0"),
            ("5.", "5"),
            (".5", "0.5"),
            ("+7", "7"),
            ("00012.000", "12"),
            ("9.5603316151E+11", "956033161510"),
            ("1E-7", "0.0000001"),
            ("1e-3", "0.001"),
            ("1.5e-7", "0.00000015"),
            ("-1.25E1", "-12.5"),
            // Xian's neg_sci_not rewrite, quirks included.
            ("1.5e-0", "15"),
            ("00.5e-2", "0.0005"),
            ("1e0e-3", "0.001"),
            ("1.5e-3 ", "0.0015"),
            ("1_5e-1_0", "0.0000000015"),
            ("1e-99999", "0"),
            // Decimal() drops underscores and strips Python whitespace.
            ("_1_", "1"),
            ("1_._5", "1.5"),
            ("\u{3000}1.5\u{2000}", "1.5"),
            ("\x1c1", "1"),
            // 30 fractional digits, cut toward zero; 61 integer digits.
            ("0.1234567890123456789012345678909", "0.123456789012345678901234567890"),
            ("-0.0000000000000000000000000000009", "0"),
            (
                "-0.0000000000000000000000000000019",
                "-0.000000000000000000000000000001",
            ),
            ("1e60", "1000000000000000000000000000000000000000000000000000000000000"),
        ] {
            let want = match want.contains('.') {
                true => want.trim_end_matches('0').trim_end_matches('.'),
                false => want,
            };
            let want = if want.is_empty() || want == "-" { "0" } else { want };
            let stored = format!("{{\"__fixed__\":{payload:?}}}").replace("\\u{3000}", "\u{3000}");
            let stored = stored.replace("\\u{2000}", "\u{2000}").replace("\\u{1c}", "\\u001c");
            assert_eq!(canon(&stored), format!("\"{want}\""), "{payload:?}");
        }
        assert_eq!(canon(r#"{"__fixed__":12}"#), r#""12""#);
        assert_eq!(canon(r#"{"__fixed__":1e-05}"#), r#""0.00001""#);
        for bad in [
            "", "NaN", "Infinity", "-inf", "sNaN", "1.2.3", "1 .5", " 1.5e-3", "-1e-3", "1e61", "abc", "1\u{0}2", "١٢",
        ] {
            let stored = format!("{{\"__fixed__\":{}}}", serde_json::to_string(bad).unwrap());
            let e = err(&stored);
            assert!(e.starts_with("invalid __fixed__ at $: "), "{bad:?}: {e}");
        }
        assert!(err(&format!("{{\"__fixed__\":\"{}\"}}", "9".repeat(62))).contains("more than 61 integer digits"));
        assert!(err(r#"{"__fixed__":"NaN"}"#).contains("NaN or Infinity"));
        assert!(err(r#"{"__fixed__":true}"#).contains("needs a string or number"));
    }

    #[test]
    fn tags_like_xian() {
        assert_eq!(canon(r#"{"__big_int__":"-000123"}"#), "-123");
        assert_eq!(canon(r#"{"__big_int__":" 1_000 "}"#), "1000");
        assert_eq!(canon(r#"{"__big_int__":7}"#), "7");
        assert_eq!(canon(r#"{"__big_int__":{"__fixed__":"-5.9"}}"#), "-5");
        assert_eq!(canon(r#"{"__time__":[2024,1,2,3,4,5]}"#), r#""2024-01-02 03:04:05""#);
        assert_eq!(
            canon(r#"{"__time__":[2024,1,2,3,4,5,7]}"#),
            r#""2024-01-02 03:04:05.000007""#
        );
        assert_eq!(canon(r#"{"__time__":[2024,1,2,3,4,5,0]}"#), r#""2024-01-02 03:04:05""#);
        assert_eq!(canon(r#"{"__time__":[24,2,29]}"#), r#""0024-02-29 00:00:00""#);
        assert_eq!(canon(r#"{"__bytes__":"6869"}"#), r#""hi""#);
        assert_eq!(canon(r#"{"__bytes__":" 68\t69 "}"#), r#""hi""#);
        assert_eq!(canon(r#"{"__bytes__":"c3a9"}"#), r#""\u00e9""#);
        // Not UTF-8: Xian writes Python's repr of the bytes.
        assert_eq!(canon(r#"{"__bytes__":"ff27"}"#), r#""b\"\\xff'\"""#);
        assert_eq!(canon(r#"{"__bytes__":"ff0a5c"}"#), r#""b'\\xff\\n\\\\'""#);
        // A tag key anywhere in an object makes it tagged; the rest is dropped.
        assert_eq!(canon(r#"{"__fixed__":"1","x":2}"#), r#""1""#);
        assert_eq!(
            canon(r#"{"__fixed__":"1.5","__time__":[2000,1,1]}"#),
            r#""2000-01-01 00:00:00""#
        );
        assert_eq!(canon(r#"{"__fixed__":"1","x":{"__delta__":[1,2]}}"#), r#""1""#);
        // A key that merely looks like a tag is a plain key.
        assert_eq!(canon(r#"{"__fixed":"1","__x__":2}"#), r#"{"__fixed":"1","__x__":2}"#);
        // Escaped tag keys are tag keys.
        assert_eq!(canon(r#"{"\u005f_fixed__":"2.0"}"#), r#""2""#);
    }

    #[test]
    fn bad_tags_say_where_and_why() {
        assert_eq!(
            err(r#"{"a":[1,{"__delta__":[1,2]}]}"#),
            "__delta__ (a time delta) at $[\"a\"][1] has no canonical form: Xian's state root cannot encode it, so such a state has no state root"
        );
        assert_eq!(
            canonical_bytes(r#"{"__delta__":[1,0]}"#).unwrap_err(),
            ValueError::NoCanonicalForm {
                path: String::new(),
                tag: "__delta__"
            }
        );
        for tag in ["__set__", "__frozenset__", "__bytearray__"] {
            assert!(matches!(
                canonical_bytes(&format!("{{\"{tag}\":[]}}")),
                Err(ValueError::NoCanonicalForm { .. })
            ));
        }
        assert_eq!(
            err(r#"[{"b":{"__fixed__":"x"}}]"#),
            r#"invalid __fixed__ at $[0]["b"]: "x" is not a decimal number"#
        );
        assert!(err(r#"{"__time__":[2023,2,29,0,0,0]}"#).contains("not a valid date-time"));
        assert!(err(r#"{"__time__":[2023,2]}"#).contains("3 to 7"));
        assert!(err(r#"{"__time__":[2023,2,1.5]}"#).contains("needs integers"));
        assert!(err(r#"{"__bytes__":"abc"}"#).contains("not hex"));
        assert!(err(r#"{"__bytes__":"a b"}"#).contains("not hex"));
        assert!(err(r#"{"__big_int__":"1__0"}"#).contains("not an integer"));
        assert!(err(r#"{"__big_int__":[1]}"#).contains("needs a string or integer"));
    }

    #[test]
    fn json_like_python() {
        assert_eq!(canonical_bytes("null").unwrap(), None);
        assert_eq!(canonical_bytes(" null\n").unwrap(), None);
        assert_eq!(canon("[null]"), "[null]");
        assert_eq!(
            canon(r#" { "b" : 1 , "a" : [ true , false ] } "#),
            r#"{"a":[true,false],"b":1}"#
        );
        // Keys sort by code point (not UTF-16): U+E000 before U+1F600.
        assert_eq!(
            canon("{\"😀\":1,\"\u{e000}\":2,\"é\":3,\"Z\":4}"),
            r#"{"Z":4,"\u00e9":3,"\ue000":2,"\ud83d\ude00":1}"#
        );
        // The last of repeated keys wins.
        assert_eq!(canon(r#"{"a":1,"b":2,"a":3}"#), r#"{"a":3,"b":2}"#);
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            "1e",
            "-",
            "'a'",
            "[1] x",
            "\"\t\"",
            "\"\\x\"",
            "nul",
            "\u{feff}1",
        ] {
            assert!(matches!(canonical_bytes(bad), Err(ValueError::Json { .. })), "{bad:?}");
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(matches!(canonical_bytes(&deep), Err(ValueError::TooDeep { .. })));
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(canon(&ok), ok);
    }

    #[test]
    fn strings_escape_like_python() {
        assert_eq!(canon("\"a/b\\/\\\"c\\\\\""), r#""a/b/\"c\\""#);
        assert_eq!(
            canon("\"\\u0001\\u001f\\u007f\\n\\t\\b\\f\\r\""),
            r#""\u0001\u001f\u007f\n\t\b\f\r""#
        );
        assert_eq!(
            canon("\"🚀é\u{a0}\u{7f}\u{80}\""),
            r#""\ud83d\ude80\u00e9\u00a0\u007f\u0080""#
        );
        assert_eq!(canon(r#""\uD83D\uDE80\u00E9""#), r#""\ud83d\ude80\u00e9""#);
        // Lone surrogates survive, as in Python strings, and sort by code point.
        assert_eq!(canon(r#""\ud800x\udc00""#), r#""\ud800x\udc00""#);
        assert_eq!(canon(r#""\ud800\u0041""#), r#""\ud800A""#);
        assert_eq!(
            canon(r#"{"\ue000":1,"\ud800":2,"\ud7ff":3}"#),
            r#"{"\ud7ff":3,"\ud800":2,"\ue000":1}"#
        );
    }

    #[test]
    fn numbers_like_python() {
        for (input, want) in [
            ("1", "1"),
            ("-0", "0"),
            ("123456789012345678901234567890", "123456789012345678901234567890"),
            ("1.5", "1.5"),
            ("1e5", "100000.0"),
            ("1E16", "1e+16"),
            ("1e15", "1000000000000000.0"),
            ("123456789012345678", "123456789012345678"),
            ("123456789012345678.0", "1.2345678901234568e+17"),
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            ("-2.5e-7", "-2.5e-07"),
            ("1.0", "1.0"),
            ("-0.0", "-0.0"),
            ("0e0", "0.0"),
            ("1e400", "Infinity"),
            ("-1e400", "-Infinity"),
            ("1e-400", "0.0"),
            ("NaN", "NaN"),
            ("-Infinity", "-Infinity"),
            ("123456789.123456789", "123456789.12345679"),
            ("5e-324", "5e-324"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
        ] {
            assert_eq!(canon(input), want, "{input}");
        }
        assert!(err(&"1".repeat(4301)).contains("4301 digits"));
        assert_eq!(canon(&"1".repeat(4300)), "1".repeat(4300));
    }
}
