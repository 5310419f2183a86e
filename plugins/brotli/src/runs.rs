//! Splitting a key suffix or a value into text and runs, and joining it back
//! (see the crate docs for the streams).

use crate::{bad, get_varint, put_varint, PluginError, DIGITS, HEX, RUNS, STREAMS};

/// Shortest hex run (it must also hold a letter: pure digits are decimal runs).
pub const HEX_MIN: usize = 8;
/// Shortest decimal run.
pub const DIGIT_MIN: usize = 2;
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn is_hex(c: u8) -> bool {
    matches!(c, b'0'..=b'9' | b'a'..=b'f')
}

fn nibble(c: u8) -> u8 {
    if c <= b'9' {
        c - b'0'
    } else {
        c - b'a' + 10
    }
}

/// At least the stream bytes one entry of `n` bytes (key and value) adds to a
/// block, lengths included. A run's own bytes are at most its length, and its
/// gap and code varints take two bytes (plus one per 64 bytes of gap or run);
/// every run but the first of a key or value follows at least one text byte.
/// So 2 raw bytes become at most 4 (a first two-digit run), 3 at most 5 (two
/// digits after a separator), longer runs less; the counts and lengths are
/// five varints.
pub fn max_split_len(n: usize) -> usize {
    2 * n + 64
}

/// Appends the text of `s` to `text`, its hex and decimal runs to `hex` and
/// `digits`, and its run list to `runs` (`scratch` is working space); returns
/// the length of the text.
pub fn split(
    s: &[u8],
    text: &mut Vec<u8>,
    runs: &mut Vec<u8>,
    hex: &mut Vec<u8>,
    digits: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> usize {
    scratch.clear();
    let text_start = text.len();
    let mut count = 0u64;
    // End of the previous run: text from there on is not written yet.
    let mut last = 0;
    let mut i = 0;
    while i < s.len() {
        if !is_hex(s[i]) {
            i += 1;
            continue;
        }
        let mut j = i;
        let mut letter = false;
        while j < s.len() && is_hex(s[j]) {
            letter |= s[j] >= b'a';
            j += 1;
        }
        if letter && j - i >= HEX_MIN {
            text.extend_from_slice(&s[last..i]);
            put_varint(scratch, (i - last) as u64);
            put_varint(scratch, ((j - i) as u64) << 1 | 1);
            for pair in s[i..j].chunks(2) {
                let low = pair.get(1).map_or(0, |&c| nibble(c));
                hex.push(nibble(pair[0]) << 4 | low);
            }
            count += 1;
            last = j;
            i = j;
            continue;
        }
        // Too short for a hex run, or no letter: only its decimal runs.
        while i < j {
            if !s[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let mut k = i;
            while k < j && s[k].is_ascii_digit() {
                k += 1;
            }
            if k - i >= DIGIT_MIN {
                text.extend_from_slice(&s[last..i]);
                put_varint(scratch, (i - last) as u64);
                put_varint(scratch, ((k - i) as u64) << 1);
                digits.extend_from_slice(&s[i..k]);
                count += 1;
                last = k;
            }
            i = k;
        }
    }
    text.extend_from_slice(&s[last..]);
    put_varint(runs, count);
    runs.extend_from_slice(scratch);
    text.len() - text_start
}

fn too_large(limit: usize) -> PluginError {
    bad(format!("an entry is larger than this format's {}-byte limit", limit))
}

/// Rebuilds a key suffix or a value from the decoded streams `s` (read
/// positions `p`): `text_len` bytes of the text stream `text` with the next
/// run list of the runs stream. Appends it to `out`, refusing to append more
/// than `limit` bytes.
pub fn join(
    s: &[Vec<u8>; STREAMS],
    p: &mut [usize; STREAMS],
    text: usize,
    text_len: usize,
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), PluginError> {
    let start = out.len();
    let text_end = p[text]
        .checked_add(text_len)
        .filter(|&end| end <= s[text].len())
        .ok_or_else(|| bad("text stream too short"))?;
    if text_len > limit {
        return Err(too_large(crate::MAX_ENTRY));
    }
    let truncated = || bad("truncated run list");
    let count = get_varint(&s[RUNS], &mut p[RUNS]).ok_or_else(truncated)?;
    for _ in 0..count {
        let gap = get_varint(&s[RUNS], &mut p[RUNS]).ok_or_else(truncated)?;
        let code = get_varint(&s[RUNS], &mut p[RUNS]).ok_or_else(truncated)?;
        let gap = usize::try_from(gap)
            .ok()
            .filter(|&g| g <= text_end - p[text])
            .ok_or_else(|| bad("a run starts past the end of its text"))?;
        out.extend_from_slice(&s[text][p[text]..p[text] + gap]);
        p[text] += gap;
        let len = code >> 1;
        if len == 0 {
            return Err(bad("an empty run"));
        }
        // What is written so far, this run and the text still to come.
        let total = ((out.len() - start) as u64)
            .saturating_add(len)
            .saturating_add((text_end - p[text]) as u64);
        if total > limit as u64 {
            return Err(too_large(crate::MAX_ENTRY));
        }
        let len = len as usize;
        if code & 1 == 1 {
            let bytes = s[HEX]
                .get(p[HEX]..p[HEX] + len.div_ceil(2))
                .ok_or_else(|| bad("hex stream too short"))?;
            p[HEX] += bytes.len();
            for (i, &b) in bytes.iter().enumerate() {
                out.push(HEX_DIGITS[usize::from(b >> 4)]);
                if 2 * i + 1 < len {
                    out.push(HEX_DIGITS[usize::from(b & 15)]);
                } else if b & 15 != 0 {
                    return Err(bad("an odd hex run ends with a nonzero nibble"));
                }
            }
        } else {
            let digits = s[DIGITS]
                .get(p[DIGITS]..p[DIGITS] + len)
                .ok_or_else(|| bad("digit stream too short"))?;
            if !digits.iter().all(u8::is_ascii_digit) {
                return Err(bad("a decimal run holds a non-digit"));
            }
            p[DIGITS] += len;
            out.extend_from_slice(digits);
        }
    }
    out.extend_from_slice(&s[text][p[text]..text_end]);
    p[text] = text_end;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(s: &[u8]) -> [Vec<u8>; STREAMS] {
        let mut st: [Vec<u8>; STREAMS] = Default::default();
        let mut scratch = Vec::new();
        let [_, runs, text, _, hex, digits] = &mut st;
        let text_len = split(s, text, runs, hex, digits, &mut scratch);
        assert!(
            st.iter().map(Vec::len).sum::<usize>() <= max_split_len(s.len()),
            "{s:?}"
        );
        let mut p = [0; STREAMS];
        let mut out = b"x".to_vec();
        join(&st, &mut p, 2, text_len, s.len(), &mut out).unwrap();
        assert_eq!(&out[1..], s);
        assert!((0..STREAMS).all(|i| p[i] == st[i].len()));
        if !s.is_empty() {
            let mut p = [0; STREAMS];
            assert!(join(&st, &mut p, 2, text_len, s.len() - 1, &mut Vec::new()).is_err());
        }
        st
    }

    #[test]
    fn splits_and_joins() {
        let acct = b"currency.balances:3f1a9c00d4e5b6a7980112233445566778899aabbccddeeff00112233445566a";
        let st = round_trip(acct);
        assert_eq!(st[2], b"currency.balances:");
        assert_eq!(st[4].len(), 32);
        let st = round_trip(br#"{"__fixed__":"1234567.00000001"}"#);
        assert_eq!(st[2], br#"{"__fixed__":"."}"#);
        assert_eq!(st[5], b"123456700000001");
        // An odd hex run, runs at both ends, short runs left as text.
        let st = round_trip(b"abcdef123:7:deadbeef0");
        assert_eq!(st[2], b":7:");
        assert_eq!(st[4], [0xab, 0xcd, 0xef, 0x12, 0x30, 0xde, 0xad, 0xbe, 0xef, 0x00]);
        let st = round_trip(b"cafe12x9a99b");
        assert_eq!((&st[2][..], &st[5][..]), (&b"cafex9ab"[..], &b"1299"[..]));
        for s in [
            &b""[..],
            b"7",
            b"12",
            b"0123456789",
            b"ABCDEF0123456789",
            b"\xff\x00a1b2c3d4e5",
        ] {
            round_trip(s);
        }
        // The worst case for expansion: two digits, one separator.
        let worst: Vec<u8> = (0..3000).flat_map(|_| *b"12x").collect();
        round_trip(&worst);
        round_trip(&worst[..worst.len() - 1]);
    }
}
