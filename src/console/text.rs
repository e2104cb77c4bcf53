//! Text helpers of the console: HTML escaping, URL encoding and decoding, timestamps in
//! ISO 8601 (UTC) both ways, bytes shown as text or base64, and JSON re-indented without
//! re-parsing its numbers.

use base64::Engine;

/// `s` safe inside HTML text and double-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` percent-encoded for a URL path segment or query value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-decodes `s` (`+` is a space, as forms send it); `None` if it is not UTF-8.
pub fn url_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Bytes as text when they are UTF-8, else base64: `(text, "text" | "base64")`.
pub fn bytes_as_text(b: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(b) {
        Ok(s) => (s.to_string(), "text"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(b),
            "base64",
        ),
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `ms` since the epoch as `2026-12-02T01:55:08.123Z`.
pub fn iso_time(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// A timestamp given as ms since the epoch, or as ISO 8601 in UTC
/// (`YYYY-MM-DDTHH:MM[:SS[.fff]][Z]`, a space allowed for the `T`).
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = s.split_once(['T', ' ']).unwrap_or((s, "00:00"));
    let mut dp = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, mo, d) = (dp.next()?.ok()?, dp.next()?.ok()?, dp.next()?.ok()?);
    let mut tp = time.splitn(3, ':');
    let (h, mi) = (
        tp.next()?.parse::<i64>().ok()?,
        tp.next()?.parse::<i64>().ok()?,
    );
    let (sec, frac) = match tp.next() {
        Some(x) => match x.split_once('.') {
            Some((a, b)) => (
                a.parse::<i64>().ok()?,
                format!("{b:0<3}")[..3].parse().ok()?,
            ),
            None => (x.parse::<i64>().ok()?, 0),
        },
        None => (0, 0),
    };
    let valid = (1..=12).contains(&mo) && (1..=31).contains(&d) && h < 24 && mi < 60 && sec < 61;
    valid.then(|| (days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec) * 1000 + frac)
}

/// `s` re-indented with two spaces if it is one JSON value, keeping its tokens (numbers,
/// key order) exactly; `None` if it is not JSON.
pub fn pretty_json(s: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(s).ok()?;
    if !(v.is_object() || v.is_array()) {
        return None;
    }
    let (mut out, mut depth, mut in_str, mut escaped) = (String::new(), 0usize, false, false);
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    let mut chars = s.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}' | ']')) {
                    continue;
                }
                depth += 1;
                newline(&mut out, depth);
            }
            '}' | ']' => {
                if !matches!(out.chars().last(), Some('{' | '[')) {
                    depth = depth.saturating_sub(1);
                    newline(&mut out, depth);
                }
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert(\"x\")</script>&'"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
    }

    #[test]
    fn urls_round_trip() {
        let s = "a b/c?d=é&<x>";
        assert_eq!(url_decode(&url_encode(s)).as_deref(), Some(s));
        assert_eq!(url_decode("a+b%2Fc").as_deref(), Some("a b/c"));
        assert_eq!(url_decode("%zz"), None);
        assert_eq!(url_decode("%ff"), None, "not UTF-8");
    }

    #[test]
    fn times_round_trip_through_iso_8601() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_time(1_796_176_508_123), "2026-12-02T01:55:08.123Z");
        for ms in [0, 951_782_400_000, 1_796_176_508_123, 4_102_444_800_000] {
            assert_eq!(parse_time(&iso_time(ms)), Some(ms));
        }
        assert_eq!(parse_time("2026-12-02T01:55"), Some(1_796_176_500_000));
        assert_eq!(parse_time("2026-12-02 01:55:08.1"), Some(1_796_176_508_100));
        assert_eq!(parse_time("1796176508123"), Some(1_796_176_508_123));
        assert_eq!(parse_time("2026-13-02T00:00"), None);
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn json_is_indented_with_its_tokens_kept() {
        let s = r#"{"description":"a, b: {c}","amount":1.50,"z":[],"n":[1,2e3]}"#;
        assert_eq!(
            pretty_json(s).unwrap(),
            "{\n  \"description\": \"a, b: {c}\",\n  \"amount\": 1.50,\n  \"z\": [],\n  \"n\": [\n    1,\n    2e3\n  ]\n}"
        );
        assert_eq!(pretty_json("not json"), None);
        assert_eq!(pretty_json("42"), None);
    }

    #[test]
    fn bytes_show_as_text_or_base64() {
        assert_eq!(bytes_as_text(b"hi"), ("hi".into(), "text"));
        assert_eq!(bytes_as_text(&[0xff, 0]), ("/wA=".into(), "base64"));
    }
}
