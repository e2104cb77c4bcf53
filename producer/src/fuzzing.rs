//! Entry points for the cargo-fuzz targets in `fuzz/` and the corpus regression test:
//! arbitrary bytes as a CSV file, and as a description to clean. A failed check panics:
//! that is how a fuzzer learns of it.
#![allow(clippy::expect_used)]

use crate::clean::{clean, StopWords};
use crate::scaler::Scaler;
use crate::source::{self, Outcome};

fn stop_words() -> &'static StopWords {
    static STOP: std::sync::OnceLock<StopWords> = std::sync::OnceLock::new();
    STOP.get_or_init(StopWords::nltk_english)
}

/// A whole CSV file: every row becomes a message or a dead letter, nothing else happens;
/// messages are JSON objects whose description holds only `[a-z0-9 ]`.
pub fn csv_file(data: &[u8]) {
    let Ok((mut reader, columns)) = source::from_reader("fuzz.csv", data) else {
        return;
    };
    let scaler = Scaler::fit([0.0, 100.0]).expect("a two-point fit");
    let mut record = csv::ByteRecord::new();
    let mut scratch = String::new();
    while let Ok(true) = reader.read_byte_record(&mut record) {
        source::strip_cr(&mut record);
        match source::process(&record, columns, &scaler, stop_words(), 4096, &mut scratch) {
            Outcome::Message(json) => {
                let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
                let d = v["description"].as_str().expect("description is a string");
                assert!(
                    d.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b' '),
                    "{d:?}"
                );
                assert!(v["amount"].is_number(), "{json}");
            }
            Outcome::DeadLetter { error, .. } => assert!(!error.is_empty()),
        }
    }
}

/// One description: the cleaning is total, its output is `[a-z0-9]` words separated by
/// single spaces, and cleaning again changes nothing.
pub fn description(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let once = clean(&text, stop_words());
    assert!(!once.starts_with(' ') && !once.ends_with(' ') && !once.contains("  "));
    assert!(once
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b' '));
    assert_eq!(clean(&once, stop_words()), once, "idempotent");
}
