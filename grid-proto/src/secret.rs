//! Secrets and randomness shared by every plane: token comparison that does not leak
//! where two tokens differ, and random bytes from the operating system's generator.

use ring::rand::{SecureRandom, SystemRandom};

/// True when `given` equals `expected`, in time independent of where they differ; true
/// for anything when no token is expected.
pub fn token_matches(expected: Option<&str>, given: Option<&str>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let (a, b) = (expected.as_bytes(), given.unwrap_or("").as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// `N` random bytes from the operating system's generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // The system generator only fails when the OS has no entropy source at all, where
    // nothing secure can run; refuse loudly rather than hand out predictable bytes.
    SystemRandom::new()
        .fill(&mut out)
        .unwrap_or_else(|_| panic!("the operating system's random generator failed"));
    out
}

/// A random non-zero id (cluster ids, transfer ids).
pub fn random_id() -> u64 {
    u64::from_le_bytes(random_bytes()).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(token_matches(None, None));
        assert!(token_matches(None, Some("anything")));
        assert!(token_matches(Some("s3cret"), Some("s3cret")));
        assert!(!token_matches(Some("s3cret"), Some("s3cre")));
        assert!(!token_matches(Some("s3cret"), Some("s3cret!")));
        assert!(!token_matches(Some("s3cret"), Some("S3cret")));
        assert!(!token_matches(Some("s3cret"), None));
        assert!(!token_matches(Some("a"), Some("")));
    }

    #[test]
    fn random_ids_differ() {
        let ids: std::collections::BTreeSet<u64> = (0..64).map(|_| random_id()).collect();
        assert_eq!(ids.len(), 64);
        assert!(!ids.contains(&0));
    }
}
