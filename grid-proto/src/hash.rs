//! Stable key hashing. Placement must agree across builds, processes and versions, so this
//! is an explicit xxh3 over a length-prefixed encoding, never `std::hash::Hash`.

use xxhash_rust::xxh3::Xxh3;

/// Hash of an object's identity: the namespace (length-prefixed, so `("ab","c")` and
/// `("a","bc")` differ) followed by the key bytes.
pub fn key_hash(namespace: &str, key: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    h.update(&(namespace.len() as u32).to_le_bytes());
    h.update(namespace.as_bytes());
    h.update(key);
    h.digest()
}

/// The partition that owns `hash` in a cluster of `partitions` partitions.
///
/// # Panics
/// If `partitions` is zero; a cluster always has at least one partition.
pub fn partition_of(hash: u64, partitions: u32) -> u32 {
    assert!(partitions > 0, "a cluster has at least one partition");
    (hash % u64::from(partitions)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_across_builds() {
        // Pinned values: a change here moves every object to another partition.
        assert_eq!(key_hash("sessions", b"abc"), 0xcd14_5556_1c61_0110);
        assert_eq!(key_hash("ns", b""), 0x56c8_eb4b_963b_08f9);
        assert_ne!(key_hash("ab", b"c"), key_hash("a", b"bc"));
    }

    #[test]
    fn partitions_cover_the_range_evenly() {
        let p = 16;
        let mut counts = vec![0u32; p as usize];
        for i in 0..16_000u32 {
            let key = format!("session-{i}");
            counts[partition_of(key_hash("ns", key.as_bytes()), p) as usize] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven partition count {c}");
        }
    }
}
