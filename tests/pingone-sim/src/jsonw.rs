//! A minimal JSON object writer producing exactly the bytes `serde_json` would, without building
//! a `Value` first: the users endpoint renders hundreds of thousands of users a second with it.

use std::fmt::Write as _;

/// Appends `s` as a JSON string, escaped as `serde_json` escapes it.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Writes one JSON object (with nested objects) into a `String`.
#[derive(Debug)]
pub struct ObjectWriter {
    out: String,
    comma: bool,
}

impl ObjectWriter {
    /// Starts an object.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        let mut out = String::with_capacity(capacity);
        out.push('{');
        Self { out, comma: false }
    }

    fn key(&mut self, k: &str) {
        if self.comma {
            self.out.push(',');
        }
        self.comma = true;
        push_str(&mut self.out, k);
        self.out.push(':');
    }

    /// A string member.
    pub fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        push_str(&mut self.out, v);
    }

    /// A boolean member.
    pub fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.out.push_str(if v { "true" } else { "false" });
    }

    /// A member whose value is already JSON text.
    pub fn raw(&mut self, k: &str, json_text: &str) {
        self.key(k);
        self.out.push_str(json_text);
    }

    /// Opens a nested object member; close it with [`ObjectWriter::close`].
    pub fn open(&mut self, k: &str) {
        self.key(k);
        self.out.push('{');
        self.comma = false;
    }

    /// Closes the innermost open object.
    pub fn close(&mut self) {
        self.out.push('}');
        self.comma = true;
    }

    /// Closes the outer object and returns the text.
    #[must_use]
    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_serde_json() {
        for s in [
            "plain",
            "O'Brien",
            "quote\"back\\slash",
            "new\nline\ttab\u{1}",
            "Île-de-France",
            "",
        ] {
            let mut out = String::new();
            push_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap_or_default());
        }
        let mut w = ObjectWriter::new(64);
        w.str("a", "x");
        w.open("b");
        w.bool("c", true);
        w.close();
        w.str("d", "y");
        let text = w.finish();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(serde_json::to_string(&v).unwrap_or_default(), text);
    }
}
