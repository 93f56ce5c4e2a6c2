use std::sync::Arc;

use grid_proto::{EventCause, EventId, ObjKey, Reply};

use super::EventHub;
use crate::clock::ManualClock;
use crate::outbox::{Outbox, PendingEvent};
use crate::reply_queue::{self, ReplyQueue};

const ACK_TIMEOUT: u64 = 1_000;

fn hub() -> (Arc<EventHub>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(10_000));
    (Arc::new(EventHub::new(ACK_TIMEOUT, clock.clone())), clock)
}

fn outbox(namespace: &str, n: usize) -> Outbox {
    let mut o = Outbox::default();
    for i in 0..n {
        o.push(PendingEvent {
            cause: EventCause::Expired,
            obj: ObjKey::new(namespace, format!("k{i}")),
            value: vec![i as u8],
            version: i as u64 + 1,
            at: 0,
        });
    }
    o
}

/// Event ids received so far on a sink.
fn received(rx: &mut ReplyQueue) -> Vec<EventId> {
    let mut ids = Vec::new();
    while let Some(queued) = rx.try_recv() {
        assert_eq!(queued.id, 0, "events are pushed with request id 0");
        match queued.reply {
            Reply::Event(e) => ids.push(e.id),
            other => panic!("unexpected push {other:?}"),
        }
    }
    ids
}

#[test]
fn each_event_goes_to_one_subscriber_in_turn() {
    let (hub, _) = hub();
    let (tx_a, mut rx_a) = reply_queue::channel(1 << 20);
    let (tx_b, mut rx_b) = reply_queue::channel(1 << 20);
    let _a = hub.subscribe("s".into(), tx_a);
    let _b = hub.subscribe("s".into(), tx_b);
    let o = outbox("s", 4);
    hub.deliver(7, &o);
    hub.deliver(7, &o);
    let (a, b) = (received(&mut rx_a), received(&mut rx_b));
    assert_eq!((a.len(), b.len()), (2, 2), "balanced: {a:?} {b:?}");
    let mut all: Vec<u64> = a.iter().chain(&b).map(|id| id.seq).collect();
    all.sort_unstable();
    assert_eq!(
        all,
        vec![1, 2, 3, 4],
        "each exactly once, also after a second round"
    );
    assert!(a.iter().chain(&b).all(|id| id.partition == 7));
}

#[test]
fn other_namespaces_and_no_subscriber_get_nothing() {
    let (hub, _) = hub();
    let (tx, mut rx) = reply_queue::channel(1 << 20);
    let _sub = hub.subscribe("other".into(), tx);
    let o = outbox("s", 2);
    hub.deliver(1, &o);
    assert!(received(&mut rx).is_empty());
    let (tx, mut rx) = reply_queue::channel(1 << 20);
    let _late = hub.subscribe("s".into(), tx);
    hub.deliver(1, &o);
    assert_eq!(
        received(&mut rx).len(),
        2,
        "waiting events reach a late subscriber"
    );
}

#[test]
fn unacknowledged_events_go_to_another_subscriber_after_the_timeout() {
    let (hub, clock) = hub();
    let (tx_a, mut rx_a) = reply_queue::channel(1 << 20);
    let (tx_b, mut rx_b) = reply_queue::channel(1 << 20);
    let _a = hub.subscribe("s".into(), tx_a);
    let _b = hub.subscribe("s".into(), tx_b);
    let o = outbox("s", 1);
    hub.deliver(1, &o);
    let first = [received(&mut rx_a), received(&mut rx_b)];
    let chosen = usize::from(first[0].is_empty());
    clock.advance(ACK_TIMEOUT - 1);
    hub.deliver(1, &o);
    assert!(received(&mut rx_a).is_empty() && received(&mut rx_b).is_empty());
    clock.advance(1);
    hub.deliver(1, &o);
    let second = [received(&mut rx_a), received(&mut rx_b)];
    assert!(second[chosen].is_empty(), "not the one that let it lapse");
    assert_eq!(second[1 - chosen], first[chosen], "same event id again");
}

#[test]
fn a_closed_subscription_hands_its_events_on_at_once() {
    let (hub, _) = hub();
    let (tx_a, mut rx_a) = reply_queue::channel(1 << 20);
    let (tx_b, mut rx_b) = reply_queue::channel(1 << 20);
    let a = hub.subscribe("s".into(), tx_a);
    let _b = hub.subscribe("s".into(), tx_b);
    let o = outbox("s", 2);
    hub.deliver(1, &o);
    let got_a = received(&mut rx_a);
    let got_b = received(&mut rx_b);
    drop(a);
    hub.deliver(1, &o);
    let again = received(&mut rx_b);
    assert_eq!(again, got_a, "a's events now go to b");
    assert_eq!(got_b.len() + got_a.len(), 2);
}

#[test]
fn acknowledged_events_are_not_sent_again_and_are_reported_for_the_log() {
    let (hub, clock) = hub();
    let (tx, mut rx) = reply_queue::channel(1 << 20);
    let sub = hub.subscribe("s".into(), tx);
    let mut o = outbox("s", 2);
    hub.deliver(3, &o);
    let ids = received(&mut rx);
    assert!(hub.ack(ids[0], &[sub.id()]));
    assert!(!hub.ack(
        EventId {
            partition: 3,
            seq: 99,
        },
        &[sub.id()]
    ));
    assert_eq!(hub.acked(3), vec![ids[0].seq]);
    clock.advance(ACK_TIMEOUT);
    hub.deliver(3, &o);
    assert_eq!(
        received(&mut rx),
        vec![ids[1]],
        "only the unacknowledged one again"
    );
    o.ack(&[ids[0].seq]);
    hub.deliver(3, &o);
    assert!(
        hub.acked(3).is_empty(),
        "gone from the outbox, gone from the hub"
    );
}

#[test]
fn a_full_client_queue_delays_delivery_without_losing_it() {
    let (hub, _) = hub();
    let (tx, mut rx) = reply_queue::channel(257);
    let _sub = hub.subscribe("s".into(), tx);
    let o = outbox("s", 3);
    hub.deliver(1, &o);
    let mut got = received(&mut rx);
    hub.deliver(1, &o);
    got.extend(received(&mut rx));
    hub.deliver(1, &o);
    got.extend(received(&mut rx));
    assert_eq!(
        got.iter().map(|id| id.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}

#[test]
fn only_the_connection_an_event_went_to_may_acknowledge_it() {
    let (hub, clock) = hub();
    let (tx_a, mut rx_a) = reply_queue::channel(1 << 20);
    let (tx_b, mut rx_b) = reply_queue::channel(1 << 20);
    let a = hub.subscribe("s".into(), tx_a);
    let b = hub.subscribe("s".into(), tx_b);
    let o = outbox("s", 1);
    hub.deliver(1, &o);
    let (holder, other) = match (received(&mut rx_a), received(&mut rx_b)) {
        (got, none) if none.is_empty() => ((a.id(), got[0]), b.id()),
        (_, got) => ((b.id(), got[0]), a.id()),
    };
    let (holder, id) = holder;
    // Another connection, and a connection with no registration at all, are refused.
    assert!(!hub.ack(id, &[other]));
    assert!(!hub.ack(id, &[]));
    assert!(hub.acked(1).is_empty());
    // After the ack timeout it is handed on, and only the new holder may acknowledge it.
    clock.advance(ACK_TIMEOUT);
    hub.deliver(1, &o);
    assert!(!hub.ack(id, &[holder]), "no longer the holder's");
    assert!(hub.ack(id, &[other]));
    assert_eq!(hub.acked(1), vec![id.seq]);
}
