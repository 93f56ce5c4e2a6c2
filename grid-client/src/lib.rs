//! Client of the data grid.
//!
//! - [`connstr`]: ScaleOut-style connection strings into a validated [`ClientConfig`].
//! - [`conn`]: one pipelined connection (many requests in flight, replies matched by id).
//! - [`client`]: [`GridClient`], the typed API, with pooling and retries, and event
//!   subscriptions ([`EventSubscription`]).
//! - [`near_cache`]: the strictly coherent near cache (`clientCacheType`).
//! - [`error`]: the [`ClientError`] type.
//! - [`cli`]: the `gridctl` command line.
//!
//! ```text
//! GridClient::put ─▶ check limits ─▶ pool slot ─▶ Connection::call ─frame─▶ node
//!        ▲                                               │ (pending[id])
//!        └──────── typed result ◀── Reply ◀── reader task ◀─frame(id)─┘
//! ```

pub mod backup;
pub mod backup_file;
pub mod cli;
pub mod client;
pub mod conn;
pub mod connstr;
pub mod error;
pub mod near_cache;
pub mod tls;

pub use client::{
    Delivery, EventSubscription, GridClient, LockOptions, LockResult, Object, ReadResult,
    RemoteRead, UpdateOptions, WireBytes, WriteOptions, Written,
};
pub use connstr::{ClientConfig, ConnStringError, Gateway, NearCacheConfig, NodeCredentials};
pub use error::ClientError;
pub use grid_proto::{EventCause, EventId, GridEvent};
pub use grid_proto::{ObjectInfo, Timeout};
pub use near_cache::CacheStats;
