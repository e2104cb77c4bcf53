//! Description cleaning, exactly as the original Python tool did it:
//!
//! ```python
//! d = d.lower()                                  # full Unicode lower-casing
//! d = re.sub(r'[^a-z0-9\s]', '', d)              # keep ASCII letters, digits, whitespace
//! d = re.sub(r'(?<=\D)(?=\d)', ' ', d)           # space between a non-digit and a digit
//! ' '.join(t for t in d.split() if t not in nltk_english_stopwords)
//! ```
//!
//! "Whitespace" is Python's `str.isspace()` (what `\s` and `str.split()` use), which is
//! Rust's `char::is_whitespace` plus the four ASCII separators U+001C..U+001F.

use std::collections::HashSet;

/// NLTK's English stop words (179 words), as shipped with the original tool.
const NLTK_ENGLISH: &str = include_str!("nltk_english_stopwords.txt");

/// Python's `str.isspace()` for one character: Unicode White_Space, plus the
/// information separators U+001C..U+001F (bidi class B/S), which Rust does not count.
pub fn python_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// FNV-1a: a fast hash for the short ASCII tokens looked up on the hot path.
#[derive(Default)]
pub struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A set of stop words.
#[derive(Debug, Clone)]
pub struct StopWords {
    words: HashSet<&'static [u8], std::hash::BuildHasherDefault<Fnv>>,
    longest: usize,
}

impl StopWords {
    /// NLTK's English list.
    pub fn nltk_english() -> Self {
        let words: HashSet<&'static [u8], _> =
            NLTK_ENGLISH.split_whitespace().map(str::as_bytes).collect();
        let longest = words.iter().map(|w| w.len()).max().unwrap_or(0);
        StopWords { words, longest }
    }

    /// Whether `word` is a stop word.
    pub fn contains(&self, word: &str) -> bool {
        self.contains_bytes(word.as_bytes())
    }

    fn contains_bytes(&self, word: &[u8]) -> bool {
        word.len() <= self.longest && self.words.contains(word)
    }
}

/// Cleans one description; `out` is cleared and receives the result (its buffer is reused,
/// so the hot path does not allocate).
///
/// One pass keeps the lower-cased `[a-z0-9]` characters and turns every Python whitespace
/// character into a space (only its role as a separator matters), inserting a space before a
/// digit that follows a non-digit; a second pass over that ASCII buffer drops stop words and
/// squeezes the separators, in place.
pub fn clean_into(description: &str, stop: &StopWords, out: &mut String) {
    let mut buf = std::mem::take(out).into_bytes();
    buf.clear();
    buf.reserve(description.len() + 8);
    // Whether the previous kept character was a digit; None at the start (no lookbehind).
    let mut prev_digit: Option<bool> = None;
    let mut keep = |c: char, buf: &mut Vec<u8>| {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            let digit = c.is_ascii_digit();
            if digit && prev_digit == Some(false) {
                buf.push(b' ');
            }
            buf.push(c as u8);
            prev_digit = Some(digit);
        } else if python_isspace(c) {
            buf.push(b' ');
            prev_digit = Some(false);
        }
    };
    for c in description.chars() {
        if c.is_ascii() {
            // ASCII lower-casing is all str.lower() does to ASCII.
            keep(c.to_ascii_lowercase(), &mut buf);
        } else {
            // Full Unicode lower-casing (e.g. 'İ' -> "i\u{307}", KELVIN SIGN -> 'k').
            for l in c.to_lowercase() {
                keep(l, &mut buf);
            }
        }
    }
    // Split on spaces, drop stop words, join with single spaces, compacting in place: the
    // write position never passes the read position.
    let (n, mut w, mut i) = (buf.len(), 0usize, 0usize);
    while i < n {
        while i < n && buf[i] == b' ' {
            i += 1;
        }
        let start = i;
        while i < n && buf[i] != b' ' {
            i += 1;
        }
        if start < i && !stop.contains_bytes(&buf[start..i]) {
            if w > 0 {
                buf[w] = b' ';
                w += 1;
            }
            buf.copy_within(start..i, w);
            w += i - start;
        }
    }
    buf.truncate(w);
    // Only ASCII was kept.
    *out = String::from_utf8(buf).unwrap_or_default();
}

/// Cleans one description.
pub fn clean(description: &str, stop: &StopWords) -> String {
    let mut out = String::new();
    clean_into(description, stop, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(s: &str) -> String {
        clean(s, &StopWords::nltk_english())
    }

    #[test]
    fn lowercases_fully() {
        assert_eq!(c("PAYPAL *EBAY"), "paypal ebay");
        assert_eq!(c("Kelvin \u{212a} sign"), "kelvin k sign");
        assert_eq!(c("\u{130}stanbul"), "istanbul"); // İ -> i + combining dot (removed)
        assert_eq!(c("Zoë Ève Dupont"), "zo dupont"); // "ve" is an NLTK stop word
    }

    #[test]
    fn removes_everything_but_ascii_letters_digits_and_whitespace() {
        assert_eq!(c("Quote \"inside\" and, comma"), "quote inside comma");
        assert_eq!(c("½ half and ² superscript two"), "half superscript two");
        assert_eq!(
            c("Full-width digits １２３ and letters ＡＢ"),
            "fullwidth digits letters"
        );
        assert_eq!(c("emoji only 🚀🚀🚀"), "emoji");
    }

    #[test]
    fn separates_digits_from_what_precedes_them() {
        assert_eq!(c("conf#c250b601fc"), "confc 250b 601fc");
        assert_eq!(c("abc123def456"), "abc 123def 456");
        assert_eq!(c("123abc"), "123abc");
        assert_eq!(c("card 7700"), "card 7700");
    }

    #[test]
    fn splits_on_python_whitespace_including_separators() {
        assert_eq!(
            c("TAB\tSEPARATED\nFIELDS\u{3000}wide\u{a0}nbsp"),
            "tab separated fields wide nbsp"
        );
        // U+001C..U+001F split in Python, not in Rust's is_whitespace
        assert_eq!(
            c("unit\u{1f}record\u{1e}group\u{1d}file\u{1c}x"),
            "unit record group file x"
        );
        // U+200B (zero width space) is not whitespace in either: it is removed
        assert_eq!(c("zero\u{200b}width"), "zerowidth");
    }

    #[test]
    fn drops_nltk_stop_words() {
        assert_eq!(c("Payment to the store for my rent"), "payment store rent");
        assert_eq!(c("THE AND OF"), "");
        assert_eq!(c(""), "");
    }

    #[test]
    fn python_whitespace_matches_python_exactly() {
        // Every code point for which Python 3's str.isspace() is true (generated with
        // [hex(c) for c in range(0x110000) if chr(c).isspace()]).
        let python: Vec<u32> = vec![
            0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000,
            0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028,
            0x2029, 0x202f, 0x205f, 0x3000,
        ];
        let ours: Vec<u32> = (0..=0x10ffffu32)
            .filter_map(char::from_u32)
            .filter(|&ch| python_isspace(ch))
            .map(u32::from)
            .collect();
        assert_eq!(ours, python);
    }

    proptest! {
        #[test]
        fn output_is_lowercase_ascii_words(s in "\\PC{0,80}") {
            let out = c(&s);
            prop_assert!(out.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == ' '));
            prop_assert!(!out.starts_with(' ') && !out.ends_with(' ') && !out.contains("  "));
        }

        #[test]
        fn idempotent_on_its_own_output(s in "\\PC{0,80}") {
            let once = c(&s);
            prop_assert_eq!(c(&once), once.clone());
        }

        #[test]
        fn never_contains_a_stop_word(s in "(the |a |and |ATM |to |[a-zA-Z0-9#*]{1,8} ){0,12}") {
            let stop = StopWords::nltk_english();
            for token in c(&s).split(' ').filter(|t| !t.is_empty()) {
                prop_assert!(!stop.contains(token), "stop word {} in output", token);
            }
        }
    }
}
