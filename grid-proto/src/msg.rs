//! Requests and replies. Encoded with rkyv; every byte that arrives from the network is
//! validated ([`decode`]) before use.
//!
//! Wire stability: the order of enum variants is their wire code. Add new variants at the
//! end only; a breaking change bumps [`crate::PROTOCOL_VERSION`].

pub use crate::events::{EventCause, EventId, GridEvent};
pub use crate::geo::{GeoOp, RemoteStoreStatus};
pub use crate::map::{MapNode, PartitionMap};
pub use crate::status::{NodeStatus, WorkerState, WorkerStatus};
use rkyv::rancor::Error as RkyvError;
pub use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};
use serde::{Deserialize as SerdeDeserialize, Serialize as SerdeSerialize};
use thiserror::Error;

/// Milliseconds. Points in time are milliseconds since the Unix epoch, read from the
/// deciding node's clock (the partition leader), never from a client's.
pub type Millis = u64;

/// An object's identity: its namespace and its key.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Debug,
    Clone,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    SerdeSerialize,
    SerdeDeserialize,
)]
pub struct ObjKey {
    /// Isolates the keys of one application (ScaleOut: a named cache).
    pub namespace: String,
    /// The key within the namespace: any bytes, bounded by [`crate::limits::MAX_KEY_BYTES`].
    pub key: Vec<u8>,
}

impl ObjKey {
    /// Builds a key from a namespace and key bytes.
    pub fn new(namespace: impl Into<String>, key: impl Into<Vec<u8>>) -> Self {
        Self {
            namespace: namespace.into(),
            key: key.into(),
        }
    }
}

/// When an object expires by itself.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    SerdeSerialize,
    SerdeDeserialize,
)]
pub enum Timeout {
    /// Never expires.
    #[default]
    None,
    /// Expires `ms` after its last access: any operation that finds the object, whether
    /// it succeeds or is refused (a refused write still shows the object is in use).
    Sliding {
        /// Idle time allowed, in milliseconds.
        ms: Millis,
    },
    /// Expires `ms` after its last write, whatever the reads in between.
    Absolute {
        /// Lifetime after a write, in milliseconds.
        ms: Millis,
    },
}

/// An operation on one object: the input of the partition state machine.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, SerdeSerialize, SerdeDeserialize,
)]
pub enum Op {
    /// Adds the object if absent. Replies `Added` or `AlreadyExists`.
    Create {
        /// Object to add.
        obj: ObjKey,
        /// Its bytes.
        value: Vec<u8>,
        /// Its expiry.
        timeout: Timeout,
        /// Marks the object uninitialized (ASP.NET `CreateUninitializedItem`); the next
        /// read-and-lock reports it and clears the mark.
        uninitialized: bool,
    },
    /// Adds or replaces the object. Replies `Added` or `Updated`; a locked object needs
    /// its `lock_id` (else `Locked`).
    Put {
        /// Object to write.
        obj: ObjKey,
        /// New bytes.
        value: Vec<u8>,
        /// New expiry.
        timeout: Timeout,
        /// Lock id held by the caller, when the object is locked.
        lock_id: Option<u64>,
    },
    /// Replaces an existing object. Replies `Updated`, `NotFound`, `VersionMismatch`,
    /// `Locked` or `LockLost`.
    Update {
        /// Object to write.
        obj: ObjKey,
        /// New bytes.
        value: Vec<u8>,
        /// New expiry; `None` keeps the current one.
        timeout: Option<Timeout>,
        /// Only write if the object is at this version (compare-and-set).
        expected_version: Option<u64>,
        /// Lock id held by the caller; required when the object is locked.
        lock_id: Option<u64>,
        /// Release the lock in the same step (ASP.NET `SetAndReleaseItemExclusive`).
        unlock: bool,
    },
    /// Reads the object and slides its expiry. With `cached_version` equal to the current
    /// version the reply is `NotModified`, without the bytes.
    Read {
        /// Object to read.
        obj: ObjKey,
        /// Version the caller already holds.
        cached_version: Option<u64>,
    },
    /// Reads and locks the object. Replies `Retrieved`/`NotModified` carrying the new
    /// lock id, `Locked` if another holder keeps it past `wait_ms`, or `NotFound`.
    ReadAndLock {
        /// Object to lock.
        obj: ObjKey,
        /// Version the caller already holds.
        cached_version: Option<u64>,
        /// Lease after which the lock frees itself; `None` takes the node's default.
        lease_ms: Option<Millis>,
        /// How long to wait in the object's FIFO queue if it is locked; 0 = do not wait.
        wait_ms: Millis,
        /// Take over a lock held for at least this long (ASP.NET `executionTimeout`).
        take_over_after_ms: Option<Millis>,
    },
    /// Releases a lock. Replies `Unlocked`, `LockLost` (the id is not the current lock) or
    /// `NotFound`.
    Unlock {
        /// Locked object.
        obj: ObjKey,
        /// The holder's lock id.
        lock_id: u64,
    },
    /// Extends a held lock's lease from now. Replies `LockRefreshed`, `LockLost` or
    /// `NotFound`.
    RefreshLock {
        /// Locked object.
        obj: ObjKey,
        /// The holder's lock id.
        lock_id: u64,
    },
    /// Removes the object. Replies `Removed`, `NotFound`, `Locked` or `LockLost`.
    Remove {
        /// Object to remove.
        obj: ObjKey,
        /// Lock id held by the caller; required when the object is locked.
        lock_id: Option<u64>,
    },
    /// Restarts the object's expiry from now, optionally with a new timeout, without
    /// changing its bytes or version. Replies `TimeoutReset` or `NotFound`.
    ResetTimeout {
        /// Object to touch.
        obj: ObjKey,
        /// New expiry; `None` keeps the current one.
        timeout: Option<Timeout>,
    },
    /// The general write: the whole value or some items of an item map, the object's
    /// tags, its expiry and its lock, in one step. Replies `Added` (it was absent and
    /// `create` is set), `Updated`, `NotFound` (absent, `create` not set), `Locked` or
    /// `LockLost` (a lock id for an absent object included), or `BadRequest` when item
    /// changes meet a value that is not an item map.
    Write {
        /// Object to write.
        obj: ObjKey,
        /// What happens to its value.
        body: WriteBody,
        /// Its tags from now on (at most [`crate::limits::MAX_TAGS`]); `None` keeps them.
        tags: Option<Vec<String>>,
        /// New expiry; `None` keeps the current one (none for a new object).
        timeout: Option<Timeout>,
        /// Lock id held by the caller; required when the object is locked.
        lock_id: Option<u64>,
        /// Release the lock in the same step.
        unlock: bool,
        /// Create the object if it is absent.
        create: bool,
        /// Largest value an item merge may make. Set by the node that takes the request,
        /// from its `--max-value-bytes` (what a client sends is replaced), so that every
        /// replica applies the same bound; a merge past it answers `TooLarge`.
        max_bytes: u64,
    },
    /// Removes the object if it still carries `tag`, whoever holds its lock (revoking a
    /// user's sessions outranks a request in flight, whose later write finds its lock
    /// lost). Replies `Removed` or `NotFound` (absent, or no longer tagged).
    RemoveTagged {
        /// Object to remove.
        obj: ObjKey,
        /// The tag it must carry.
        tag: String,
    },
}

/// What an [`Op::Write`] does to the object's value.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, SerdeSerialize, SerdeDeserialize,
)]
pub enum WriteBody {
    /// Leaves it as it is (a change of tags or expiry only).
    Keep,
    /// Replaces it.
    Whole(Vec<u8>),
    /// Changes some items of the item map it holds ([`crate::items`]); an absent object
    /// starts from the empty map.
    Items(crate::items::ItemChanges),
}

impl WriteBody {
    /// The value bytes it carries.
    pub fn value_len(&self) -> usize {
        match self {
            WriteBody::Keep => 0,
            WriteBody::Whole(value) => value.len(),
            WriteBody::Items(changes) => changes.value_len(),
        }
    }
}

impl Op {
    /// The object this operation addresses.
    pub fn obj(&self) -> &ObjKey {
        match self {
            Op::Create { obj, .. }
            | Op::Put { obj, .. }
            | Op::Update { obj, .. }
            | Op::Read { obj, .. }
            | Op::ReadAndLock { obj, .. }
            | Op::Unlock { obj, .. }
            | Op::RefreshLock { obj, .. }
            | Op::Remove { obj, .. }
            | Op::ResetTimeout { obj, .. }
            | Op::Write { obj, .. }
            | Op::RemoveTagged { obj, .. } => obj,
        }
    }

    /// This operation as the node taking it proposes it, with that node's settings
    /// filled in, so that every replica applies the same: a `Write`'s merge bound
    /// (`max_value_bytes`), and a `ReadAndLock`'s lease when it names none.
    pub fn as_proposed(mut self, max_value_bytes: usize, default_lease_ms: Millis) -> Self {
        match &mut self {
            Op::Write { max_bytes, .. } => *max_bytes = max_value_bytes as u64,
            Op::ReadAndLock { lease_ms, .. } => {
                lease_ms.get_or_insert(default_lease_ms);
            }
            _ => {}
        }
        self
    }

    /// True for the writes that may add bytes (refused when a node is short of memory
    /// or disk).
    pub fn adds_data(&self) -> bool {
        matches!(
            self,
            Op::Create { .. } | Op::Put { .. } | Op::Update { .. } | Op::Write { .. }
        )
    }

    /// The value bytes this operation carries, if any.
    pub fn value_len(&self) -> usize {
        match self {
            Op::Create { value, .. } | Op::Put { value, .. } | Op::Update { value, .. } => {
                value.len()
            }
            Op::Write { body, .. } => body.value_len(),
            _ => 0,
        }
    }
}

/// A message from a client to a node.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Opens a session. Must come first when the node requires a token.
    Hello {
        /// The shared secret configured on the node (`--auth-token`).
        auth_token: Option<String>,
        /// Free text naming the client, for logs.
        client_name: String,
    },
    /// Opens a node-to-node session instead of `Hello`: the node's half of the
    /// challenge-response over the cluster secret ([`crate::peer_auth`]). Replies
    /// `PeerChallenge`.
    PeerHello {
        /// The node's random nonce ([`crate::peer_auth::NONCE_BYTES`]).
        node_nonce: Vec<u8>,
    },
    /// The node's proof, after `PeerChallenge`. Replies `Welcome` with the peer role, or
    /// `Unauthorized` and closes.
    PeerProof {
        /// HMAC of the server's nonce under the cluster secret.
        node_mac: Vec<u8>,
    },
    /// Liveness check. Replies `Pong`.
    Ping,
    /// Node counters. Replies `Status`.
    Status,
    /// An object operation.
    Op(Op),
    /// The partition map, with the leaders this node knows. Replies `Map`.
    GetMap,
    /// Node-to-node traffic (Raft, joins), encoded by the nodes themselves.
    Peer {
        /// The encoded peer message.
        payload: Vec<u8>,
    },
    /// Registers this connection for the namespace's events (expiry, low-memory
    /// eviction, revocation by tag). Replies `Subscribed`; events then arrive as `Event` frames with request
    /// id 0 from the partitions this node leads, each to one registered connection.
    Subscribe {
        /// The namespace.
        namespace: String,
    },
    /// Acknowledges an event received on this connection, so it is not redelivered.
    /// Replies `Acked`.
    AckEvent {
        /// The event.
        id: EventId,
    },
    /// A read (`Read` or `ReadAndLock`) that, on a miss here, pulls the object from these
    /// remote sites in order and migrates it here. Replies as the operation would, or
    /// `NotFoundRemote` with what each site said.
    Pull {
        /// The read.
        op: Op,
        /// Site names, as configured on the node (`--remote-store NAME=...`).
        remote_stores: Vec<String>,
    },
    /// A step of a migration between sites, on the partition of its object. Only from
    /// the cluster's own nodes.
    Geo(GeoOp),
    /// A page of a partition's objects, for a backup. `export` 0 starts an export on the
    /// partition's leader: it copies the partition as of a linearizable point and answers
    /// its first page. Later pages name the export and go to the same node. Replies
    /// `Exported`.
    Export {
        /// The partition.
        partition: u32,
        /// The export (0: start one).
        export: u64,
        /// Index of the first object wanted.
        from: u64,
    },
    /// The keys of a partition's objects in `namespace` that carry `tag`, read on the
    /// partition's leader at a linearizable point, in key order from just after `after`,
    /// a page at a time. Replies `Keys`.
    FindTag {
        /// The partition.
        partition: u32,
        /// The namespace.
        namespace: String,
        /// The tag.
        tag: String,
        /// The last key of the previous page (none: from the start).
        after: Option<Vec<u8>>,
    },
}

impl Request {
    /// The bytes of value or payload it carries: most of its encoding.
    pub fn carried_bytes(&self) -> usize {
        match self {
            Request::Op(op) | Request::Pull { op, .. } => op.value_len(),
            Request::Peer { payload } => payload.len(),
            _ => 0,
        }
    }
}

/// Lock and version facts about an object, returned with reads.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    SerdeSerialize,
    SerdeDeserialize,
)]
pub struct ObjectInfo {
    /// Changes on every write; never reused within a partition.
    pub version: u64,
    /// The current lock id: the caller's new lock after a read-and-lock, otherwise the
    /// holder's (if any).
    pub lock_id: Option<u64>,
    /// How long the current lock has been held, by the node's clock.
    pub lock_age_ms: Millis,
    /// The object was created uninitialized. A read-and-lock reports it once, then
    /// clears it (ASP.NET `InitializeItem`).
    pub uninitialized: bool,
    /// The object's expiry.
    pub timeout: Timeout,
}

/// Why a node could not serve a request: a code that stays the same across releases,
/// beside the reason text of [`Reply::Unavailable`]. All are worth a retry.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    SerdeSerialize,
    SerdeDeserialize,
)]
pub enum Unavailability {
    /// The node has not joined a cluster yet.
    NotJoined,
    /// The node is cut off from the rest of its cluster.
    CutOff,
    /// The partition has no working leader or quorum now (an election, a hand-over).
    NoQuorum,
    /// The node is shutting down.
    ShuttingDown,
    /// A bounded queue is full (lock waiters of an object), or the object is held at
    /// another site.
    Busy,
    /// A wait was interrupted when leadership changed; the operation may be retried.
    LeaderChanged,
    /// The object is being handed over between sites.
    Migrating,
    /// The hand-over between sites was aborted.
    HandOverAborted,
    /// Another site (or this site's leader, for a site link) did not answer.
    SiteUnreachable,
    /// The node lost an answer it should have had; a defect worth reporting.
    Internal,
    /// The disk of the node's data directory is nearly full: writes that add data are
    /// refused until there is room; reads go on.
    DiskFull,
}

impl std::fmt::Display for Unavailability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unavailability::NotJoined => "not-joined",
            Unavailability::CutOff => "cut-off",
            Unavailability::NoQuorum => "no-quorum",
            Unavailability::ShuttingDown => "shutting-down",
            Unavailability::Busy => "busy",
            Unavailability::LeaderChanged => "leader-changed",
            Unavailability::Migrating => "migrating",
            Unavailability::HandOverAborted => "hand-over-aborted",
            Unavailability::SiteUnreachable => "site-unreachable",
            Unavailability::Internal => "internal",
            Unavailability::DiskFull => "disk-full",
        })
    }
}

/// A node's answer. Every operation ends in exactly one of these; none fails silently.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, SerdeSerialize, SerdeDeserialize,
)]
pub enum Reply {
    /// Session accepted.
    Welcome {
        /// Node software version.
        server_version: String,
        /// Largest value this node accepts.
        max_value_bytes: u64,
    },
    /// Answer to `PeerHello`: the server's proof of the cluster secret and its nonce.
    PeerChallenge {
        /// The server's random nonce, for the node's proof.
        server_nonce: Vec<u8>,
        /// HMAC of the node's nonce under the cluster secret.
        server_mac: Vec<u8>,
    },
    /// Answer to `Ping`.
    Pong,
    /// Answer to `Status`.
    Status(Box<NodeStatus>),
    /// The object's bytes and facts.
    Retrieved {
        /// The bytes.
        value: Vec<u8>,
        /// Version and lock facts.
        info: ObjectInfo,
    },
    /// The caller's cached version is current; no bytes sent.
    NotModified {
        /// Version and lock facts.
        info: ObjectInfo,
    },
    /// A new object was stored.
    Added {
        /// Its version.
        version: u64,
    },
    /// An existing object was replaced.
    Updated {
        /// Its new version.
        version: u64,
    },
    /// The object is gone.
    Removed,
    /// The lock is released.
    Unlocked,
    /// The lock's lease was extended.
    LockRefreshed,
    /// The object's expiry restarted.
    TimeoutReset,
    /// No such object.
    NotFound,
    /// `Create` found the object present.
    AlreadyExists,
    /// Someone else holds the lock.
    Locked {
        /// The holder's lock id.
        lock_id: u64,
        /// How long it has been held, by the node's clock.
        lock_age_ms: Millis,
    },
    /// The lock id given is not the object's current lock (it expired, was taken over,
    /// or was never held).
    LockLost,
    /// `expected_version` did not match.
    VersionMismatch {
        /// The object's version now.
        current: u64,
    },
    /// This node does not lead the object's partition; the request did not run.
    NotLeader {
        /// Address of the leader, when known.
        leader_hint: Option<String>,
    },
    /// A value or frame over the node's limit.
    TooLarge {
        /// Size sent, in bytes.
        size: u64,
        /// The limit, in bytes.
        limit: u64,
    },
    /// Missing or wrong authentication token.
    Unauthorized,
    /// The node cannot serve this now (shutting down, no quorum); retry elsewhere or later.
    Unavailable {
        /// Why, as a stable code to act on.
        code: Unavailability,
        /// Why, for a person.
        reason: String,
    },
    /// The request is malformed (invalid encoding, empty or over-long key, ...).
    BadRequest {
        /// What is wrong.
        reason: String,
    },
    /// The frame carried a protocol version this node does not speak.
    UnsupportedVersion {
        /// Version sent.
        got: u8,
        /// Version this node speaks.
        supported: u8,
    },
    /// Answer to `GetMap`.
    Map(Box<PartitionMap>),
    /// Answer to `Peer`.
    Peer {
        /// The encoded peer answer.
        payload: Vec<u8>,
    },
    /// The write was handed to the partition's log, but leadership changed (or the node
    /// failed) before it was confirmed: it may or may not have taken effect.
    OutcomeUnknown {
        /// What happened.
        reason: String,
    },
    /// Answer to `Subscribe`.
    Subscribed,
    /// A pushed event (request id 0), after `Subscribe`.
    Event(Box<GridEvent>),
    /// Answer to `AckEvent`.
    Acked,
    /// The node is past its memory limit and evicts nothing: the write did not run.
    LowMemory {
        /// Bytes in use on the node.
        used: u64,
        /// Its limit (`--max-memory`).
        limit: u64,
    },
    /// This site holds only a read-only proxy of the object: its primary is at `site`.
    /// Writes here are refused; a read naming `site` in its remote stores pulls it back.
    Moved {
        /// The site holding the primary.
        site: String,
    },
    /// Answer to `GeoOp::Resolve`.
    Transfer {
        /// True if the import happened (the destination holds the primary).
        committed: bool,
    },
    /// A `Pull` found the object neither here nor at any remote store.
    NotFoundRemote {
        /// What each remote store said (`east: not found`, `west: unreachable ...`).
        reasons: Vec<String>,
    },
    /// Answer to `Export`: objects `from..from + objects.len()` of `total`.
    Exported {
        /// The export, to name in the next pages.
        export: u64,
        /// Objects in the partition's copy.
        total: u64,
        /// This page.
        objects: Vec<crate::backup::BackupObject>,
    },
    /// Answer to `FindTag`: a page of keys, in order.
    Keys {
        /// The keys.
        keys: Vec<Vec<u8>>,
        /// More keys follow the last one (ask again with it as `after`).
        more: bool,
    },
    /// Answer to `GeoOp::Export`: the object's data, tags included; it is migrating now.
    GeoExported {
        /// The bytes.
        value: Vec<u8>,
        /// Version and lock facts.
        info: ObjectInfo,
        /// Its tags.
        tags: Vec<String>,
    },
}

impl Reply {
    /// The bytes of value or payload it carries: most of its encoding.
    pub fn carried_bytes(&self) -> usize {
        match self {
            Reply::Retrieved { value, .. } | Reply::GeoExported { value, .. } => value.len(),
            Reply::Peer { payload } => payload.len(),
            Reply::Exported { objects, .. } => objects.iter().map(|o| o.size()).sum(),
            Reply::Keys { keys, .. } => keys.iter().map(|k| k.len() + 8).sum(),
            _ => 0,
        }
    }
}

/// An encoded payload failed validation.
#[derive(Debug, Error)]
#[error("invalid payload: {reason}")]
pub struct DecodeError {
    /// What the validator found.
    pub reason: String,
}

/// Encodes a message into an aligned buffer.
pub fn encode<T>(msg: &T) -> AlignedVec
where
    T: for<'a> Serialize<
        rkyv::api::high::HighSerializer<
            AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            RkyvError,
        >,
    >,
{
    encode_sized(msg, 0)
}

/// Room an encoding takes beyond the bytes a message carries (fields, rkyv's layout).
const ENCODING_OVERHEAD: usize = 256;

/// [`encode`] into a buffer sized for a message carrying `carried` bytes of value or
/// payload, so a large message is written once instead of moved at every growth.
pub fn encode_sized<T>(msg: &T, carried: usize) -> AlignedVec
where
    T: for<'a> Serialize<
        rkyv::api::high::HighSerializer<
            AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            RkyvError,
        >,
    >,
{
    let buffer = AlignedVec::with_capacity(carried + ENCODING_OVERHEAD);
    // Serializing into a growable in-memory buffer has no failure mode for these types.
    rkyv::api::high::to_bytes_in::<_, RkyvError>(msg, buffer)
        .unwrap_or_else(|e| panic!("rkyv encode failed: {e}"))
}

/// Validates and decodes a payload received from the network.
pub fn decode<T>(bytes: &[u8]) -> Result<T, DecodeError>
where
    T: Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, RkyvError>>
        + Deserialize<T, rkyv::api::high::HighDeserializer<RkyvError>>,
{
    rkyv::from_bytes::<T, RkyvError>(bytes).map_err(|e| DecodeError {
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        let req = Request::Op(Op::ReadAndLock {
            obj: ObjKey::new("sessions", b"abc".to_vec()),
            cached_version: Some(7),
            lease_ms: None,
            wait_ms: 5000,
            take_over_after_ms: Some(110_000),
        });
        let bytes = encode(&req);
        assert_eq!(decode::<Request>(&bytes).unwrap(), req);
    }

    #[test]
    fn reply_round_trips() {
        let reply = Reply::Retrieved {
            value: vec![1, 2, 3],
            info: ObjectInfo {
                version: 3,
                lock_id: Some(9),
                lock_age_ms: 12,
                uninitialized: true,
                timeout: Timeout::Sliding { ms: 1200 },
            },
        };
        assert_eq!(decode::<Reply>(&encode(&reply)).unwrap(), reply);
    }

    #[test]
    fn the_taking_node_fills_in_its_own_bounds() {
        let obj = ObjKey::new("s", b"k".to_vec());
        let write = Op::Write {
            obj: obj.clone(),
            body: WriteBody::Keep,
            tags: None,
            timeout: None,
            lock_id: None,
            unlock: false,
            create: false,
            max_bytes: u64::MAX,
        };
        let lock = |lease_ms| Op::ReadAndLock {
            obj: obj.clone(),
            cached_version: None,
            lease_ms,
            wait_ms: 0,
            take_over_after_ms: None,
        };
        assert!(matches!(
            write.as_proposed(4096, 90_000),
            Op::Write {
                max_bytes: 4096,
                ..
            }
        ));
        assert_eq!(lock(None).as_proposed(4096, 90_000), lock(Some(90_000)));
        assert_eq!(lock(Some(5)).as_proposed(4096, 90_000), lock(Some(5)));
    }

    #[test]
    fn garbage_payload_is_an_error_not_a_panic() {
        let mut bytes = AlignedVec::<16>::new();
        bytes.extend_from_slice(&[0xff; 64]);
        assert!(decode::<Request>(&bytes).is_err());
    }
}
