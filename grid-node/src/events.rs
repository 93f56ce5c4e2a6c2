//! Delivery of partition events (expiry, low-memory eviction) to the clients registered
//! on this node.
//!
//! Clients register on every node (events come from partition leaders, which live on
//! every node). For each partition it leads, the node hands every event in the
//! partition's outbox to one registered connection of the event's namespace, in turn
//! (round robin), and waits `ack_timeout` for the acknowledgement. A connection that
//! closes, or lets the time pass, sees its events handed to another connection. An
//! acknowledged event is removed from the outbox through the partition's log
//! (`AckEvents`), so a later leader does not deliver it again.
//!
//! ```text
//! outbox (replicated) ─▶ select(): due, not acked ─▶ subscriber's writer ─▶ client
//!        ▲                                                                    │ AckEvent
//!        └── AckEvents (log) ◀── acked(partition) ◀── ack() ◀─────────────────┘
//! ```
//!
//! The hub's own state is local and soft: after a failover the new leader starts with
//! none and delivers the outbox again (at least once; duplicates keep their event id).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use grid_proto::sync::lock;
use grid_proto::{EventId, GridEvent, Millis, Reply};

use crate::clock::Clock;
use crate::outbox::Outbox;
use crate::reply_queue::ReplySink;

/// Events handed out in one round, at most, per partition: a backlog drains over a few
/// rounds instead of flooding a client at once.
const MAX_SENDS_PER_ROUND: usize = 256;

#[derive(Debug)]
struct Subscriber {
    id: u64,
    sink: ReplySink,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Handed to subscriber `to`; handed again to another after `until`.
    Sent { to: u64, until: Millis },
    /// Acknowledged by subscriber `by`; waiting for `AckEvents` to commit.
    Acked { by: u64 },
}

#[derive(Debug, Default)]
struct HubState {
    next_id: u64,
    /// Registered connections by namespace.
    subscribers: HashMap<String, Vec<Subscriber>>,
    /// Round-robin position per namespace.
    turn: HashMap<String, usize>,
    /// Deliveries per partition, by event number.
    deliveries: HashMap<u32, HashMap<u64, Delivery>>,
}

/// The node's event delivery state.
#[derive(Debug)]
pub struct EventHub {
    state: Mutex<HubState>,
    ack_timeout_ms: Millis,
    clock: Arc<dyn Clock>,
}

/// A connection's registration; dropping it unregisters the connection and hands its
/// unacknowledged events to others at once.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<EventHub>,
    namespace: String,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.namespace, self.id);
    }
}

impl Subscription {
    /// The subscriber's id on this node.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl EventHub {
    /// A hub that waits `ack_timeout_ms` for each acknowledgement.
    pub fn new(ack_timeout_ms: Millis, clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Mutex::default(),
            ack_timeout_ms,
            clock,
        }
    }

    /// Registers a connection for `namespace`'s events.
    pub fn subscribe(self: &Arc<Self>, namespace: String, sink: ReplySink) -> Subscription {
        let mut state = lock(&self.state);
        state.next_id += 1;
        let id = state.next_id;
        state
            .subscribers
            .entry(namespace.clone())
            .or_default()
            .push(Subscriber { id, sink });
        Subscription {
            hub: Arc::clone(self),
            namespace,
            id,
        }
    }

    fn unsubscribe(&self, namespace: &str, id: u64) {
        let mut state = lock(&self.state);
        if let Some(subs) = state.subscribers.get_mut(namespace) {
            subs.retain(|s| s.id != id);
            if subs.is_empty() {
                state.subscribers.remove(namespace);
            }
        }
        for deliveries in state.deliveries.values_mut() {
            for d in deliveries.values_mut() {
                if let Delivery::Sent { to, until } = d {
                    if *to == id {
                        *until = 0;
                    }
                }
            }
        }
    }

    /// Connections registered for events, over all namespaces.
    pub fn subscribers(&self) -> usize {
        lock(&self.state).subscribers.values().map(Vec::len).sum()
    }

    /// Records an acknowledgement from the connection holding the registrations `by`.
    /// Only the connection an event was handed to may acknowledge it: an id it was never
    /// sent (or one handed on to another connection since) is refused with `false`. An
    /// event this node is not delivering (it no longer leads the partition) is refused
    /// too; its new leader delivers it again.
    pub fn ack(&self, id: EventId, by: &[u64]) -> bool {
        let mut state = lock(&self.state);
        match state
            .deliveries
            .get_mut(&id.partition)
            .and_then(|p| p.get_mut(&id.seq))
        {
            Some(d) => match *d {
                Delivery::Sent { to, .. } | Delivery::Acked { by: to } if by.contains(&to) => {
                    *d = Delivery::Acked { by: to };
                    true
                }
                Delivery::Sent { .. } | Delivery::Acked { .. } => false,
            },
            None => false,
        }
    }

    /// Hands out the outbox events of `partition` that are due, each to one subscriber of
    /// its namespace; events without a subscriber wait. Call with the partition's state
    /// at hand, as its leader.
    pub fn deliver(&self, partition: u32, outbox: &Outbox) {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        let HubState {
            subscribers,
            turn,
            deliveries,
            ..
        } = &mut *state;
        let deliveries = deliveries.entry(partition).or_default();
        // Entries of events gone from the outbox (acknowledged, dropped) are done.
        deliveries.retain(|seq, _| outbox.contains(*seq));
        let mut sent = 0;
        for (seq, event) in outbox.iter() {
            if sent == MAX_SENDS_PER_ROUND {
                break;
            }
            let previous = match deliveries.get(&seq) {
                Some(Delivery::Acked { .. }) => continue,
                Some(Delivery::Sent { until, .. }) if *until > now => continue,
                Some(Delivery::Sent { to, .. }) => Some(*to),
                None => None,
            };
            let Some(subs) = subscribers.get(&event.obj.namespace) else {
                continue;
            };
            let Some(to) = pick(
                subs,
                turn.entry(event.obj.namespace.clone()).or_default(),
                previous,
            ) else {
                continue;
            };
            let frame = Reply::Event(Box::new(GridEvent {
                id: EventId { partition, seq },
                cause: event.cause,
                obj: event.obj.clone(),
                value: event.value.clone(),
                version: event.version,
            }));
            // A full writer queue: the client is slow; try again next round.
            if to.sink.try_send(0, frame) {
                sent += 1;
                deliveries.insert(
                    seq,
                    Delivery::Sent {
                        to: to.id,
                        until: now.saturating_add(self.ack_timeout_ms),
                    },
                );
            }
        }
    }

    /// Acknowledged events of `partition`, to remove from its outbox through the log.
    pub fn acked(&self, partition: u32) -> Vec<u64> {
        lock(&self.state)
            .deliveries
            .get(&partition)
            .map(|d| {
                d.iter()
                    .filter(|(_, d)| matches!(d, Delivery::Acked { .. }))
                    .map(|(seq, _)| *seq)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// This node no longer leads `partition`: its deliveries are the new leader's now.
    pub fn forget_partition(&self, partition: u32) {
        lock(&self.state).deliveries.remove(&partition);
    }
}

/// The next live subscriber in turn, avoiding `previous` (the one that let the event
/// lapse) when there is another.
fn pick<'a>(
    subs: &'a [Subscriber],
    turn: &mut usize,
    previous: Option<u64>,
) -> Option<&'a Subscriber> {
    let live: Vec<&Subscriber> = subs.iter().filter(|s| !s.sink.is_closed()).collect();
    if live.is_empty() {
        return None;
    }
    for _ in 0..live.len() {
        *turn = turn.wrapping_add(1);
        let candidate = live[*turn % live.len()];
        if Some(candidate.id) != previous || live.len() == 1 {
            return Some(candidate);
        }
    }
    None
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
