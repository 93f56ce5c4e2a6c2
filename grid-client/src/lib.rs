//! Client of the data grid.
//!
//! - [`connstr`]: ScaleOut-style connection strings into a validated [`ClientConfig`].
//! - [`conn`]: one pipelined connection (many requests in flight, replies matched by id).
//! - [`client`]: [`GridClient`], the typed API, with pooling and retries.
//! - [`error`]: the [`ClientError`] type.
//! - [`cli`]: the `gridctl` command line.
//!
//! ```text
//! GridClient::put ─▶ check limits ─▶ pool slot ─▶ Connection::call ─frame─▶ node
//!        ▲                                               │ (pending[id])
//!        └──────── typed result ◀── Reply ◀── reader task ◀─frame(id)─┘
//! ```

pub mod cli;
pub mod client;
pub mod conn;
pub mod connstr;
pub mod error;

pub use client::{GridClient, LockOptions, LockResult, Object, ReadResult, UpdateOptions};
pub use connstr::{ClientConfig, ConnStringError, Gateway};
pub use error::ClientError;
pub use grid_proto::{ObjectInfo, Timeout};
