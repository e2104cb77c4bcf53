//! The message body exactly as the original tool's `json.dumps({"description": d,
//! "amount": a})` wrote it: Python's separators (`", "`, `": "`), `ensure_ascii` string
//! escaping, and `float.__repr__` for the amount (shortest round-trip digits, scientific
//! notation below 1e-4 and from 1e16, a `.0` on integral values).

use std::fmt::Write;

/// Python's `repr(x)` for a finite float. Non-finite values are never sent (they are
/// dead-lettered before), but are rendered as Python would (`nan`, `inf`, `-inf`).
pub fn float_repr(x: f64) -> String {
    let mut out = String::new();
    push_float_repr(&mut out, x);
    out
}

/// A fixed buffer for `{:e}` output (at most 17 digits, a sign, a point, `e-324`: < 32 bytes).
struct Stack {
    buf: [u8; 40],
    len: usize,
}

impl Write for Stack {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Appends Python's `repr(x)` to `out`, without allocating.
pub fn push_float_repr(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("NaN");
        return;
    }
    if x.is_infinite() {
        out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    // Rust's `{:e}` gives the shortest digits that round-trip, like Python's repr.
    let mut sci = Stack {
        buf: [0; 40],
        len: 0,
    };
    if write!(sci, "{x:e}").is_err() {
        // Cannot happen (the longest f64 in `{:e}` is 24 bytes); fall back to allocating.
        let _ = write!(out, "{x:e}");
        return;
    }
    let sci = std::str::from_utf8(&sci.buf[..sci.len]).unwrap_or("0e0");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    // The significant digits, without the point (ASCII, at most 17).
    let mut digits_buf = [0u8; 24];
    let mut n = 0;
    for b in mantissa
        .bytes()
        .filter(|b| *b != b'.')
        .take(digits_buf.len())
    {
        digits_buf[n] = b;
        n += 1;
    }
    let digits = std::str::from_utf8(&digits_buf[..n]).unwrap_or("0");
    out.push_str(sign);
    if !(-4..16).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if exp < 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
        out.push_str(digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
}

/// Appends `s` as a JSON string the way Python's `json.dumps` (ensure_ascii) does.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    // Fast path: printable ASCII other than the two escaped characters (every cleaned
    // description) is copied as it is.
    if s.bytes()
        .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `{"description": "...", "amount": ...}` as the original tool sent it.
pub fn message(description: &str, amount: f64) -> String {
    let mut out = String::with_capacity(description.len() + 48);
    out.push_str("{\"description\": ");
    push_json_string(&mut out, description);
    out.push_str(", \"amount\": ");
    push_float_repr(&mut out, amount);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn float_repr_round_trips(bits in any::<u64>()) {
            let x = f64::from_bits(bits);
            prop_assume!(x.is_finite());
            let r = float_repr(x);
            prop_assert_eq!(r.parse::<f64>().map(f64::to_bits), Ok(bits), "{}", r);
            // Python's forms: a point or an exponent always, two-digit exponents.
            prop_assert!(r.contains('.') || r.contains('e'), "{}", r);
            if let Some((_, e)) = r.split_once('e') {
                prop_assert!(e.len() >= 3 && (e.starts_with('+') || e.starts_with('-')), "{}", r);
            }
        }

        #[test]
        fn json_strings_escape_like_the_slow_path(s in "\\PC*|[ -~]*") {
            let mut fast = String::new();
            push_json_string(&mut fast, &s);
            let decoded: String = serde_json::from_str(&fast).unwrap();
            prop_assert_eq!(decoded, s);
            prop_assert!(fast.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        }
    }

    #[test]
    fn floats_print_like_python_repr() {
        // (value, repr(value) in CPython 3.11)
        let cases = [
            (0.8023633605414602, "0.8023633605414602"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123456789.0, "123456789.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.2345e17, "1.2345e+17"),
            (1e300, "1e+300"),
            (5e-324, "5e-324"),
            (0.30000000000000004, "0.30000000000000004"),
            (100.25, "100.25"),
        ];
        for (x, want) in cases {
            assert_eq!(float_repr(x), want, "{x:e}");
        }
    }

    #[test]
    fn messages_match_json_dumps() {
        assert_eq!(
            message(
                "refund paypal ebay inc returned item 24990",
                0.8023633605414602
            ),
            r#"{"description": "refund paypal ebay inc returned item 24990", "amount": 0.8023633605414602}"#
        );
        assert_eq!(message("", 0.5), r#"{"description": "", "amount": 0.5}"#);
        let mut s = String::new();
        push_json_string(&mut s, "a\"b\\c\nzoë🚀\u{1}");
        assert_eq!(s, r#""a\"b\\c\nzo\u00eb\ud83d\ude80\u0001""#);
    }
}
