//! What a client call can end in, besides its expected results.

use std::time::Duration;

use grid_proto::{Millis, OpError, Unavailability};
use thiserror::Error;

use crate::connstr::ConnStringError;

/// A failed client call. Outcomes a caller normally branches on (not found, locked)
/// appear in the typed results of the calls where they are expected, and as errors only
/// where they are not.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The connection string is invalid.
    #[error(transparent)]
    Config(#[from] ConnStringError),
    /// The TLS settings cannot be used (a file, a name).
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The request breaks a limit (key length, value size); it was not sent.
    #[error("invalid request: {0}")]
    Invalid(#[from] OpError),
    /// No gateway could be reached.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The gateway tried last.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// No reply within the request timeout. A write may or may not have happened.
    #[error("no reply within {after:?}; the outcome is unknown")]
    Timeout {
        /// The limit that passed.
        after: Duration,
    },
    /// The connection broke after the request was sent. A write may or may not have
    /// happened.
    #[error("connection lost: {reason}; the outcome is unknown")]
    ConnectionLost {
        /// Why it closed.
        reason: String,
    },
    /// The write reached the partition's log but leadership changed before it was
    /// confirmed: it may or may not have taken effect.
    #[error("outcome unknown: {reason}")]
    OutcomeUnknown {
        /// What the node said.
        reason: String,
    },
    /// The node refused the token.
    #[error("unauthorized: the node requires a valid authToken")]
    Unauthorized,
    /// Someone else holds the object's lock.
    #[error("object is locked (lock id {lock_id}, held for {lock_age_ms} ms)")]
    Locked {
        /// The holder's lock id.
        lock_id: u64,
        /// How long it has been held.
        lock_age_ms: Millis,
    },
    /// The lock id given is no longer the object's lock.
    #[error("lock lost: the lock id is not the object's current lock (expired or taken over)")]
    LockLost,
    /// The object does not exist.
    #[error("not found")]
    NotFound,
    /// The object is not at the expected version.
    #[error("version mismatch: the object is at version {current}")]
    VersionMismatch {
        /// Its version now.
        current: u64,
    },
    /// The node refused a value or frame as too large.
    #[error("too large: {size} bytes, the node's limit is {limit}")]
    TooLarge {
        /// Size sent.
        size: u64,
        /// The node's limit.
        limit: u64,
    },
    /// The node found the request malformed.
    #[error("bad request: {reason}")]
    BadRequest {
        /// What the node said.
        reason: String,
    },
    /// The node cannot serve this now.
    #[error("unavailable ({code}): {reason}")]
    Unavailable {
        /// Why, as a stable code.
        code: Unavailability,
        /// What the node said.
        reason: String,
    },
    /// The node is past its memory limit (`--max-memory`) and evicts nothing; the write
    /// did not run. Remove objects or raise the limit.
    #[error(
        "low memory: the node holds {used} bytes, its limit is {limit}; the write did not run"
    )]
    LowMemory {
        /// Bytes in use on the node.
        used: u64,
        /// Its limit.
        limit: u64,
    },
    /// This site holds a read-only proxy of the object; its primary is at `site`. Write
    /// there, or read here with `site` in the remote stores to bring it back.
    #[error("the object's primary copy is at site {site}; this site holds a read-only proxy")]
    Moved {
        /// The site holding the primary.
        site: String,
    },
    /// The node answered something this call does not expect (a version mismatch
    /// between client and node, or a bug).
    #[error("protocol error: {reason}")]
    Protocol {
        /// What arrived.
        reason: String,
    },
}

impl ClientError {
    /// True when the request certainly did not run, so sending it again is safe.
    pub fn did_not_run(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. } | ClientError::Unavailable { .. }
        )
    }

    /// True when a write may or may not have happened (timeout, broken connection,
    /// leadership change mid-write).
    pub fn is_indeterminate(&self) -> bool {
        matches!(
            self,
            ClientError::Timeout { .. }
                | ClientError::ConnectionLost { .. }
                | ClientError::OutcomeUnknown { .. }
        )
    }
}
