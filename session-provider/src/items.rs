//! A session's items: a map of names to typed values, serialized once per request.
//!
//! **Format in the grid.** One UTF-8 JSON object, one member per item (`{"cart":[1,2],
//! "user":"ann"}`), so other languages and `gridctl get` can read it. Its size is bounded
//! by the grid's value limit (`grid-node --max-value-bytes`, 16 MiB by default); a larger
//! session fails its write-back with a `TooLarge` error naming both sizes. An empty byte
//! string (an uninitialized item) reads as no items.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

/// An item could not be stored or read as the type asked for.
#[derive(Debug, Error)]
pub enum ItemsError {
    /// The value could not be turned into JSON.
    #[error("session item '{name}' cannot be stored: {reason}")]
    Encode {
        /// The item.
        name: String,
        /// Why.
        reason: String,
    },
    /// The stored value is not of the type asked for.
    #[error("session item '{name}' is not of the type asked for: {reason}")]
    Decode {
        /// The item.
        name: String,
        /// Why.
        reason: String,
    },
    /// The stored session is not a JSON object.
    #[error("stored session state is not a JSON object: {0}")]
    Corrupt(String),
}

/// The items of one session, with a record of whether they changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionItems {
    items: BTreeMap<String, Value>,
    dirty: bool,
}

impl SessionItems {
    /// Items read from their stored bytes; unchanged so far.
    pub fn decode(bytes: &[u8]) -> Result<Self, ItemsError> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        let items =
            serde_json::from_slice(bytes).map_err(|e| ItemsError::Corrupt(e.to_string()))?;
        Ok(Self {
            items,
            dirty: false,
        })
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        // A map of JSON values always serializes.
        serde_json::to_vec(&self.items).unwrap_or_else(|e| panic!("session items encode: {e}"))
    }

    /// The item `name` as a `T`, if present.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ItemsError> {
        self.items
            .get(name)
            .map(|v| {
                T::deserialize(v).map_err(|e| ItemsError::Decode {
                    name: name.to_string(),
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    /// Sets the item `name`; marks the session changed if the value differs.
    pub fn set<T: Serialize>(&mut self, name: &str, value: &T) -> Result<(), ItemsError> {
        let value = serde_json::to_value(value).map_err(|e| ItemsError::Encode {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
        if self.items.get(name) != Some(&value) {
            self.items.insert(name.to_string(), value);
            self.dirty = true;
        }
        Ok(())
    }

    /// Removes the item `name`, if present.
    pub fn remove(&mut self, name: &str) {
        if self.items.remove(name).is_some() {
            self.dirty = true;
        }
    }

    /// Removes every item.
    pub fn clear(&mut self) {
        if !self.items.is_empty() {
            self.items.clear();
            self.dirty = true;
        }
    }

    /// Item names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.items.keys().map(String::as_str)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True without items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// True if anything changed since decoding (or creation).
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tracks_changes() {
        let mut items = SessionItems::default();
        assert!(!items.is_dirty());
        items.set("counter", &3u32).unwrap();
        items.set("cart", &vec!["a", "b"]).unwrap();
        assert!(items.is_dirty());
        let bytes = items.encode();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"cart":["a","b"],"counter":3}"#
        );
        let mut back = SessionItems::decode(&bytes).unwrap();
        assert!(!back.is_dirty());
        assert_eq!(back.get::<u32>("counter").unwrap(), Some(3));
        back.set("counter", &3u32).unwrap();
        assert!(!back.is_dirty(), "setting the same value changes nothing");
        back.remove("missing");
        assert!(!back.is_dirty());
        back.remove("cart");
        assert!(back.is_dirty());
    }

    #[test]
    fn wrong_types_and_corrupt_bytes_are_errors() {
        let items = SessionItems::decode(br#"{"n":"text"}"#).unwrap();
        let err = items.get::<u32>("n").unwrap_err().to_string();
        assert!(err.contains("'n'"), "{err}");
        assert!(SessionItems::decode(b"[1,2]").is_err());
        assert!(SessionItems::decode(b"").unwrap().is_empty());
    }
}
