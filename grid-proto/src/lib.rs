//! Wire protocol of the data grid: what crosses a process boundary.
//!
//! - [`frame`]: length-prefixed frames with a protocol version and a request id, so one
//!   connection carries many requests in flight. The size limit is checked before any
//!   allocation.
//! - [`msg`]: requests ([`Request`], [`Op`]) and replies ([`Reply`]), encoded with rkyv and
//!   validated on receipt ([`decode`]); [`batch`]: frames written many to one write.
//! - [`events`]: events pushed to registered clients; [`geo`]: migration steps between
//!   sites.
//! - [`items`]: the item map, a value whose items a write can change one by one.
//! - [`hash`]: the stable key hash that places an object in a partition.
//! - [`limits`]: key, namespace and value bounds shared by client and node.
//! - [`map`]: the partition map; [`status`]: what a node reports for `gridctl status`.
//! - [`peer_auth`]: the challenge-response by which nodes prove the cluster secret.
//! - [`secret`]: constant-time token comparison and random bytes from the OS.
//! - [`sync`]: a lock that survives a panicked holder.
//!
//! The hard path through the system, which these types describe:
//!
//! ```text
//! client ──frame(Request::Op)──▶ node ──▶ partition(hash(ns,key) % P) ──▶ store.apply
//!    ▲                                                                     │
//!    └────────────────────frame(Reply, same request id)◀───────────────────┘
//! ```

pub mod backup;
pub mod batch;
pub mod events;
pub mod frame;
pub mod geo;
pub mod hash;
pub mod items;
pub mod limits;
pub mod map;
pub mod msg;
pub mod peer_auth;
pub mod secret;
pub mod status;
pub mod sync;

pub use frame::{Frame, FrameCodec, FrameError, PROTOCOL_VERSION};
pub use hash::{key_hash, partition_of};
pub use limits::{check_op, validate_object_key, KeyError, OpError, TagError};
pub use msg::{
    decode, encode, DecodeError, EventCause, EventId, GeoOp, GridEvent, MapNode, Millis,
    NodeStatus, ObjKey, ObjectInfo, Op, PartitionMap, RemoteStoreStatus, Reply, Request, Timeout,
    Unavailability, WorkerState, WorkerStatus, WriteBody,
};
