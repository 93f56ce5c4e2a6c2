//! Events a partition owes to registered clients: objects that expired or were evicted,
//! with their final bytes, kept in the replicated state until a client acknowledges them.
//! Because the outbox is part of the partition (and of its snapshots), a new leader after
//! a failover still has every unacknowledged event and delivers it again, with the same
//! id: delivery is at least once.
//!
//! Bounded twice, so a namespace nobody listens to cannot grow it without end: an event
//! older than [`EVENT_RETENTION_MS`] is dropped at the next tick, and past
//! [`MAX_PENDING_EVENTS`] the oldest goes first. Both are counted.

use std::collections::BTreeMap;

use grid_proto::{EventCause, Millis, ObjKey};
use serde::{Deserialize, Serialize};

/// How long an event waits for an acknowledgement before it is dropped.
pub const EVENT_RETENTION_MS: Millis = 5 * 60 * 1000;
/// Most events one partition keeps waiting.
pub const MAX_PENDING_EVENTS: usize = 10_000;

/// One event waiting for its acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEvent {
    /// Why the object left.
    pub cause: EventCause,
    /// The object.
    pub obj: ObjKey,
    /// Its final bytes.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Its final version.
    pub version: u64,
    /// When it left, by the leader's clock.
    pub at: Millis,
}

/// The unacknowledged events of one partition, by event number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbox {
    events: BTreeMap<u64, PendingEvent>,
    /// Last event number handed out.
    last_seq: u64,
    /// Events dropped unacknowledged (retention or capacity).
    dropped: u64,
}

fn bytes_of(event: &PendingEvent) -> u64 {
    event.value.len() as u64
}

impl Outbox {
    /// Files an event and returns its number.
    pub fn push(&mut self, event: PendingEvent) -> u64 {
        self.last_seq += 1;
        self.events.insert(self.last_seq, event);
        while self.events.len() > MAX_PENDING_EVENTS {
            self.events.pop_first();
            self.dropped += 1;
        }
        self.last_seq
    }

    /// Forgets acknowledged events; unknown numbers are ignored (acknowledged already).
    pub fn ack(&mut self, seqs: &[u64]) {
        for seq in seqs {
            self.events.remove(seq);
        }
    }

    /// Drops events older than the retention at `now`.
    pub fn expire(&mut self, now: Millis) {
        while let Some(entry) = self.events.first_entry() {
            if entry.get().at.saturating_add(EVENT_RETENTION_MS) > now {
                break;
            }
            entry.remove();
            self.dropped += 1;
        }
    }

    /// When the oldest event reaches the end of its retention.
    pub fn next_deadline(&self) -> Option<Millis> {
        let (_, first) = self.events.first_key_value()?;
        Some(first.at.saturating_add(EVENT_RETENTION_MS))
    }

    /// The waiting events, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &PendingEvent)> {
        self.events.iter().map(|(seq, e)| (*seq, e))
    }

    /// True if event `seq` still waits.
    pub fn contains(&self, seq: u64) -> bool {
        self.events.contains_key(&seq)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Value bytes of the waiting events (counted against the node's memory limit).
    pub fn value_bytes(&self) -> u64 {
        self.events.values().map(bytes_of).sum()
    }

    /// Events dropped unacknowledged so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at: Millis) -> PendingEvent {
        PendingEvent {
            cause: EventCause::Expired,
            obj: ObjKey::new("ns", format!("k{at}")),
            value: vec![1],
            version: 1,
            at,
        }
    }

    #[test]
    fn numbers_grow_and_acks_remove() {
        let mut o = Outbox::default();
        assert_eq!((o.push(event(1)), o.push(event(2))), (1, 2));
        o.ack(&[1, 99]);
        assert_eq!(o.iter().map(|(s, _)| s).collect::<Vec<_>>(), vec![2]);
        assert_eq!(o.push(event(3)), 3, "numbers are never reused");
    }

    #[test]
    fn retention_drops_old_events_and_counts_them() {
        let mut o = Outbox::default();
        o.push(event(0));
        o.push(event(1000));
        assert_eq!(o.next_deadline(), Some(EVENT_RETENTION_MS));
        o.expire(EVENT_RETENTION_MS);
        assert_eq!((o.len(), o.dropped()), (1, 1));
        assert_eq!(o.next_deadline(), Some(EVENT_RETENTION_MS + 1000));
    }

    #[test]
    fn capacity_drops_the_oldest() {
        let mut o = Outbox::default();
        for i in 0..(MAX_PENDING_EVENTS as u64 + 5) {
            o.push(event(i));
        }
        assert_eq!((o.len(), o.dropped()), (MAX_PENDING_EVENTS, 5));
        assert_eq!(o.iter().next().map(|(s, _)| s), Some(6));
    }
}
