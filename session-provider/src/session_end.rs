//! `Session_End`: sessions that expired, were evicted for low memory, or were revoked by
//! tag anywhere in the grid reach one registered web server each, which calls the application's callback
//! with the session's id and final items, then acknowledges the event.
//!
//! The grid delivers at least once; a redelivery (after a failover) carries the same
//! event id, and this server drops the ids it has already handled, so within one server
//! the callback runs once per session. Across servers, a duplicate is possible only if a
//! server dies between calling the callback and acknowledging.

use std::sync::Arc;

use grid_client::{EventCause, EventId, EventSubscription};
use moka::sync::Cache;

use crate::items::SessionItems;

/// Event ids remembered for de-duplication.
const SEEN_EVENTS: u64 = 100_000;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    /// Idle past its timeout.
    Expired,
    /// Evicted because a grid node ran short of memory.
    LowMemory,
    /// `Session.Abandon()` on this server.
    Abandoned,
    /// Revoked with the other sessions of one of its tags
    /// (`SessionStateProvider::abandon_tagged`, on any server).
    Revoked,
}

/// An ended session, as `Session_End` sees it.
#[derive(Debug, Clone)]
pub struct SessionEnded {
    /// The session id.
    pub id: String,
    /// Its final items (empty if they could not be decoded).
    pub items: SessionItems,
    /// Why it ended.
    pub cause: EndCause,
}

/// The application's `Session_End`.
pub type SessionEndCallback = Arc<dyn Fn(SessionEnded) + Send + Sync>;

/// Runs until the subscription ends (its provider drops the task).
pub async fn pump(mut subscription: EventSubscription, callback: SessionEndCallback) {
    let seen: Cache<EventId, ()> = Cache::new(SEEN_EVENTS);
    while let Some(delivery) = subscription.next().await {
        let event = &delivery.event;
        if !seen.contains_key(&event.id) {
            let items = SessionItems::decode(&event.value).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ended session's items are unreadable");
                SessionItems::default()
            });
            callback(SessionEnded {
                id: String::from_utf8_lossy(&event.obj.key).into_owned(),
                items,
                cause: match event.cause {
                    EventCause::Expired => EndCause::Expired,
                    EventCause::LowMemory => EndCause::LowMemory,
                    EventCause::Revoked => EndCause::Revoked,
                },
            });
            seen.insert(event.id, ());
        }
        if let Err(e) = delivery.ack().await {
            // Not acknowledged: the grid delivers it again, and it is dropped as seen.
            tracing::debug!(error = %e, "Session_End acknowledgement failed");
        }
    }
}
