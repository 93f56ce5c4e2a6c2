//! A session's items: a map of names to typed values, with a record of what changed, so
//! that a request writes back only the items it changed.
//!
//! **Format in the grid.** An item map (`grid_proto::items`): one entry per item, its
//! JSON kept as `codec` describes (compressed from 1 KiB). The session's tags travel
//! with it as the reserved item `\u{1}tags` (a JSON array), so a request knows them
//! without another round trip; handlers cannot name an item so. A session stored by an
//! earlier release as one JSON object (`{"cart":[1,2]}`) still reads; its next write-back
//! stores it as an item map. An empty value (an uninitialized item) reads as no items.
//!
//! Items are decoded when first asked for, not when the session is read: a request that
//! touches one item of a large session parses only that item.

use std::collections::{BTreeMap, BTreeSet};

use grid_proto::items::{self as item_map, Item, ItemChanges};
use grid_proto::limits::{validate_tag, MAX_TAGS};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

use crate::codec;

/// The reserved item holding the session's tags.
const TAGS_ITEM: &str = "\u{1}tags";

/// An item could not be stored or read as the type asked for.
#[derive(Debug, Error)]
pub enum ItemsError {
    /// The value could not be turned into JSON, or the name is reserved.
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
    /// The stored session is neither an item map nor a JSON object.
    #[error("stored session state is unreadable: {0}")]
    Corrupt(String),
    /// A tag is out of bounds, or the session has as many as it may carry.
    #[error("session tag '{tag}': {reason}")]
    Tag {
        /// The tag.
        tag: String,
        /// Why.
        reason: String,
    },
}

/// One item: as read from the grid (not decoded yet), or as set by this request.
#[derive(Debug, Clone)]
enum Slot {
    Stored(Vec<u8>),
    Live(Value),
}

impl Slot {
    fn value(&self, name: &str) -> Result<Value, ItemsError> {
        match self {
            Slot::Live(value) => Ok(value.clone()),
            Slot::Stored(bytes) => decode_stored(name, bytes),
        }
    }

    fn stored(&self) -> Vec<u8> {
        match self {
            Slot::Stored(bytes) => bytes.clone(),
            Slot::Live(value) => codec::encode(&to_json(value)),
        }
    }
}

fn to_json(value: &Value) -> Vec<u8> {
    // A JSON value always serializes.
    serde_json::to_vec(value).unwrap_or_else(|e| panic!("session item encode: {e}"))
}

fn decode_stored<T: DeserializeOwned>(name: &str, bytes: &[u8]) -> Result<T, ItemsError> {
    let decode = |reason: String| ItemsError::Decode {
        name: name.to_string(),
        reason,
    };
    let json = codec::decode(bytes).map_err(|e| decode(e.to_string()))?;
    serde_json::from_slice(&json).map_err(|e| decode(e.to_string()))
}

/// What changed since the items were read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Changes {
    /// Every item was removed first.
    cleared: bool,
    set: BTreeSet<String>,
    removed: BTreeSet<String>,
    tags: bool,
}

/// The items of one session, its tags, and a record of what changed.
#[derive(Debug, Clone, Default)]
pub struct SessionItems {
    items: BTreeMap<String, Slot>,
    tags: BTreeSet<String>,
    changes: Changes,
    /// Read from the single-JSON form: the next write-back stores every item.
    legacy: bool,
    /// The version of the session these items were read at, under the caller's lock.
    read_version: Option<u64>,
}

impl PartialEq for SessionItems {
    fn eq(&self, other: &Self) -> bool {
        self.tags == other.tags && self.to_json() == other.to_json()
    }
}

fn reserved(name: &str) -> Result<(), ItemsError> {
    if name.starts_with('\u{1}') {
        return Err(ItemsError::Encode {
            name: name.to_string(),
            reason: "names starting with U+0001 are reserved".into(),
        });
    }
    Ok(())
}

impl SessionItems {
    /// Items read from their stored bytes; unchanged so far.
    pub fn decode(bytes: &[u8]) -> Result<Self, ItemsError> {
        if bytes.first() == Some(&b'{') {
            let items: BTreeMap<String, Value> =
                serde_json::from_slice(bytes).map_err(|e| ItemsError::Corrupt(e.to_string()))?;
            for name in items.keys() {
                reserved(name)
                    .map_err(|e| e.to_string())
                    .and_then(|()| item_map::check_name(name).map_err(|e| e.to_string()))
                    .map_err(ItemsError::Corrupt)?;
            }
            return Ok(Self {
                items: items.into_iter().map(|(k, v)| (k, Slot::Live(v))).collect(),
                legacy: true,
                ..Self::default()
            });
        }
        let mut out = Self::default();
        for (name, stored) in
            item_map::decode(bytes).map_err(|e| ItemsError::Corrupt(e.to_string()))?
        {
            if name == TAGS_ITEM {
                out.tags = decode_stored(name, stored)?;
            } else {
                out.items
                    .insert(name.to_string(), Slot::Stored(stored.to_vec()));
            }
        }
        Ok(out)
    }

    /// Records the version the items were read at under a lock, so the write-back can
    /// keep the near cache's copy current.
    pub(crate) fn read_at(mut self, version: u64) -> Self {
        self.read_version = Some(version);
        self
    }

    /// The version recorded by [`SessionItems::read_at`].
    pub(crate) fn read_version(&self) -> Option<u64> {
        self.read_version
    }

    /// True if read from the single-JSON form of an earlier release.
    pub(crate) fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// The whole stored form (an item map).
    pub fn encode(&self) -> Vec<u8> {
        let ItemChanges { set, .. } = self.all();
        item_map::encode(set.iter().map(|i| (i.name.as_str(), i.value.as_slice())))
    }

    /// Every item and the tags, as changes that replace whatever is stored.
    pub fn all(&self) -> ItemChanges {
        let mut set: Vec<Item> = self
            .items
            .iter()
            .map(|(name, slot)| Item {
                name: name.clone(),
                value: slot.stored(),
            })
            .collect();
        if !self.tags.is_empty() {
            set.push(self.tags_item());
        }
        set.sort_by(|a, b| a.name.cmp(&b.name));
        ItemChanges {
            clear: true,
            remove: Vec::new(),
            set,
        }
    }

    /// What changed since decoding, as the item changes a write-back sends: only the
    /// items set or removed (everything, for a session read in the single-JSON form).
    pub fn changes(&self) -> ItemChanges {
        if self.legacy {
            return self.all();
        }
        let mut set: Vec<Item> = self
            .changes
            .set
            .iter()
            .filter_map(|name| {
                Some(Item {
                    name: name.clone(),
                    value: self.items.get(name)?.stored(),
                })
            })
            .collect();
        let mut remove: Vec<String> = self.changes.removed.iter().cloned().collect();
        if self.changes.tags {
            if self.tags.is_empty() {
                remove.push(TAGS_ITEM.to_string());
            } else {
                set.push(self.tags_item());
            }
        }
        ItemChanges {
            clear: self.changes.cleared,
            remove,
            set,
        }
    }

    fn tags_item(&self) -> Item {
        let json = serde_json::to_vec(&self.tags).unwrap_or_default();
        Item {
            name: TAGS_ITEM.to_string(),
            value: codec::encode(&json),
        }
    }

    /// The item `name` as a `T`, if present.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ItemsError> {
        let Some(slot) = self.items.get(name) else {
            return Ok(None);
        };
        let decoded = match slot {
            Slot::Stored(bytes) => decode_stored(name, bytes),
            Slot::Live(v) => T::deserialize(v).map_err(|e| ItemsError::Decode {
                name: name.to_string(),
                reason: e.to_string(),
            }),
        };
        decoded.map(Some)
    }

    /// Sets the item `name`; marks it changed if the value differs.
    pub fn set<T: Serialize>(&mut self, name: &str, value: &T) -> Result<(), ItemsError> {
        reserved(name)?;
        item_map::check_name(name).map_err(|e| ItemsError::Encode {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
        let encode = |reason: String| ItemsError::Encode {
            name: name.to_string(),
            reason,
        };
        let value = serde_json::to_value(value).map_err(|e| encode(e.to_string()))?;
        let same = self
            .items
            .get(name)
            .is_some_and(|slot| slot.value(name).is_ok_and(|old| old == value));
        if !same {
            let json = to_json(&value);
            if json.len() > codec::MAX_ITEM_BYTES {
                return Err(encode(format!(
                    "{} bytes of JSON; an item holds at most {}",
                    json.len(),
                    codec::MAX_ITEM_BYTES
                )));
            }
            // Encoded (and compressed) once, here.
            self.items
                .insert(name.to_string(), Slot::Stored(codec::encode(&json)));
            self.changes.removed.remove(name);
            self.changes.set.insert(name.to_string());
        }
        Ok(())
    }

    /// Removes the item `name`, if present.
    pub fn remove(&mut self, name: &str) {
        if self.items.remove(name).is_some() {
            self.changes.set.remove(name);
            self.changes.removed.insert(name.to_string());
        }
    }

    /// Removes every item (the tags stay).
    pub fn clear(&mut self) {
        if !self.items.is_empty() {
            self.items.clear();
            self.changes.set.clear();
            self.changes.removed.clear();
            self.changes.cleared = true;
            // The tags item went with the rest: send it again if there are tags.
            self.changes.tags |= !self.tags.is_empty();
        }
    }

    /// Adds a tag (at most 8 of at most 64 bytes), e.g. `user:42`.
    pub fn tag(&mut self, tag: &str) -> Result<(), ItemsError> {
        let refuse = |reason: String| ItemsError::Tag {
            tag: tag.to_string(),
            reason,
        };
        validate_tag(tag).map_err(|e| refuse(e.to_string()))?;
        if self.tags.contains(tag) {
            return Ok(());
        }
        if self.tags.len() >= MAX_TAGS {
            return Err(refuse(format!("a session carries at most {MAX_TAGS} tags")));
        }
        self.tags.insert(tag.to_string());
        self.changes.tags = true;
        Ok(())
    }

    /// Removes a tag, if present.
    pub fn untag(&mut self, tag: &str) {
        if self.tags.remove(tag) {
            self.changes.tags = true;
        }
    }

    /// The tags, sorted.
    pub fn tags(&self) -> Vec<String> {
        self.tags.iter().cloned().collect()
    }

    /// True if the tags changed since decoding.
    pub fn tags_changed(&self) -> bool {
        self.changes.tags
    }

    /// Item names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.items.keys().map(String::as_str)
    }

    /// Every item as one JSON object (items that cannot be decoded are left out).
    pub fn to_json(&self) -> serde_json::Map<String, Value> {
        self.items
            .iter()
            .filter_map(|(name, slot)| Some((name.clone(), slot.value(name).ok()?)))
            .collect()
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True without items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// True if anything changed since decoding (or creation), tags included.
    pub fn is_dirty(&self) -> bool {
        self.changes != Changes::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(items: &SessionItems) -> SessionItems {
        SessionItems::decode(&items.encode()).unwrap()
    }

    #[test]
    fn round_trips_and_tracks_changes() {
        let mut items = SessionItems::default();
        assert!(!items.is_dirty());
        items.set("counter", &3u32).unwrap();
        items.set("cart", &vec!["a", "b"]).unwrap();
        items.tag("user:ann").unwrap();
        assert!(items.is_dirty());
        let mut back = stored(&items);
        assert_eq!(back, items);
        assert!(!back.is_dirty());
        assert_eq!(back.get::<u32>("counter").unwrap(), Some(3));
        assert_eq!(back.tags(), vec!["user:ann"]);
        back.set("counter", &3u32).unwrap();
        assert!(!back.is_dirty(), "setting the same value changes nothing");
        back.remove("missing");
        assert!(!back.is_dirty());
        back.remove("cart");
        assert!(back.is_dirty());
    }

    #[test]
    fn a_write_back_carries_only_what_changed() {
        let mut items = SessionItems::default();
        items.set("big", &"x".repeat(100_000)).unwrap();
        items.set("small", &1).unwrap();
        items.set("gone", &2).unwrap();
        let mut back = stored(&items);
        back.set("small", &2).unwrap();
        back.remove("gone");
        let changes = back.changes();
        assert!(!changes.clear);
        assert_eq!(changes.remove, vec!["gone"]);
        assert_eq!(changes.set.len(), 1);
        assert_eq!(changes.set[0].name, "small");
        // The node's merge of the delta gives the same session as writing it whole.
        let merged = item_map::apply(&items.encode(), &changes).unwrap();
        assert_eq!(SessionItems::decode(&merged).unwrap(), back);
    }

    #[test]
    fn tags_travel_as_a_reserved_item_and_are_bounded() {
        let mut items = stored(&SessionItems::default());
        items.tag("user:1").unwrap();
        let changes = items.changes();
        assert_eq!(changes.set[0].name, TAGS_ITEM);
        for n in 2..=MAX_TAGS {
            items.tag(&format!("t{n}")).unwrap();
        }
        assert!(items.tag("one-too-many").is_err());
        assert!(items.tag("").is_err());
        assert!(items.tag(&"t".repeat(65)).is_err());
        assert!(items.set(TAGS_ITEM, &1).is_err());
        items.set("cart", &[1]).unwrap();
        let mut back = stored(&items);
        assert!(back.names().all(|n| n != TAGS_ITEM));
        back.untag("user:1");
        back.clear();
        assert!(back.tags_changed(), "the untag is still sent after clear");
        let changes = back.changes();
        assert!(changes.clear);
        assert!(
            changes.set.iter().any(|i| i.name == TAGS_ITEM),
            "tags survive clear"
        );
    }

    #[test]
    fn the_single_json_form_still_reads_and_is_rewritten_whole() {
        let mut items = SessionItems::decode(br#"{"cart":["a","b"],"counter":3}"#).unwrap();
        assert_eq!(items.get::<u32>("counter").unwrap(), Some(3));
        items.set("counter", &4).unwrap();
        let changes = items.changes();
        assert!(changes.clear);
        assert_eq!(changes.set.len(), 2);
    }

    #[test]
    fn wrong_types_and_corrupt_bytes_are_errors() {
        let mut items = SessionItems::default();
        items.set("n", &"text").unwrap();
        let back = stored(&items);
        let err = back.get::<u32>("n").unwrap_err().to_string();
        assert!(err.contains("'n'"), "{err}");
        assert!(SessionItems::decode(b"[1,2]").is_err());
        // Single-JSON sessions with names an item map cannot hold are refused, not mangled.
        assert!(SessionItems::decode(br#"{"":1}"#).is_err());
        assert!(SessionItems::decode(br#"{"\u0001tags":["x"]}"#).is_err());
        assert!(SessionItems::decode(b"{not json").is_err());
        assert!(SessionItems::decode(b"").unwrap().is_empty());
    }
}
