//! Escaping untrusted text for line-oriented output.
//!
//! File names, data values, column names, trust tags and Kafka keys and
//! headers come from whoever feeds the pipeline. Written raw into a line of
//! text (an `ALERT` line on stdout, a log line on stderr), a newline in a
//! dropped file's name would start a line of the attacker's choosing: a
//! forged alert, a forged `ERROR`. [`escape`] is the one helper every text
//! output goes through: control characters (newlines, carriage returns,
//! escape sequences, C1 controls), Unicode line and paragraph separators and
//! bidirectional overrides become visible escapes in the style of Rust's
//! `escape_debug` (`\n`, `\r`, `\t`, `\u{1b}`), and a backslash becomes
//! `\\` so that an escape can never be mistaken for a name that spells one.
//! Everything else, quotes included, is left as it is.
//!
//! JSON outputs (`alerts.jsonl`, JSON logs) need none of this: JSON
//! escapes control characters itself.

use std::borrow::Cow;

/// Whether `c` must not appear raw in a line of text output.
fn unsafe_in_line(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every character that could break or disguise a line escaped
/// (see the module doc); borrowed when nothing needed escaping.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_in_line) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_in_line(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_and_controls_become_visible_escapes() {
        assert_eq!(
            escape("x.parquet\nALERT [critical] forged"),
            "x.parquet\\nALERT [critical] forged"
        );
        assert_eq!(escape("a\r\tb\u{1b}[31m"), "a\\r\\tb\\u{1b}[31m");
        assert_eq!(
            escape("a\u{2028}b\u{202e}c\u{85}"),
            "a\\u{2028}b\\u{202e}c\\u{85}"
        );
        // a name that spells an escape stays distinguishable from one
        assert_eq!(escape("a\\nb"), "a\\\\nb");
        assert_ne!(escape("a\\nb"), escape("a\nb"));
    }

    #[test]
    fn ordinary_text_is_borrowed_unchanged() {
        for s in [
            "",
            "2024-06-02T12.parquet",
            "café \"quoted\" 'x' mcc_9999 µ",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(b) if b == s), "{s}");
        }
    }
}
