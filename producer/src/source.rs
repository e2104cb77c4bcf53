//! Streaming CSV input: finds the `Description` and `Amount` columns by header name (any
//! other columns are ignored; a UTF-8 BOM and CRLF line ends are accepted) and turns each
//! row into a message or a dead letter, keeping its line number.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use csv::{ByteRecord, Reader, ReaderBuilder};

use crate::clean::{clean_into, python_isspace, StopWords};
use crate::pyjson;
use crate::scaler::Scaler;

/// Column holding the free-text description.
pub const DESCRIPTION: &str = "Description";
/// Column holding the amount.
pub const AMOUNT: &str = "Amount";

/// Errors that stop a run before anything is sent (exit code 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The file cannot be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// A required column is not in the header.
    #[error("{path}:1: missing column '{column}' (header has: {found})")]
    MissingColumn {
        /// File.
        path: String,
        /// The missing column.
        column: &'static str,
        /// The columns that are there.
        found: String,
    },
    /// A required column appears more than once.
    #[error("{path}:1: column '{column}' appears more than once (columns {first} and {second})")]
    DuplicateColumn {
        /// File.
        path: String,
        /// The duplicated column.
        column: &'static str,
        /// 1-based position of the first occurrence.
        first: usize,
        /// 1-based position of the second.
        second: usize,
    },
    /// The CSV reader failed (I/O error while reading).
    #[error("{path}:{line}: {detail}")]
    Csv {
        /// File.
        path: String,
        /// Line where reading stopped.
        line: u64,
        /// Reader error.
        detail: String,
    },
}

/// Where the two columns are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    /// Index of `Description`.
    pub description: usize,
    /// Index of `Amount`.
    pub amount: usize,
}

/// Opens `path` and locates the columns from its header.
pub fn open(path: &Path) -> Result<(Reader<BufReader<File>>, Columns), SourceError> {
    let p = path.display().to_string();
    let file = File::open(path).map_err(|source| SourceError::Io {
        path: p.clone(),
        source,
    })?;
    from_reader(&p, BufReader::with_capacity(256 * 1024, file))
}

/// Like [`open`], for any byte source; `name` is used in error messages.
pub fn from_reader<R: std::io::Read>(
    name: &str,
    input: R,
) -> Result<(Reader<R>, Columns), SourceError> {
    let p = name.to_string();
    // Records end at '\n' only; a '\r' before it is stripped by `strip_cr`. (With the csv
    // crate's default CRLF handling, a record after a CRLF line reports the previous line's
    // number, and "file:line" must be right.)
    let mut reader = ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(input);
    let headers = reader.byte_headers().map_err(|e| SourceError::Csv {
        path: p.clone(),
        line: 1,
        detail: e.to_string(),
    })?;
    let names: Vec<String> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let h = String::from_utf8_lossy(h);
            let h = if i == 0 {
                h.trim_start_matches('\u{feff}')
            } else {
                &h
            };
            h.trim().to_string()
        })
        .collect();
    let find = |column: &'static str| -> Result<usize, SourceError> {
        let mut hits = names.iter().enumerate().filter(|(_, n)| *n == column);
        let first = hits
            .next()
            .map(|(i, _)| i)
            .ok_or_else(|| SourceError::MissingColumn {
                path: p.clone(),
                column,
                found: if names.iter().all(String::is_empty) {
                    "nothing: the file is empty".into()
                } else {
                    names.join(", ")
                },
            })?;
        if let Some((second, _)) = hits.next() {
            return Err(SourceError::DuplicateColumn {
                path: p.clone(),
                column,
                first: first + 1,
                second: second + 1,
            });
        }
        Ok(first)
    };
    let columns = Columns {
        description: find(DESCRIPTION)?,
        amount: find(AMOUNT)?,
    };
    Ok((reader, columns))
}

/// Removes the `\r` of a CRLF line end from the record's last field.
pub fn strip_cr(record: &mut ByteRecord) {
    let n = record.len();
    if n == 0 {
        return;
    }
    if let Some(last) = record.get(n - 1).filter(|f| f.ends_with(b"\r")) {
        let kept = last[..last.len() - 1].to_vec();
        record.truncate(n - 1);
        record.push_field(&kept);
    }
}

/// What one CSV row becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A cleaned message: the JSON value to send.
    Message(String),
    /// A bad row: the raw row (re-encoded as CSV) and why it is bad.
    DeadLetter {
        /// The row's fields, as CSV.
        raw: Vec<u8>,
        /// What is wrong with it.
        error: String,
    },
}

/// Parses an amount like Python's `float()` of a trimmed field, refusing non-finite values.
pub fn parse_amount(field: &[u8]) -> Result<f64, String> {
    let text = std::str::from_utf8(field).map_err(|e| format!("{AMOUNT} is not UTF-8: {e}"))?;
    let trimmed = text.trim_matches(python_isspace);
    if trimmed.is_empty() {
        return Err(format!("{AMOUNT} is empty"));
    }
    let x: f64 = trimmed
        .parse()
        .map_err(|_| format!("{AMOUNT} {trimmed:?} is not a number"))?;
    if !x.is_finite() {
        return Err(format!("{AMOUNT} {trimmed:?} is not finite"));
    }
    Ok(x)
}

/// Re-encodes a record's fields as one CSV line (no line terminator).
pub fn raw_row(record: &ByteRecord) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::with_capacity(record.as_slice().len() + 8));
    let _ = w.write_byte_record(record);
    let mut out = w.into_inner().unwrap_or_default();
    if out.last() == Some(&b'\n') {
        out.pop();
    }
    out
}

/// Turns one row into a message or a dead letter. `scratch` is reused between calls.
pub fn process(
    record: &ByteRecord,
    columns: Columns,
    scaler: &Scaler,
    stop: &StopWords,
    max_row_bytes: usize,
    scratch: &mut String,
) -> Outcome {
    let dead = |error: String| Outcome::DeadLetter {
        raw: raw_row(record),
        error,
    };
    let size = record.as_slice().len();
    if size > max_row_bytes {
        return dead(format!(
            "row of {size} bytes exceeds the limit of {max_row_bytes}"
        ));
    }
    let Some(description) = record.get(columns.description) else {
        return dead(format!(
            "missing field {DESCRIPTION} (row has {} fields)",
            record.len()
        ));
    };
    let Some(amount) = record.get(columns.amount) else {
        return dead(format!(
            "missing field {AMOUNT} (row has {} fields)",
            record.len()
        ));
    };
    let description = match std::str::from_utf8(description) {
        Ok(d) => d,
        Err(e) => return dead(format!("{DESCRIPTION} is not valid UTF-8: {e}")),
    };
    let amount = match parse_amount(amount) {
        Ok(a) => a,
        Err(e) => return dead(e),
    };
    clean_into(description, stop, scratch);
    Outcome::Message(pyjson::message(scratch, scaler.transform(amount)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_like_python_float() {
        assert_eq!(parse_amount(b"-9.40"), Ok(-9.4));
        assert_eq!(parse_amount(b" 12 "), Ok(12.0));
        assert_eq!(parse_amount(b"1e3"), Ok(1000.0));
        assert_eq!(parse_amount(b"+.5"), Ok(0.5));
        for bad in [
            &b""[..],
            b"  ",
            b"abc",
            b"1,234.56",
            b"$12",
            b"NaN",
            b"inf",
            b"\xff",
        ] {
            assert!(parse_amount(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn crlf_is_stripped_from_the_last_field_only() {
        let mut r = ByteRecord::from(vec!["a\r", "b\r"]);
        strip_cr(&mut r);
        assert_eq!(r, ByteRecord::from(vec!["a\r", "b"]));
        let mut empty = ByteRecord::new();
        strip_cr(&mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    fn raw_rows_are_re_encoded_as_csv() {
        let r = ByteRecord::from(vec!["2024-01-01", "Quote \"x\", y", "1.5"]);
        assert_eq!(
            raw_row(&r),
            b"2024-01-01,\"Quote \"\"x\"\", y\",1.5".to_vec()
        );
    }
}
