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
        match self {
            Leaf::Str(s) => Some(s.as_ref().to_owned()),
            Leaf::Num(n) => Some(n.clone()),
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

    fn empty<'a>(self) -> Obj<'a> {
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
