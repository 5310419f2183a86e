//! Stored values (xian-compat.md §2) and their canonical bytes (§3.2), which
//! are what the state root hashes.
//!
//! Xian decodes a stored value with Python's `json` plus a few tagged objects,
//! and re-encodes it with `json.dumps(sort_keys=True, separators=(",", ":"),
//! ensure_ascii=True)` after turning decimals, big integers, times and bytes
//! into plain JSON. This module reproduces that byte for byte. Numbers keep
//! Python's meaning: integers are exact (any size), other numbers are doubles
//! printed as Python's `repr(float)` prints them.

use serde_json::{Map, Number, Value};

/// A stored value that has no canonical form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValueError {
    #[error("stored value is not valid JSON: {0}")]
    Json(String),
    #[error("`__fixed__` value {0:?} is not a decimal number")]
    BadDecimal(String),
    #[error("`__fixed__` value {0:?} has more than 61 integer digits, which Xian's decimal type does not allow")]
    DecimalTooLarge(String),
    #[error("`__big_int__` value {0:?} is not an integer")]
    BadBigInt(String),
    #[error(
        "`__time__` value {0} is not [year, month, day, hour, minute, second(, microsecond)] of a valid date-time"
    )]
    BadTime(String),
    #[error("`__bytes__` value {0:?} is not hex of UTF-8 text")]
    BadBytes(String),
    #[error(
        "`__delta__` (time delta) values have no canonical form in Xian's state root; such a state cannot be hashed"
    )]
    Delta,
    #[error("tag `{tag}` needs a {needs} value, found {found}")]
    TagType {
        tag: &'static str,
        needs: &'static str,
        found: String,
    },
}

/// Canonical value bytes of a stored JSON text; `None` when the value is JSON
/// null (such keys are left out of the state root).
pub fn canonical_bytes(stored: &str) -> Result<Option<Vec<u8>>, ValueError> {
    let value: Value = serde_json::from_str(stored).map_err(|e| ValueError::Json(e.to_string()))?;
    if value.is_null() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(stored.len() + 8);
    write_value(&value, &mut out)?;
    Ok(Some(out))
}

fn write_value(v: &Value, out: &mut Vec<u8>) -> Result<(), ValueError> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            if let Some(done) = write_tagged(map, out)? {
                return Ok(done);
            }
            // serde_json's map (without preserve_order) is a BTreeMap: keys in
            // UTF-8 byte order, which is code-point order, as Python sorts.
            out.push(b'{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_value(item, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// Writes a tagged object (exactly one key, a known tag); `None` if `map` is a
/// plain object.
fn write_tagged(map: &Map<String, Value>, out: &mut Vec<u8>) -> Result<Option<()>, ValueError> {
    if map.len() != 1 {
        return Ok(None);
    }
    let (tag, v) = map.iter().next().expect("one entry");
    let text = |tag: &'static str| -> Result<&str, ValueError> {
        v.as_str().ok_or_else(|| ValueError::TagType {
            tag,
            needs: "string",
            found: v.to_string(),
        })
    };
    match tag.as_str() {
        "__fixed__" => write_string(&canonical_decimal(text("__fixed__")?)?, out),
        "__big_int__" => out.extend_from_slice(canonical_int(text("__big_int__")?)?.as_bytes()),
        "__time__" => write_string(&canonical_time(v)?, out),
        "__bytes__" => {
            let hex_text = text("__bytes__")?;
            let bytes = hex::decode(hex_text).map_err(|_| ValueError::BadBytes(hex_text.to_string()))?;
            let s = String::from_utf8(bytes).map_err(|_| ValueError::BadBytes(hex_text.to_string()))?;
            write_string(&s, out);
        }
        "__delta__" => return Err(ValueError::Delta),
        _ => return Ok(None),
    }
    Ok(Some(()))
}

/// A JSON string as Python's `json.dumps(ensure_ascii=True)` writes it.
fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            ' '..='~' => out.push(c as u8),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.extend_from_slice(format!("\\u{u:04x}").as_bytes());
                }
            }
        }
    }
    out.push(b'"');
}

/// Integers stay exact; other numbers are doubles printed like `repr(float)`.
fn write_number(n: &Number, out: &mut Vec<u8>) {
    let text = n.to_string();
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        out.extend_from_slice(normalize_int_digits(&text).as_bytes());
    } else {
        let f: f64 = text.parse().unwrap_or(f64::NAN);
        out.extend_from_slice(python_float_repr(f).as_bytes());
    }
}

/// `-0` → `0`; leading zeros dropped.
fn normalize_int_digits(text: &str) -> String {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        "0".into()
    } else if neg {
        format!("-{digits}")
    } else {
        digits.to_string()
    }
}

/// What Python's `int(text)` then `str()` gives (sign, digits, underscores
/// between digits, surrounding whitespace).
fn canonical_int(text: &str) -> Result<String, ValueError> {
    let bad = || ValueError::BadBigInt(text.to_string());
    let t = text.trim();
    let body = t.strip_prefix(['-', '+']).unwrap_or(t);
    if body.is_empty() || body.starts_with('_') || body.ends_with('_') || body.contains("__") {
        return Err(bad());
    }
    if !body.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        return Err(bad());
    }
    let digits: String = t.chars().filter(|&c| c != '_').collect();
    Ok(normalize_int_digits(&digits))
}

/// Xian's decimal as plain text: no exponent, at most 30 fractional digits
/// (cut toward zero), at most 61 integer digits, no trailing zeros or `.`,
/// and zero without a sign.
pub fn canonical_decimal(text: &str) -> Result<String, ValueError> {
    let bad = || ValueError::BadDecimal(text.to_string());
    let t = text.trim();
    if t.is_empty() {
        return Ok("0".into());
    }
    let (neg, rest) = match t.as_bytes()[0] {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => {
            let exp: i64 = rest[i + 1..].parse().map_err(|_| bad())?;
            (&rest[..i], exp)
        }
        None => (rest, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(bad());
    }
    if !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if exponent.abs() > 10_000 {
        return Err(ValueError::DecimalTooLarge(text.to_string()));
    }
    // All digits, and where the decimal point falls among them.
    let digits: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).collect();
    let point = int_part.len() as i64 + exponent;
    let (int_digits, frac_digits): (String, String) = if point <= 0 {
        (
            String::new(),
            "0".repeat((-point) as usize) + std::str::from_utf8(&digits).unwrap(),
        )
    } else if point as usize >= digits.len() {
        (
            String::from_utf8(digits.clone()).unwrap() + &"0".repeat(point as usize - digits.len()),
            String::new(),
        )
    } else {
        let (a, b) = digits.split_at(point as usize);
        (
            String::from_utf8(a.to_vec()).unwrap(),
            String::from_utf8(b.to_vec()).unwrap(),
        )
    };
    let int_digits = int_digits.trim_start_matches('0');
    if int_digits.len() > 61 {
        return Err(ValueError::DecimalTooLarge(text.to_string()));
    }
    let frac_digits = &frac_digits[..frac_digits.len().min(30)];
    let frac_digits = frac_digits.trim_end_matches('0');
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Ok("0".into());
    }
    let mut s = String::with_capacity(int_digits.len() + frac_digits.len() + 3);
    if neg {
        s.push('-');
    }
    s.push_str(if int_digits.is_empty() { "0" } else { int_digits });
    if !frac_digits.is_empty() {
        s.push('.');
        s.push_str(frac_digits);
    }
    Ok(s)
}

/// `[Y, M, D, h, m, s(, µs)]` → `YYYY-MM-DD HH:MM:SS(.ffffff)`, as Python's
/// `str(datetime)` writes it.
fn canonical_time(v: &Value) -> Result<String, ValueError> {
    let bad = || ValueError::BadTime(v.to_string());
    let parts = v.as_array().ok_or_else(bad)?;
    if !(parts.len() == 6 || parts.len() == 7) {
        return Err(bad());
    }
    let n: Vec<i64> = parts
        .iter()
        .map(|p| p.as_i64().ok_or_else(bad))
        .collect::<Result<_, _>>()?;
    let (y, mo, d, h, mi, s) = (n[0], n[1], n[2], n[3], n[4], n[5]);
    let us = n.get(6).copied().unwrap_or(0);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if !(1..=9999).contains(&y)
        || !(1..=days).contains(&d)
        || !(0..24).contains(&h)
        || !(0..60).contains(&mi)
        || !(0..60).contains(&s)
        || !(0..1_000_000).contains(&us)
    {
        return Err(bad());
    }
    let mut out = format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}");
    if us != 0 {
        out.push_str(&format!(".{us:06}"));
    }
    Ok(out)
}

/// Python's `repr(float)` (and so `json.dumps`): the shortest digits that
/// round-trip, fixed notation for decimal exponents in [-4, 16), otherwise
/// `d.ddde+XX`.
fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits too: "1.2345e-7".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("integer exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if f < 0.0 { "-" } else { "" };
    let decpt = exp + 1; // value = 0.DIGITS × 10^decpt
    if (-3..=16).contains(&decpt) {
        let body = if decpt <= 0 {
            format!("0.{}{}", "0".repeat((-decpt) as usize), digits)
        } else if decpt as usize >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(decpt as usize - digits.len()))
        } else {
            format!("{}.{}", &digits[..decpt as usize], &digits[decpt as usize..])
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let e = exp;
        format!("{sign}{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        String::from_utf8(canonical_bytes(s).unwrap().unwrap()).unwrap()
    }

    #[test]
    fn decimals() {
        for (input, want) in [
            ("12.50", "12.5"),
            ("-0", "0"),
            ("-0.000", "0"),
            ("", "0"),
            ("5.", "5"),
            (".5", "0.5"),
            ("+7", "7"),
            ("9.5603316151E+11", "956033161510"),
            ("1e-3", "0.001"),
            ("-1.25e1", "-12.5"),
            (
                "0.1234567890123456789012345678909",
                "0.123456789012345678901234567890".trim_end_matches('0'),
            ),
            ("-0.0000000000000000000000000000009", "0"),
            ("00012.000", "12"),
        ] {
            assert_eq!(canonical_decimal(input).unwrap(), want, "{input}");
        }
        assert!(canonical_decimal("NaN").is_err());
        assert!(canonical_decimal("1.2.3").is_err());
        assert!(canonical_decimal(&"9".repeat(62)).is_err());
        assert!(canonical_decimal(&"9".repeat(61)).is_ok());
    }

    #[test]
    fn tags_and_nesting() {
        assert_eq!(canon(r#"{"__fixed__":"12.50"}"#), r#""12.5""#);
        assert_eq!(canon(r#"{"__big_int__":"-000123"}"#), "-123");
        assert_eq!(canon(r#"{"__time__":[2024,1,2,3,4,5]}"#), r#""2024-01-02 03:04:05""#);
        assert_eq!(
            canon(r#"{"__time__":[2024,1,2,3,4,5,7]}"#),
            r#""2024-01-02 03:04:05.000007""#
        );
        assert_eq!(canon(r#"{"__time__":[2024,1,2,3,4,5,0]}"#), r#""2024-01-02 03:04:05""#);
        assert_eq!(canon(r#"{"__bytes__":"6869"}"#), r#""hi""#);
        assert_eq!(
            canon(r#"{"b":1,"a":[{"__fixed__":"1.0"}],"é":"x"}"#),
            r#"{"a":["1"],"b":1,"\u00e9":"x"}"#
        );
        assert_eq!(canon(r#"{"__fixed__":"1","x":2}"#), r#"{"__fixed__":"1","x":2}"#);
        assert_eq!(canonical_bytes("null").unwrap(), None);
        assert_eq!(
            canonical_bytes(r#"{"__delta__":[1,2]}"#).unwrap_err(),
            ValueError::Delta
        );
        assert!(canonical_bytes(r#"{"__time__":[2023,2,29,0,0,0]}"#).is_err());
        assert!(canonical_bytes("{").is_err());
    }

    #[test]
    fn strings_escape_like_python() {
        assert_eq!(canon("\"a/b\\\"c\\\\\""), r#""a/b\"c\\""#);
        assert_eq!(
            canon("\"\\u0001\\u007f\\n\\t\\b\\f\\r\""),
            r#""\u0001\u007f\n\t\b\f\r""#
        );
        assert_eq!(canon("\"🚀é\""), r#""\ud83d\ude80\u00e9""#);
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
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            ("-2.5e-7", "-2.5e-07"),
            ("1.0", "1.0"),
            ("-0.0", "-0.0"),
            ("1e400", "Infinity"),
            ("123456789.123456789", "123456789.12345679"),
        ] {
            assert_eq!(canon(input), want, "{input}");
        }
    }
}
