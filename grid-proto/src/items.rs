//! The item map: an object value made of named items, so that a write can change some
//! items and leave the others as they are ([`crate::msg::WriteBody::Items`]). The session
//! provider keeps each session as one item map; the node merges a request's changes into
//! it in the same replicated step that releases the session's lock.
//!
//! **Format** (owned here, version 1; every byte is checked on decode):
//!
//! ```text
//! "GIM" 0x01 | count: u32 LE | count × ( name_len: u16 LE | name: UTF-8 | value_len: u32 LE | value )
//! ```
//!
//! Items are sorted by name and names are unique, so equal maps have equal bytes. An
//! empty value (an object created uninitialized) reads as the empty map.

use rkyv::{Archive, Deserialize, Serialize};
use serde::{Deserialize as SerdeDeserialize, Serialize as SerdeSerialize};
use thiserror::Error;

/// The first bytes of an item map, its format version included.
pub const MAGIC: [u8; 4] = *b"GIM\x01";
/// Longest item name, in bytes.
pub const MAX_ITEM_NAME_BYTES: usize = 1024;

/// One named item.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, SerdeSerialize, SerdeDeserialize,
)]
pub struct Item {
    /// Its name, unique in the map.
    pub name: String,
    /// Its bytes, opaque to the grid.
    pub value: Vec<u8>,
}

/// Changes to an item map, applied in this order: `clear`, then `remove`, then `set`.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Debug,
    Clone,
    PartialEq,
    Eq,
    Default,
    SerdeSerialize,
    SerdeDeserialize,
)]
pub struct ItemChanges {
    /// Remove every item first.
    pub clear: bool,
    /// Items to remove (absent names are ignored).
    pub remove: Vec<String>,
    /// Items to add or replace; of two with one name, the later wins.
    pub set: Vec<Item>,
}

impl ItemChanges {
    /// The bytes of item values it carries.
    pub fn value_len(&self) -> usize {
        self.set.iter().map(|i| i.value.len()).sum()
    }

    /// True if it changes nothing.
    pub fn is_empty(&self) -> bool {
        !self.clear && self.remove.is_empty() && self.set.is_empty()
    }
}

/// Bytes that are not an item map, or changes that cannot make one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ItemMapError {
    /// The value is not an item map (it was written whole, or is damaged).
    #[error("the object's value is not an item map: {0}")]
    NotAnItemMap(String),
    /// An item name is empty, too long, or not unique.
    #[error("item name {0}")]
    BadName(String),
}

fn not_map(reason: impl Into<String>) -> ItemMapError {
    ItemMapError::NotAnItemMap(reason.into())
}

/// Checks an item name against the limits.
pub fn check_name(name: &str) -> Result<(), ItemMapError> {
    if name.is_empty() {
        return Err(ItemMapError::BadName("is empty".into()));
    }
    if name.len() > MAX_ITEM_NAME_BYTES {
        return Err(ItemMapError::BadName(format!(
            "is {} bytes; the limit is {MAX_ITEM_NAME_BYTES}",
            name.len()
        )));
    }
    Ok(())
}

/// True if `bytes` start as an item map (or are empty).
pub fn is_item_map(bytes: &[u8]) -> bool {
    bytes.is_empty() || bytes.starts_with(&MAGIC)
}

/// Encodes items given in strictly ascending name order.
pub fn encode<'a>(items: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let items: Vec<(&str, &[u8])> = items.into_iter().collect();
    let size: usize = items.iter().map(|(n, v)| 6 + n.len() + v.len()).sum();
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + size);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for (name, value) in items {
        debug_assert!(name.len() <= MAX_ITEM_NAME_BYTES);
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// Reads an item map, borrowing its names and values, in name order.
pub fn decode(bytes: &[u8]) -> Result<Vec<(&str, &[u8])>, ItemMapError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let rest = bytes
        .strip_prefix(&MAGIC)
        .ok_or_else(|| not_map("it does not start with the item map's mark"))?;
    let mut reader = Reader(rest);
    let count = u32::from_le_bytes(reader.take(4)?.try_into().unwrap_or_default());
    // Each item takes at least 6 bytes: a count beyond that is a lie, not an allocation.
    if count as usize > reader.0.len() / 6 {
        return Err(not_map(format!("{count} items cannot fit its length")));
    }
    let mut items: Vec<(&str, &[u8])> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let name_len = u16::from_le_bytes(reader.take(2)?.try_into().unwrap_or_default());
        let name = std::str::from_utf8(reader.take(name_len.into())?)
            .map_err(|_| not_map("an item name is not UTF-8"))?;
        check_name(name).map_err(|e| not_map(e.to_string()))?;
        let value_len = u32::from_le_bytes(reader.take(4)?.try_into().unwrap_or_default());
        let value = reader.take(value_len as usize)?;
        if items.last().is_some_and(|(last, _)| *last >= name) {
            return Err(not_map("item names are not in strictly ascending order"));
        }
        items.push((name, value));
    }
    if !reader.0.is_empty() {
        return Err(not_map("bytes follow the last item"));
    }
    Ok(items)
}

/// The item map `current` with `changes` applied.
pub fn apply(current: &[u8], changes: &ItemChanges) -> Result<Vec<u8>, ItemMapError> {
    let mut items: std::collections::BTreeMap<&str, &[u8]> = if changes.clear {
        // Still checked: a whole-value object must not turn into a map by accident.
        decode(current)?;
        Default::default()
    } else {
        decode(current)?.into_iter().collect()
    };
    for name in &changes.remove {
        items.remove(name.as_str());
    }
    for item in &changes.set {
        check_name(&item.name)?;
        items.insert(&item.name, &item.value);
    }
    Ok(encode(items))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ItemMapError> {
        if self.0.len() < n {
            return Err(not_map("it ends inside an item"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, value: &[u8]) -> Item {
        Item {
            name: name.into(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn changes_merge_per_item() {
        let start = apply(
            &[],
            &ItemChanges {
                set: vec![set("b", b"2"), set("a", b"1"), set("c", b"3")],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            decode(&start).unwrap(),
            vec![("a", &b"1"[..]), ("b", b"2"), ("c", b"3")]
        );
        let next = apply(
            &start,
            &ItemChanges {
                remove: vec!["a".into(), "missing".into()],
                set: vec![set("b", b"two"), set("b", b"TWO")],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            decode(&next).unwrap(),
            vec![("b", &b"TWO"[..]), ("c", b"3")]
        );
        let cleared = apply(
            &next,
            &ItemChanges {
                clear: true,
                set: vec![set("z", b"")],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(decode(&cleared).unwrap(), vec![("z", &b""[..])]);
    }

    #[test]
    fn foreign_or_damaged_bytes_are_refused() {
        let changes = ItemChanges::default();
        assert!(matches!(
            apply(br#"{"a":1}"#, &changes),
            Err(ItemMapError::NotAnItemMap(_))
        ));
        let good = encode([("a", &b"1"[..]), ("b", b"2")]);
        for cut in 4..good.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_err());
        let unsorted = encode([("b", &b"2"[..]), ("a", b"1")]);
        assert!(decode(&unsorted).is_err());
        let mut huge_count = MAGIC.to_vec();
        huge_count.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge_count).is_err());
        assert!(apply(
            &good,
            &ItemChanges {
                set: vec![set("", b"x")],
                ..Default::default()
            }
        )
        .is_err());
    }
}
