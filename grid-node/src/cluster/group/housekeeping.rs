//! A group leader's housekeeping, decided from a snapshot of what is waiting: which
//! commands to propose this round, in which order. [`chores`] is pure; the group
//! proposes them (`PartitionGroup::maintain`).
//!
//! Rules:
//! - not leading: abandon the requests parked here, and nothing else;
//! - a new term: adopt the queue's waiters first (if that fails, the round ends there);
//! - read accesses every [`TOUCH_EVERY_MS`] (a proposal per read, or per tick, would
//!   cost a Raft entry each), and before any tick or eviction, so a tick never expires
//!   an object read before it and an eviction sees the reads;
//! - tick only when a deadline is due; cancelled waits and evictions when there are any;
//! - events only when the outbox has some.

/// How often a leader records the reads it served as accesses (sliding timeouts and
/// least-recently-used eviction), when nothing else needs them sooner.
pub(crate) const TOUCH_EVERY_MS: u64 = 100;

/// What is waiting, as the round starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Waiting {
    /// This node leads the group.
    pub leading: bool,
    /// This node has not adopted the waiters in the current term; the lowest waiter
    /// number to keep.
    pub adoption_due: Option<u64>,
    /// Reads whose accesses are not recorded yet.
    pub accesses: usize,
    /// Accesses were last recorded [`TOUCH_EVERY_MS`] or more ago.
    pub touch_period_over: bool,
    /// A deadline (expiry, lease, lock wait) is due.
    pub deadline_due: bool,
    /// Parked requests whose callers went away.
    pub cancelled: usize,
    /// Value bytes the memory check asked to evict.
    pub evict_bytes: u64,
    /// The outbox holds events.
    pub events: bool,
}

/// One thing the round does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chore {
    /// Fail the requests parked here (leadership is gone).
    Abandon,
    /// Propose `AdoptWaiters` keeping this node's waiters from `min_seq` on.
    Adopt {
        /// The lowest waiter number kept.
        min_seq: u64,
    },
    /// Propose the batched read accesses.
    Touch,
    /// Propose a tick.
    Tick,
    /// Propose the cancelled waits.
    Cancel,
    /// Propose an eviction of `bytes`.
    Evict {
        /// Value bytes to evict.
        bytes: u64,
    },
    /// Hand outbox events to clients and propose the acknowledged ones.
    Events,
}

/// The round's chores, in order.
pub(super) fn chores(w: Waiting) -> Vec<Chore> {
    if !w.leading {
        return vec![Chore::Abandon];
    }
    let mut out = Vec::new();
    if let Some(min_seq) = w.adoption_due {
        out.push(Chore::Adopt { min_seq });
    }
    if w.accesses > 0 && (w.touch_period_over || w.deadline_due || w.evict_bytes > 0) {
        out.push(Chore::Touch);
    }
    if w.deadline_due {
        out.push(Chore::Tick);
    }
    if w.cancelled > 0 {
        out.push(Chore::Cancel);
    }
    if w.evict_bytes > 0 {
        out.push(Chore::Evict {
            bytes: w.evict_bytes,
        });
    }
    if w.events {
        out.push(Chore::Events);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leading() -> Waiting {
        Waiting {
            leading: true,
            ..Waiting::default()
        }
    }

    #[test]
    fn each_rule_gives_its_chores() {
        let everything = Waiting {
            leading: true,
            adoption_due: Some(7),
            accesses: 3,
            touch_period_over: true,
            deadline_due: true,
            cancelled: 1,
            evict_bytes: 4096,
            events: true,
        };
        let table: Vec<(&str, Waiting, Vec<Chore>)> = vec![
            (
                "a follower only abandons",
                Waiting {
                    leading: false,
                    ..everything
                },
                vec![Chore::Abandon],
            ),
            ("a quiet leader does nothing", leading(), vec![]),
            (
                "everything, adoption first and accesses before the tick",
                everything,
                vec![
                    Chore::Adopt { min_seq: 7 },
                    Chore::Touch,
                    Chore::Tick,
                    Chore::Cancel,
                    Chore::Evict { bytes: 4096 },
                    Chore::Events,
                ],
            ),
            (
                "a due deadline ticks",
                Waiting {
                    deadline_due: true,
                    ..leading()
                },
                vec![Chore::Tick],
            ),
            (
                "reads wait for the touch period",
                Waiting {
                    accesses: 5,
                    ..leading()
                },
                vec![],
            ),
            (
                "reads are recorded once the period is over",
                Waiting {
                    accesses: 5,
                    touch_period_over: true,
                    ..leading()
                },
                vec![Chore::Touch],
            ),
            (
                "a due deadline takes the reads with it, before the tick",
                Waiting {
                    accesses: 5,
                    deadline_due: true,
                    ..leading()
                },
                vec![Chore::Touch, Chore::Tick],
            ),
            (
                "an eviction takes the reads with it, before evicting",
                Waiting {
                    accesses: 5,
                    evict_bytes: 10,
                    ..leading()
                },
                vec![Chore::Touch, Chore::Evict { bytes: 10 }],
            ),
            (
                "events alone",
                Waiting {
                    events: true,
                    ..leading()
                },
                vec![Chore::Events],
            ),
            (
                "a new term with nothing else adopts",
                Waiting {
                    adoption_due: Some(0),
                    ..leading()
                },
                vec![Chore::Adopt { min_seq: 0 }],
            ),
        ];
        for (rule, waiting, want) in table {
            assert_eq!(chores(waiting), want, "{rule}");
        }
    }
}
