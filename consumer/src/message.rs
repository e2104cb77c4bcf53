//! Decoding a Kafka message value into a row; anything else is a poison message.

use std::borrow::Cow;

use crate::copy::{CopyRows, Origin};
use crate::sink::Row;

#[derive(serde::Deserialize)]
struct Typed<'a> {
    /// Borrowed from the message unless it has escapes.
    #[serde(borrow)]
    description: Cow<'a, str>,
    amount: f64,
}

/// Parses `{"description": <string>, "amount": <finite number>}` (other fields ignored).
pub fn parse(value: Option<&[u8]>) -> Result<Row, String> {
    let (amount, description) = decode(value)?;
    Ok(Row {
        amount,
        description: description.into_owned(),
    })
}

/// Like [`parse`], but appends the row straight to a batch's COPY buffer (no copy of the
/// description unless it has JSON escapes), remembering where it came from.
pub fn parse_into(origin: Origin<'_>, rows: &mut CopyRows) -> Result<(), String> {
    let (amount, description) = decode(origin.value)?;
    rows.push(amount, &description, origin);
    Ok(())
}

/// The amount and the description, borrowed from `value` when it can be.
fn decode(value: Option<&[u8]>) -> Result<(f64, Cow<'_, str>), String> {
    let value = value.ok_or("message has no value (null)")?;
    // Fast path: straight into the row. Anything it refuses is diagnosed below.
    let (amount, description) = match serde_json::from_slice::<Typed<'_>>(value) {
        Ok(t) if t.amount.is_finite() => (t.amount, t.description),
        _ => diagnose(value).map(|row| (row.amount, Cow::Owned(row.description)))?,
    };
    if description.as_bytes().contains(&0) {
        return Err(
            "description contains a NUL character (\\u0000), which PostgreSQL text cannot store"
                .into(),
        );
    }
    Ok((amount, description))
}

/// The slow path for values the fast path refused: says precisely what is wrong.
fn diagnose(value: &[u8]) -> Result<Row, String> {
    let json: serde_json::Value =
        serde_json::from_slice(value).map_err(|e| format!("value is not JSON: {e}"))?;
    let obj = json.as_object().ok_or("value is not a JSON object")?;
    let description = match obj.get("description") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => return Err(format!("description is not a string: {other}")),
        None => return Err("missing field description".into()),
    };
    let amount = match obj.get("amount") {
        Some(serde_json::Value::Number(n)) => n.as_f64().ok_or("amount is not a number")?,
        Some(other) => return Err(format!("amount is not a number: {other}")),
        None => return Err("missing field amount".into()),
    };
    if !amount.is_finite() {
        return Err(format!("amount {amount} is not finite"));
    }
    Ok(Row {
        amount,
        description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_and_poison_messages() {
        let r = parse(Some(
            br#"{"description": "coffee", "amount": 0.25, "extra": 1}"#,
        ))
        .unwrap();
        assert_eq!((r.description.as_str(), r.amount), ("coffee", 0.25));
        for (bad, why) in [
            (&b"not json"[..], "not JSON"),
            (b"[1,2]", "not a JSON object"),
            (br#"{"amount": 1}"#, "missing field description"),
            (br#"{"description": "x"}"#, "missing field amount"),
            (
                br#"{"description": 5, "amount": 1}"#,
                "description is not a string",
            ),
            (
                br#"{"description": "x", "amount": "1"}"#,
                "amount is not a number",
            ),
            (br#"{"description": "x", "amount": NaN}"#, "not JSON"),
            (br#"{"description": "x", "amount": 1e999}"#, "not JSON"),
            (br#"{"description": "a\u0000b", "amount": 0.5}"#, "NUL"),
        ] {
            let e = parse(Some(bad)).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(parse(None).unwrap_err().contains("null"));
    }
}
