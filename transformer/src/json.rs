//! Lenient, borrowing reads of PingOne JSON on the transformer's hot path.
//!
//! Parsing a payload into an owned `serde_json::Value` allocates a map entry and a string for
//! every field, most of which normalization never looks at (the first profile put 28 % of the
//! transformer's time there). Here a payload is read once, keeping only the fields asked for:
//! strings borrowed from the payload where they have no escapes, every other field skipped
//! without allocating.
//!
//! The reads are as lenient as those of a `Value`: a field of an unexpected type reads as
//! [`Leaf::Other`] (or an empty [`Obj`]) instead of failing, and of duplicate keys the last wins.
//! Nested objects keep only the fields asked for ([`Pick`]), without allocating.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A JSON value as normalization reads it: a string, a number (as JSON writes it), a boolean,
/// or anything else (null, an object, an array).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Leaf<'a> {
    /// A string, borrowed from the payload when it has no escapes.
    Str(Cow<'a, str>),
    /// A number, written as `serde_json` writes it.
    Num(String),
    /// A boolean.
    Bool(bool),
    /// Null, an object, an array, or absent.
    #[default]
    Other,
}

impl Leaf<'_> {
    /// Strings verbatim, numbers as JSON writes them, anything else `None`.
    pub fn string(&self) -> Option<String> {
        self.text().map(str::to_owned)
    }

    /// As [`Leaf::string`], borrowed.
    pub fn text(&self) -> Option<&str> {
        match self {
            Leaf::Str(s) => Some(s),
            Leaf::Num(n) => Some(n),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Leaf::Str(s) => Some(s),
            _ => None,
        }
    }

    /// JSON booleans, or the strings `true` / `false` in any case.
    pub fn flag(&self) -> Option<bool> {
        match self {
            Leaf::Bool(b) => Some(*b),
            Leaf::Str(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Leaf::Str(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }
}

impl<'de> de::Deserialize<'de> for Leaf<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LeafVisitor)
    }
}

struct LeafVisitor;

impl<'de> Visitor<'de> for LeafVisitor {
    type Value = Leaf<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Leaf::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Leaf::Num(v.to_string()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Leaf::Num(v.to_string()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        // As a `Value` would write it (a non-finite number cannot come from JSON text).
        Ok(serde_json::Number::from_f64(v).map_or(Leaf::Other, |n| Leaf::Num(n.to_string())))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Leaf::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Leaf::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Leaf::Str(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Leaf::Other)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Leaf::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Leaf::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Leaf::Other)
    }
}

/// An object key, borrowed from the payload when it has no escapes.
#[derive(Debug)]
pub struct Key<'a>(pub Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// At most this many fields are picked from one nested object.
pub const PICK_MAX: usize = 3;

/// The fields of a nested object that [`Pick`] named, one level deep (deeper values read as
/// [`Leaf::Other`]); every field reads as [`Leaf::Other`] when the value is not an object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Obj<'a> {
    keys: &'static [&'static str],
    values: [Leaf<'a>; PICK_MAX],
}

impl<'a> Obj<'a> {
    /// The field `key` (the last, if repeated); [`Leaf::Other`] if absent or not picked.
    pub fn get(&self, key: &str) -> &Leaf<'a> {
        static OTHER: Leaf<'static> = Leaf::Other;
        self.keys
            .iter()
            .position(|k| *k == key)
            .map_or(&OTHER, |i| &self.values[i])
    }
}

/// Reads a nested object keeping only the fields named here (no allocation: every other field
/// is skipped unparsed), as an [`Obj`].
#[derive(Debug, Clone, Copy)]
pub struct Pick(&'static [&'static str]);

impl Pick {
    /// Picks `keys` (at most [`PICK_MAX`]; more fails to compile where used in a `const`).
    pub const fn new(keys: &'static [&'static str]) -> Self {
        assert!(keys.len() <= PICK_MAX, "too many fields to pick");
        Self(keys)
    }

    /// No fields: what a value that is not an object reads as.
    pub fn empty<'a>(self) -> Obj<'a> {
        Obj {
            keys: self.0,
            values: Default::default(),
        }
    }
}

impl<'de> de::DeserializeSeed<'de> for Pick {
    type Value = Obj<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Pick {
    type Value = Obj<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut obj = self.empty();
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            match self.0.iter().position(|w| *w == k) {
                Some(i) => obj.values[i] = map.next_value::<Leaf<'de>>()?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(obj)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(self.empty())
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(self.empty())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(self.empty())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(self.empty())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(self.empty())
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(self.empty())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(self.empty())
    }
}

/// The fast path gave up: the payload has something [`Scan`] leaves to `serde_json` (an escape
/// in a string or key, a number where a value is kept, an exponent, deep nesting, anything
/// that is not valid JSON, or a payload that is not an object). The caller reads the payload
/// again through the `serde_json` path, which decides every such case, errors included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bail;

/// Deepest nesting [`Scan`] follows before it leaves the payload to `serde_json` (whose limit
/// is 128).
const SCAN_DEPTH: u32 = 64;

/// Longest integer part of a number [`Scan`] skips (`f64` reaches about 1.8e308).
const SCAN_DIGITS: usize = 300;

/// The index of the first byte that ends a string's plain run: `"`, `\\` or a control
/// character. Eight bytes at a time (the zero-byte test of "Bit Twiddling Hacks": in each
/// 8-byte word the lowest flagged byte is exact), then byte by byte for the tail.
fn string_stop(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // High bit of each byte of `w` below `n` (bytes of 0x80 and above never count).
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let stops = below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            | below(w, 0x20);
        if stops != 0 {
            return Some(at + (stops.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|i| at + i)
}

/// A single pass over a JSON payload that keeps borrowed strings, booleans and picked nested
/// fields and validates everything it skips, for the common shape of PingOne's JSON.
///
/// It accepts a subset of what `serde_json` accepts and, where it accepts, reads the same
/// values as the `serde_json` path (the tests compare both on generated payloads); anything
/// else is a [`Bail`]. Strings are `&str` slices of the payload: the scan stops only at ASCII
/// bytes, so every slice falls on character boundaries.
#[derive(Debug)]
pub struct Scan<'a> {
    text: &'a str,
    pos: usize,
    depth: u32,
}

impl<'a> Scan<'a> {
    /// A scan of `text` from its start.
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            pos: 0,
            depth: 0,
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        let bytes = self.text.as_bytes();
        while let Some(&c) = bytes.get(self.pos) {
            if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(c);
            }
            self.pos += 1;
        }
        None
    }

    /// Consumes `c` (after whitespace) or bails.
    fn expect(&mut self, c: u8) -> Result<(), Bail> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// Whether the next value (after whitespace) is an object.
    pub fn at_object(&mut self) -> bool {
        self.peek() == Some(b'{')
    }

    /// The end of the payload: only whitespace may follow the value.
    ///
    /// # Errors
    /// [`Bail`] when anything else follows.
    pub fn end(&mut self) -> Result<(), Bail> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(Bail),
        }
    }

    /// A string without escapes or control characters; the scan is at its opening quote.
    fn string(&mut self) -> Result<&'a str, Bail> {
        let start = self.pos + 1;
        let rest = self.text.as_bytes().get(start..).ok_or(Bail)?;
        let len = string_stop(rest).ok_or(Bail)?;
        if rest[len] != b'"' {
            return Err(Bail);
        }
        self.pos = start + len + 1;
        self.text.get(start..start + len).ok_or(Bail)
    }

    /// Consumes the literal `word` (`true`, `false`, `null`).
    fn literal(&mut self, word: &str) -> Result<(), Bail> {
        if self.text.as_bytes()[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// Skips a number as JSON writes it (`-`, an integer part without leading zeros, an
    /// optional fraction). Exponents and integer parts of more than [`SCAN_DIGITS`] digits are
    /// left to `serde_json`: where it converts a number (a parsed map does, everywhere), one
    /// beyond `f64`'s range is an error.
    fn number(&mut self) -> Result<(), Bail> {
        let bytes = self.text.as_bytes();
        let digits = |from: usize| {
            bytes
                .get(from..)
                .map_or(0, |b| b.iter().take_while(|c| c.is_ascii_digit()).count())
        };
        let mut at = self.pos;
        if bytes.get(at) == Some(&b'-') {
            at += 1;
        }
        let int = digits(at);
        if int == 0 || int > SCAN_DIGITS || (int > 1 && bytes[at] == b'0') {
            return Err(Bail);
        }
        at += int;
        if bytes.get(at) == Some(&b'.') {
            let frac = digits(at + 1);
            if frac == 0 {
                return Err(Bail);
            }
            at += 1 + frac;
        }
        // An exponent is not consumed: the container after the number bails on it.
        self.pos = at;
        Ok(())
    }

    /// Reads an object field by field: `field` is called with each key and must consume its
    /// value (with [`Scan::skip`], [`Scan::leaf`], [`Scan::pick`] or [`Scan::object`]).
    ///
    /// # Errors
    /// [`Bail`] when the next value is not an object, or from `field`.
    pub fn object(
        &mut self,
        mut field: impl FnMut(&'a str, &mut Self) -> Result<(), Bail>,
    ) -> Result<(), Bail> {
        self.container(b'{', b'}', |s| {
            if s.peek() != Some(b'"') {
                return Err(Bail);
            }
            let key = s.string()?;
            s.expect(b':')?;
            field(key, s)
        })
    }

    /// An object or an array: `open`, then `element` for each comma-separated element, then
    /// `close`; nesting beyond [`SCAN_DEPTH`] bails.
    fn container(
        &mut self,
        open: u8,
        close: u8,
        mut element: impl FnMut(&mut Self) -> Result<(), Bail>,
    ) -> Result<(), Bail> {
        self.expect(open)?;
        self.depth += 1;
        if self.depth > SCAN_DEPTH {
            return Err(Bail);
        }
        if self.peek() == Some(close) {
            self.pos += 1;
        } else {
            loop {
                element(self)?;
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(c) if c == close => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(Bail),
                }
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// Skips one value, validating it.
    ///
    /// # Errors
    /// [`Bail`] for what the scan leaves to `serde_json`.
    pub fn skip(&mut self) -> Result<(), Bail> {
        match self.peek() {
            Some(b'{') => self.object(|_, s| s.skip()),
            Some(b'[') => self.container(b'[', b']', Self::skip),
            Some(b'"') => self.string().map(drop),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(Bail),
        }
    }

    /// One value as a [`Leaf`]: a string, a boolean, or [`Leaf::Other`] for null, objects and
    /// arrays (skipped).
    ///
    /// # Errors
    /// [`Bail`] for a number ([`Leaf::Num`] is left to `serde_json`, which writes it) and for
    /// what [`Scan::skip`] bails on.
    pub fn leaf(&mut self) -> Result<Leaf<'a>, Bail> {
        match self.peek() {
            Some(b'"') => self.string().map(|s| Leaf::Str(Cow::Borrowed(s))),
            Some(b't') => self.literal("true").map(|()| Leaf::Bool(true)),
            Some(b'f') => self.literal("false").map(|()| Leaf::Bool(false)),
            Some(b'n' | b'{' | b'[') => self.skip().map(|()| Leaf::Other),
            _ => Err(Bail),
        }
    }

    /// A nested object's fields named by `pick` (as [`Pick`] reads them); any other value
    /// gives no fields.
    ///
    /// # Errors
    /// [`Bail`] as [`Scan::leaf`] and [`Scan::skip`].
    pub fn pick(&mut self, pick: Pick) -> Result<Obj<'a>, Bail> {
        let mut obj = pick.empty();
        if self.at_object() {
            self.object(|key, s| match pick.0.iter().position(|w| *w == key) {
                Some(i) => {
                    obj.values[i] = s.leaf()?;
                    Ok(())
                }
                None => s.skip(),
            })?;
        } else {
            self.skip()?;
        }
        Ok(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time search against a plain one, on strings with every kind of byte at
    /// every position of a word and after it.
    #[test]
    fn string_stop_finds_the_first_stop_byte() {
        let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        let fillers = [
            b'a', b' ', b'~', 0x7f, 0x80, 0xc3, 0xff, b'!', b'#', b'[', b']', 0x21,
        ];
        let stops = [b'"', b'\\', 0x00, 0x01, 0x1f, b'\n'];
        for len in 0..40 {
            for filler in fillers {
                let plain = vec![filler; len];
                assert_eq!(string_stop(&plain), naive(&plain), "{plain:?}");
                for at in 0..len {
                    for stop in stops {
                        let mut b = plain.clone();
                        b[at] = stop;
                        // A second stop later must not hide the first.
                        if at + 3 < len {
                            b[at + 3] = b'"';
                        }
                        assert_eq!(string_stop(&b), naive(&b), "{b:?}");
                    }
                }
            }
        }
    }
}
