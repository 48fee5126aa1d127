//! The message body, kept as raw JSON.
//!
//! Upstream peers put JSON documents in `content` both as nested values and as JSON *strings*
//! (a pod status patch arrives as `"content":"{\"metadata\":…}"`). Go's `GetContentData()` hides
//! that: a string yields its bytes, anything else is marshalled. [`Content`] keeps the exact text
//! it was decoded from (shared, so forwarding a message to a group does not copy it) and offers
//! the same tolerance through [`Content::data`] and [`Content::decode`].

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::DecodeError;

/// A message's `content`: any JSON value, stored as its raw text.
#[derive(Clone)]
pub struct Content(Arc<RawValue>);

impl Content {
    /// The JSON `null` (what a message without content carries).
    pub fn null() -> Self {
        Self::from_raw_box(RawValue::NULL.to_owned())
    }

    /// A JSON string, e.g. `"OK"` for ACKs or `"ping"` for keepalives.
    pub fn string(s: &str) -> Self {
        // Serialising a &str cannot fail.
        Self::from_raw_box(serde_json::value::to_raw_value(s).unwrap_or_else(|_| RawValue::NULL.to_owned()))
    }

    /// Encodes a value as nested JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(Self::from_raw_box)
    }

    /// A JSON value as nested JSON. Infallible: a [`serde_json::Value`] always serialises (its
    /// keys are strings, its numbers finite).
    pub fn from_value(value: &serde_json::Value) -> Self {
        Self::json(value).unwrap_or_else(|_| Self::null())
    }

    /// Encodes a value as a JSON document inside a JSON string, as upstream edged does for
    /// `podpatch` and `nodepatch`.
    pub fn json_string<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        let inner = serde_json::to_string(value)?;
        Ok(Self::string(&inner))
    }

    /// Wraps raw JSON text after checking that it is one valid JSON value.
    pub fn from_raw_json(json: impl Into<String>) -> Result<Self, serde_json::Error> {
        RawValue::from_string(json.into()).map(Self::from_raw_box)
    }

    fn from_raw_box(raw: Box<RawValue>) -> Self {
        Self(Arc::from(raw))
    }

    /// The raw JSON text, exactly as received or encoded.
    pub fn raw(&self) -> &str {
        self.0.get()
    }

    /// Whether the content is JSON `null`.
    pub fn is_null(&self) -> bool {
        self.raw() == "null"
    }

    /// Whether the content is a JSON string (possibly holding a JSON document).
    pub fn is_string(&self) -> bool {
        self.raw().starts_with('"')
    }

    /// The string value, when the content is a JSON string.
    pub fn as_str(&self) -> Option<Cow<'_, str>> {
        if !self.is_string() {
            return None;
        }
        // A string without escapes can be borrowed straight from the raw text.
        match serde_json::from_str::<&str>(self.raw()) {
            Ok(s) => Some(Cow::Borrowed(s)),
            Err(_) => serde_json::from_str::<String>(self.raw()).ok().map(Cow::Owned),
        }
    }

    /// Upstream's `GetContentData()`: a string yields its (unescaped) bytes, any other value
    /// its JSON text.
    pub fn data(&self) -> Cow<'_, [u8]> {
        match self.as_str() {
            Some(Cow::Borrowed(s)) => Cow::Borrowed(s.as_bytes()),
            Some(Cow::Owned(s)) => Cow::Owned(s.into_bytes()),
            None => Cow::Borrowed(self.raw().as_bytes()),
        }
    }

    /// Decodes the content into `T`, accepting both a nested JSON value and a JSON document
    /// carried inside a JSON string (the bytes of [`Content::data`], as upstream consumers do).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        serde_json::from_slice(&self.data()).map_err(DecodeError::from_json)
    }

    /// The number of bytes of raw JSON.
    pub fn len(&self) -> usize {
        self.raw().len()
    }

    /// Whether the raw JSON text is empty (never true for decoded content).
    pub fn is_empty(&self) -> bool {
        self.raw().is_empty()
    }
}

impl Default for Content {
    fn default() -> Self {
        Self::null()
    }
}

impl PartialEq for Content {
    /// Compares the raw text: two encodings of one value with different spacing are not equal.
    fn eq(&self, other: &Self) -> bool {
        self.raw() == other.raw()
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 256;
        let raw = self.raw();
        if raw.len() <= MAX {
            write!(f, "Content({raw})")
        } else {
            let mut end = MAX;
            while !raw.is_char_boundary(end) {
                end -= 1;
            }
            write!(f, "Content({}… {} bytes)", &raw[..end], raw.len())
        }
    }
}

impl Serialize for Content {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Self::from_raw_box)
    }
}

impl From<&str> for Content {
    fn from(s: &str) -> Self {
        Self::string(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Serialize, Debug, PartialEq)]
    struct Patch {
        status: String,
    }

    #[test]
    fn decodes_nested_and_string_forms_alike() {
        let nested = Content::from_raw_json(r#"{"status":"Running"}"#).unwrap();
        let stringly = Content::from_raw_json(r#""{\"status\":\"Running\"}""#).unwrap();
        let want = Patch { status: "Running".into() };
        assert_eq!(nested.decode::<Patch>().unwrap(), want);
        assert_eq!(stringly.decode::<Patch>().unwrap(), want);
        assert_eq!(&*stringly.data(), br#"{"status":"Running"}"#);
        assert_eq!(&*nested.data(), br#"{"status":"Running"}"#);
    }

    #[test]
    fn strings_and_null() {
        let ok = Content::string("OK");
        assert_eq!(ok.raw(), r#""OK""#);
        assert_eq!(ok.as_str().as_deref(), Some("OK"));
        assert!(Content::null().is_null());
        assert_eq!(Content::default().raw(), "null");
        let escaped = Content::string("a\"b\n");
        assert_eq!(escaped.as_str().as_deref(), Some("a\"b\n"));
        assert!(Content::from_raw_json("{}").unwrap().as_str().is_none());
    }

    #[test]
    fn json_string_round_trips() {
        let c = Content::json_string(&Patch { status: "x".into() }).unwrap();
        assert!(c.is_string());
        assert_eq!(c.decode::<Patch>().unwrap().status, "x");
    }

    #[test]
    fn wrong_shape_is_a_typed_error() {
        let c = Content::from_raw_json(r#"{"status":5}"#).unwrap();
        assert!(matches!(c.decode::<Patch>(), Err(DecodeError::Shape { .. })));
        let c = Content::string("not json");
        assert!(matches!(c.decode::<Patch>(), Err(DecodeError::Syntax { .. })));
        assert!(Content::from_raw_json("{").is_err());
    }

    #[test]
    fn debug_is_bounded() {
        let big = Content::string(&"é".repeat(1000));
        let s = format!("{big:?}");
        assert!(s.len() < 400, "{}", s.len());
    }
}
