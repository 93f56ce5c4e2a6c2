//! What a search has placed so far, in a form cheap to compare and remember: a Zobrist
//! fingerprint of the completed ops, and the pending ones one by one and counted by
//! class.

use super::events::NIL;

/// The placed ops: a fingerprint of the completed ones, and the pending ones both one
/// by one and as (class, count) pairs sorted by class.
pub(super) struct Placed {
    pub(super) completed: u128,
    pub(super) pending: Vec<bool>,
    pub(super) profile: Vec<(usize, usize)>,
}

impl Placed {
    /// Places or unplaces `op`, a pending op of `class` unless that is [`NIL`].
    pub(super) fn toggle(&mut self, op: usize, class: usize) {
        if class == NIL {
            let (low, high) = (splitmix64(2 * op as u64), splitmix64(2 * op as u64 + 1));
            self.completed ^= u128::from(high) << 64 | u128::from(low);
            return;
        }
        self.pending[op] = !self.pending[op];
        let at = self
            .profile
            .binary_search_by_key(&class, |&(class, _)| class);
        match at {
            Ok(at) if self.pending[op] => self.profile[at].1 += 1,
            Ok(at) if self.profile[at].1 > 1 => self.profile[at].1 -= 1,
            Ok(at) => {
                self.profile.remove(at);
            }
            Err(at) => self.profile.insert(at, (class, 1)),
        }
    }

    /// True if this has placed at least as many of every class as `earlier`.
    pub(super) fn at_least(&self, earlier: &[(usize, usize)]) -> bool {
        earlier.iter().all(|(class, count)| {
            let at = self
                .profile
                .binary_search_by_key(class, |&(class, _)| class);
            at.is_ok_and(|at| self.profile[at].1 >= *count)
        })
    }
}

/// SplitMix64's output function: a well-mixed 64-bit function of `seed`.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
