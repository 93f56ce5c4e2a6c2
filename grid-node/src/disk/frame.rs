//! The bytes of a log segment, pure: its header, its records, and the scan that finds
//! where good records end. No file is touched here.
//!
//! ```text
//! segment = header record*
//! header  = "gridlog\0" (8) | version u16 | first index u64 | xxh3 of the 18 bytes before (8)
//! record  = length u32 (of index + payload) | xxh3 of index + payload (8) | index u64 | payload
//! ```
//!
//! Integers are little-endian. A record is good when it is whole, its checksum matches and
//! its index is the one after the record before it (the header's first index for the
//! first). The scan stops at the first record that is not good: a torn write leaves a
//! short record at the end, a flipped byte a checksum that does not match; either way what
//! follows cannot be trusted, since records are only ever appended.

use std::ops::Range;

use xxhash_rust::xxh3::xxh3_64;

/// The first bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"gridlog\0";
/// The segment format this build writes and reads.
pub const VERSION: u16 = 1;
/// Bytes of a segment header.
pub const HEADER_LEN: usize = 8 + 2 + 8 + 8;
/// Bytes of a record before its index and payload.
pub const RECORD_HEAD_LEN: usize = 4 + 8;
/// The largest record body (index + payload) a segment holds: a larger length field is
/// damage, not a record (the grid's largest value is far below this).
pub const MAX_RECORD_BODY: usize = 256 * 1024 * 1024;

/// A segment header that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than a header.
    Short,
    /// Not a segment of this grid.
    Foreign,
    /// Written by a release with another segment format.
    Version(u16),
    /// The header's checksum does not match.
    Checksum,
}

/// A segment header for a segment whose first record has index `first_index`.
pub fn header(first_index: u64) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..8].copy_from_slice(&MAGIC);
    out[8..10].copy_from_slice(&VERSION.to_le_bytes());
    out[10..18].copy_from_slice(&first_index.to_le_bytes());
    let sum = xxh3_64(&out[..18]);
    out[18..].copy_from_slice(&sum.to_le_bytes());
    out
}

/// The first index a segment's header names.
pub fn read_header(bytes: &[u8]) -> Result<u64, HeaderError> {
    let head = bytes.get(..HEADER_LEN).ok_or(HeaderError::Short)?;
    if head[..8] != MAGIC {
        return Err(HeaderError::Foreign);
    }
    let version = u16::from_le_bytes([head[8], head[9]]);
    if version != VERSION {
        return Err(HeaderError::Version(version));
    }
    if xxh3_64(&head[..18]).to_le_bytes() != head[18..] {
        return Err(HeaderError::Checksum);
    }
    Ok(u64::from_le_bytes(le8(&head[10..18])))
}

/// Whether `bytes`, however short, begin as a segment does (the magic bytes, as far as
/// they go).
pub fn starts_as_segment(bytes: &[u8]) -> bool {
    let n = bytes.len().min(MAGIC.len());
    bytes[..n] == MAGIC[..n]
}

/// Appends the record of entry `index` with `payload` to `out`.
pub fn push_record(out: &mut Vec<u8>, index: u64, payload: &[u8]) {
    let body_len = 8 + payload.len();
    out.reserve(RECORD_HEAD_LEN + body_len);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    let sum_at = out.len();
    out.extend_from_slice(&[0u8; 8]);
    let body_at = out.len();
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(payload);
    let sum = xxh3_64(&out[body_at..]);
    out[sum_at..sum_at + 8].copy_from_slice(&sum.to_le_bytes());
}

/// Bytes the record of a `payload_len`-byte payload takes.
pub fn record_len(payload_len: usize) -> usize {
    RECORD_HEAD_LEN + 8 + payload_len
}

/// A good record found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its entry index.
    pub index: u64,
    /// Where the record starts in the scanned bytes.
    pub offset: usize,
    /// Where its payload is in the scanned bytes.
    pub payload: Range<usize>,
}

/// Why a scan stopped before the end of the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The last record is cut short (a write that did not finish).
    Torn,
    /// A record's checksum does not match its bytes.
    Checksum,
    /// A record's length field is impossible.
    Length(u64),
    /// A record's index is not the one after the record before it.
    OutOfOrder {
        /// The index expected.
        expected: u64,
        /// The index found.
        found: u64,
    },
}

/// What a scan of a segment's records found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The good records, in order.
    pub records: Vec<Found>,
    /// Bytes from the start that hold only good records: where to cut.
    pub good_len: usize,
    /// Why the scan stopped early, if it did.
    pub damage: Option<Damage>,
}

/// Scans `bytes` (a whole segment, header included) for good records, the first of which
/// must have index `first_index`.
pub fn scan(bytes: &[u8], first_index: u64) -> Scan {
    let mut records = Vec::new();
    let mut at = HEADER_LEN.min(bytes.len());
    let mut expected = first_index;
    let damage = loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            break None;
        }
        if rest.len() < RECORD_HEAD_LEN {
            break Some(Damage::Torn);
        }
        let body_len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if !(8..=MAX_RECORD_BODY).contains(&body_len) {
            break Some(Damage::Length(body_len as u64));
        }
        let Some(body) = rest.get(RECORD_HEAD_LEN..RECORD_HEAD_LEN + body_len) else {
            break Some(Damage::Torn);
        };
        if xxh3_64(body).to_le_bytes() != rest[4..RECORD_HEAD_LEN] {
            break Some(Damage::Checksum);
        }
        let index = u64::from_le_bytes(le8(&body[..8]));
        if index != expected {
            break Some(Damage::OutOfOrder {
                expected,
                found: index,
            });
        }
        let payload_at = at + RECORD_HEAD_LEN + 8;
        records.push(Found {
            index,
            offset: at,
            payload: payload_at..at + RECORD_HEAD_LEN + body_len,
        });
        at += RECORD_HEAD_LEN + body_len;
        expected += 1;
    };
    Scan {
        records,
        good_len: at,
        damage,
    }
}

fn le8(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&bytes[..8]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(first: u64, payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = header(first).to_vec();
        for (i, p) in payloads.iter().enumerate() {
            push_record(&mut out, first + i as u64, p);
        }
        out
    }

    #[test]
    fn a_whole_segment_scans_to_its_end() {
        let bytes = segment(5, &[b"a", b"", b"ccc"]);
        assert_eq!(read_header(&bytes), Ok(5));
        let scan = scan(&bytes, 5);
        assert_eq!(scan.damage, None);
        assert_eq!(scan.good_len, bytes.len());
        let got: Vec<(u64, &[u8])> = scan
            .records
            .iter()
            .map(|r| (r.index, &bytes[r.payload.clone()]))
            .collect();
        assert_eq!(got, vec![(5, &b"a"[..]), (6, &b""[..]), (7, &b"ccc"[..])]);
        assert_eq!(
            bytes.len(),
            HEADER_LEN + record_len(1) + record_len(0) + record_len(3)
        );
    }

    #[test]
    fn every_cut_of_the_last_record_is_torn_and_keeps_the_records_before() {
        let whole = segment(1, &[b"first", b"second"]);
        let second_at = HEADER_LEN + record_len(5);
        for cut in second_at + 1..whole.len() {
            let scan = scan(&whole[..cut], 1);
            assert_eq!(scan.damage, Some(Damage::Torn), "cut at {cut}");
            assert_eq!(scan.good_len, second_at);
            assert_eq!(scan.records.len(), 1);
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_in_a_record_stops_the_scan_before_it() {
        let whole = segment(1, &[b"first", b"second", b"third"]);
        let second_at = HEADER_LEN + record_len(5);
        let third_at = second_at + record_len(6);
        for at in second_at..third_at {
            let mut bytes = whole.clone();
            bytes[at] ^= 0x10;
            let scan = scan(&bytes, 1);
            assert!(scan.damage.is_some(), "flip at {at} went unseen");
            assert_eq!(scan.good_len, second_at, "flip at {at}");
            assert_eq!(scan.records.len(), 1);
        }
    }

    #[test]
    fn a_record_out_of_order_is_damage() {
        let mut bytes = header(1).to_vec();
        push_record(&mut bytes, 1, b"x");
        push_record(&mut bytes, 3, b"y");
        let scan = scan(&bytes, 1);
        assert_eq!(
            scan.damage,
            Some(Damage::OutOfOrder {
                expected: 2,
                found: 3
            })
        );
        assert_eq!(scan.records.len(), 1);
    }

    #[test]
    fn headers_of_other_files_are_refused() {
        let good = header(9);
        assert_eq!(read_header(&good[..10]), Err(HeaderError::Short));
        let mut foreign = good;
        foreign[0] = b'X';
        assert_eq!(read_header(&foreign), Err(HeaderError::Foreign));
        let mut newer = good;
        newer[8] = 2;
        assert_eq!(read_header(&newer), Err(HeaderError::Version(2)));
        let mut flipped = good;
        flipped[12] ^= 1;
        assert_eq!(read_header(&flipped), Err(HeaderError::Checksum));
    }

    #[test]
    fn an_impossible_length_is_damage_not_an_allocation() {
        let mut bytes = header(1).to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 16]);
        let scan = scan(&bytes, 1);
        assert_eq!(scan.damage, Some(Damage::Length(u32::MAX as u64)));
        assert_eq!(scan.good_len, HEADER_LEN);
    }
}
