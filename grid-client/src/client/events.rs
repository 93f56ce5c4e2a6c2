//! Event subscriptions: a client registers for a namespace's events (objects that expired
//! or were evicted for low memory) and receives each one, with the object's final bytes,
//! as a [`Delivery`] to acknowledge.
//!
//! Events come from partition leaders, which live on every node, so the subscription
//! keeps `eventConnectionCount` registered connections to each node of the map, and
//! reconnects and re-registers (and learns new nodes from the map) in the background
//! until it is dropped. A node hands each event to one registered connection of the
//! namespace in turn, so several client instances share the events; an event not
//! acknowledged in time (the node's `--event-ack-timeout`), or whose connection closed,
//! goes to another. Delivery is at least once: a duplicate carries the same
//! [`EventId`](grid_proto::EventId).
//!
//! ```text
//! node hub ─Event(id 0)─▶ Connection reader ─▶ forwarder (drops the near-cache copy) ─▶ next()
//!     ▲                                                                                  │
//!     └────────────────────────────── AckEvent ◀── Delivery::ack ◀───────────────────────┘
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use grid_proto::limits::validate_namespace;
use grid_proto::{GridEvent, Reply, Request};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::unexpected;
use crate::conn::Connection;
use crate::error::ClientError;
use crate::GridClient;

/// Events received and not yet taken by the application.
const DELIVERY_QUEUE: usize = 1024;
/// How often the subscription checks its connections.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Checks between map refreshes (to learn nodes that joined).
const MAP_REFRESH_CHECKS: u32 = 5;

/// One event to handle and acknowledge. Dropping it without [`Delivery::ack`] lets the
/// node deliver it again, to this client or another, after its ack timeout.
#[derive(Debug)]
pub struct Delivery {
    /// The event.
    pub event: GridEvent,
    conn: Arc<Connection>,
    timeout: Duration,
}

impl Delivery {
    /// Tells the node the event is handled, so it is not delivered again.
    pub async fn ack(self) -> Result<(), ClientError> {
        let request = Request::AckEvent { id: self.event.id };
        match self.conn.call(&request, self.timeout).await? {
            Reply::Acked => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

/// A registration for one namespace's events. Dropping it unregisters (its background
/// task and connections stop); unacknowledged events then go to other clients.
#[derive(Debug)]
pub struct EventSubscription {
    rx: mpsc::Receiver<Delivery>,
    task: JoinHandle<()>,
}

impl Drop for EventSubscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventSubscription {
    /// The next event; `None` only if the subscription's task has stopped.
    pub async fn next(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }

    /// An event already received, without waiting.
    pub fn try_next(&mut self) -> Option<Delivery> {
        self.rx.try_recv().ok()
    }
}

/// The registered connections of one subscription.
struct Links {
    client: GridClient,
    namespace: String,
    deliveries: mpsc::Sender<Delivery>,
    /// By node address and slot.
    conns: HashMap<(String, u32), Arc<Connection>>,
    forwarders: JoinSet<()>,
}

impl Links {
    /// Registers on every active node of the map where a slot has no live connection.
    /// Returns the last failure, if any.
    async fn ensure(&mut self) -> Option<ClientError> {
        let nodes: Vec<String> = self
            .client
            .partition_map()
            .map(|m| {
                m.nodes
                    .into_iter()
                    .filter(|n| n.active)
                    .map(|n| n.addr)
                    .collect()
            })
            .unwrap_or_default();
        self.conns
            .retain(|(addr, _), conn| !conn.is_closed() && nodes.contains(addr));
        let mut failure = None;
        for addr in nodes {
            for slot in 0..self.client.config().event_connection_count {
                let key = (addr.clone(), slot);
                if self.conns.contains_key(&key) {
                    continue;
                }
                match self.register(&addr).await {
                    Ok(conn) => {
                        self.conns.insert(key, conn);
                    }
                    Err(e) => {
                        tracing::debug!(%addr, error = %e, "event registration failed");
                        failure = Some(e);
                    }
                }
            }
        }
        while self.forwarders.try_join_next().is_some() {}
        failure
    }

    async fn register(&mut self, addr: &str) -> Result<Arc<Connection>, ClientError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<GridEvent>();
        let conn = Arc::new(self.client.open(addr, Some(tx)).await?);
        let timeout = self.client.config().request_timeout;
        let request = Request::Subscribe {
            namespace: self.namespace.clone(),
        };
        match conn.call(&request, timeout).await? {
            Reply::Subscribed => {}
            other => return Err(unexpected(other)),
        }
        let (client, deliveries) = (self.client.clone(), self.deliveries.clone());
        let for_acks = Arc::clone(&conn);
        // Ends when the connection's reader stops (it holds the sender).
        self.forwarders.spawn(async move {
            while let Some(event) = rx.recv().await {
                client.inner.cache.invalidate(&event.obj);
                let delivery = Delivery {
                    event,
                    conn: Arc::clone(&for_acks),
                    timeout,
                };
                if deliveries.send(delivery).await.is_err() {
                    return;
                }
            }
        });
        Ok(conn)
    }

    /// Keeps the registrations alive until the subscription is dropped (which aborts
    /// this task, and with it the forwarders and connections it owns).
    async fn run(mut self) {
        let mut interval = tokio::time::interval(CHECK_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for round in 1u32.. {
            interval.tick().await;
            if round % MAP_REFRESH_CHECKS == 0 || self.conns.values().any(|c| c.is_closed()) {
                let _ = self.client.refresh().await;
            }
            self.ensure().await;
        }
    }
}

impl GridClient {
    /// Registers for `namespace`'s events on every node. Fails if no node accepts the
    /// registration; nodes that fail now are retried in the background.
    pub async fn subscribe(&self, namespace: &str) -> Result<EventSubscription, ClientError> {
        validate_namespace(namespace).map_err(|e| ClientError::BadRequest {
            reason: e.to_string(),
        })?;
        let (tx, rx) = mpsc::channel(DELIVERY_QUEUE);
        let mut links = Links {
            client: self.clone(),
            namespace: namespace.to_string(),
            deliveries: tx,
            conns: HashMap::new(),
            forwarders: JoinSet::new(),
        };
        let failure = links.ensure().await;
        if links.conns.is_empty() {
            return Err(failure.unwrap_or(ClientError::Unavailable {
                code: grid_proto::Unavailability::NoQuorum,
                reason: "the partition map lists no active node".into(),
            }));
        }
        Ok(EventSubscription {
            rx,
            task: tokio::spawn(links.run()),
        })
    }
}
