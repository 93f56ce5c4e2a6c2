//! Session ids as ASP.NET makes them: 15 random bytes from the operating system's secure
//! generator, written as 24 characters of `a-z` and `0-5` (base 32). An id a client sends
//! that is not of this form is ignored, so nothing unvalidated reaches the grid as a key.

/// Characters of an id.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz012345";
/// Length of an id.
pub const ID_LEN: usize = 24;

/// A new random session id.
pub fn new_id() -> String {
    // Panics if the operating system has no generator: guessable ids would be worse.
    let bytes: [u8; 15] = grid_proto::secret::random_bytes();
    let mut id = String::with_capacity(ID_LEN);
    for chunk in bytes.chunks(5) {
        let n = chunk.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
        for i in (0..8).rev() {
            id.push(ALPHABET[((n >> (i * 5)) & 31) as usize] as char);
        }
    }
    id
}

/// True if `id` has the form of an id this provider issues.
pub fn is_valid(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| ALPHABET.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_and_distinct() {
        let ids: std::collections::BTreeSet<String> = (0..1000).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| is_valid(id)));
    }

    #[test]
    fn foreign_ids_are_refused() {
        for bad in [
            "",
            "short",
            "ABCDEFGHIJKLMNOPQRSTUVWX",
            "abcdefghijklmnopqrstuvw9",
            "../../etc/passwd/xxxxxxx",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
