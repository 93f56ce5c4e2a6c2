//! Bounds on every client connection, before and after it authenticates (DESIGN.md, "Trust
//! boundaries"). Each bound is written here with its default and its reason; the
//! connection code only applies them.

use std::time::Duration;

/// Largest frame accepted before a connection has authenticated: room for a hello with a
/// token and a name, or a peer handshake, and nothing like a value.
pub const PRE_AUTH_MAX_FRAME: usize = 4 * 1024;

/// Largest frame a proven peer may send: a Raft batch of up to 64 entries, each up to one
/// value, or a 1 MiB snapshot chunk.
pub const PEER_MAX_FRAME: usize = 1 << 30;

/// Bounds of the client port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    /// `--hello-timeout` (default 5 s): a connection that has not authenticated by then
    /// is closed, so idle or slow-loris connections cannot pile up.
    pub hello_timeout: Duration,
    /// `--idle-timeout` (default 5 min): an authenticated connection with nothing in
    /// flight, no event registration and no frame received for this long is closed.
    /// Clients reconnect on demand.
    pub idle_timeout: Duration,
    /// `--max-connections` (default 10,000): connections open at once, authenticated or
    /// not; more are refused at accept (counted in `grid_connections_refused_total`).
    pub max_connections: usize,
    /// `--max-unauthenticated` (default 1,000): connections that have not said hello or
    /// proved the cluster secret yet; more are refused at accept, so a flood of silent
    /// connections cannot take every place.
    pub max_unauthenticated: usize,
    /// `--max-in-flight` (default 1,024): requests one connection may have running at
    /// once; past it the node stops reading that connection until one finishes.
    pub max_in_flight: usize,
    /// `--max-lock-waits` (default 256): requests one connection may have parked in lock
    /// queues; more get a `BadRequest` at once.
    pub max_lock_waits: usize,
    /// `--reply-queue-bytes` (default 32 MiB): encoded replies waiting for one client to
    /// read them; past it the node stops reading that connection's requests.
    pub reply_queue_bytes: usize,
    /// `--write-timeout` (default 30 s): a client that reads nothing for this long while
    /// replies wait is disconnected.
    pub write_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            hello_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            max_connections: 10_000,
            max_unauthenticated: 1_000,
            max_in_flight: 1024,
            max_lock_waits: 256,
            reply_queue_bytes: 32 * 1024 * 1024,
            write_timeout: Duration::from_secs(30),
        }
    }
}
