//! How one session item's bytes are kept in the grid: its JSON, compressed when that is
//! worth it.
//!
//! ```text
//! 0x00 | JSON                          (below the threshold, or not smaller compressed)
//! 0x01 | original length: u32 LE | LZ4 block of the JSON
//! ```
//!
//! LZ4 (the `lz4_flex` crate) was chosen by measurement for speed: every request that
//! changes a large item compresses it on the web server (see `bench/RESULTS.md`).

use thiserror::Error;

/// Items whose JSON is at least this long are compressed (when that makes them smaller).
pub const COMPRESS_FROM_BYTES: usize = 1024;
/// Longest JSON an item may hold (`SessionItems::set` refuses more), and so decompress
/// to: bounds what a damaged length can allocate.
pub const MAX_ITEM_BYTES: usize = 64 * 1024 * 1024;

const PLAIN: u8 = 0;
const LZ4: u8 = 1;

/// Stored item bytes that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct CodecError(String);

/// The stored form of an item's JSON.
pub fn encode(json: &[u8]) -> Vec<u8> {
    if json.len() >= COMPRESS_FROM_BYTES {
        let packed = lz4_flex::block::compress(json);
        if packed.len() + 4 < json.len() {
            let mut out = Vec::with_capacity(5 + packed.len());
            out.push(LZ4);
            out.extend_from_slice(&(json.len() as u32).to_le_bytes());
            out.extend_from_slice(&packed);
            return out;
        }
    }
    let mut out = Vec::with_capacity(1 + json.len());
    out.push(PLAIN);
    out.extend_from_slice(json);
    out
}

/// The JSON of a stored item.
pub fn decode(stored: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, CodecError> {
    match stored.split_first() {
        Some((&PLAIN, json)) => Ok(json.into()),
        Some((&LZ4, rest)) if rest.len() >= 4 => {
            let (len, packed) = rest.split_at(4);
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            if len > MAX_ITEM_BYTES {
                return Err(CodecError(format!("a compressed item claims {len} bytes")));
            }
            lz4_flex::block::decompress(packed, len)
                .map(Into::into)
                .map_err(|e| CodecError(format!("a compressed item is damaged: {e}")))
        }
        Some((kind, _)) => Err(CodecError(format!("unknown item encoding {kind:#04x}"))),
        None => Err(CodecError("an item has no bytes".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_items_stay_plain_and_large_ones_shrink() {
        let small = br#"{"a":1}"#;
        assert_eq!(encode(small)[0], PLAIN);
        assert_eq!(decode(&encode(small)).unwrap().as_ref(), small);
        let large = serde_json::to_vec(&vec!["the same words again"; 500]).unwrap();
        let stored = encode(&large);
        assert_eq!(stored[0], LZ4);
        assert!(
            stored.len() < large.len() / 4,
            "{} of {}",
            stored.len(),
            large.len()
        );
        assert_eq!(decode(&stored).unwrap().as_ref(), &large[..]);
    }

    #[test]
    fn damaged_items_are_errors() {
        let large = serde_json::to_vec(&vec!["x"; 2000]).unwrap();
        let mut stored = encode(&large);
        stored.truncate(stored.len() / 2);
        assert!(decode(&stored).is_err());
        assert!(decode(&[LZ4, 0xff, 0xff, 0xff, 0xff, 0]).is_err());
        assert!(decode(&[7, 1]).is_err());
        assert!(decode(&[]).is_err());
    }
}
