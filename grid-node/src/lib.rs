//! The grid node: serves the wire protocol over TCP and runs the partitions it holds.
//!
//! - [`store`]: the pure partition state machine (objects, versions, locks, expiry) and
//!   the FIFO lock wait queue.
//! - [`partition`]: one partition as its leader runs it (store + waiters + [`outbox`] of
//!   events owed to clients).
//! - [`geo`]: geo replication: serving other sites, pulling missed objects, resolving
//!   hand-overs left half-done.
//! - [`events`]: delivery of outbox events (expiry, low-memory eviction) to the clients
//!   registered on this node, with acknowledgement and redelivery.
//! - [`node`]: the partitions of one node and the single entry point for operations.
//! - [`conn`] and [`server`]: the TCP protocol server, its accept loop and ticker;
//!   [`admin`] and [`metrics`]: the admin HTTP endpoint.
//! - [`config`] and [`cli`]: validated settings and the `grid-node` command line;
//!   [`limits`]: the bounds of every connection.
//! - [`clock`]: the injected time source; [`log_limit`]: rate limits for repeated log lines.
//!
//! ```text
//! client ─frame─▶ conn ─▶ node.execute ─▶ partition[hash(ns,key) % P] ─▶ store.apply
//!   ▲                                          │ (lock busy: park in queue)  │
//!   └──────────── frame(reply) ◀── writer ◀────┴──────── reply / events ◀────┘
//! ```

pub mod admin;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod events;
pub mod format;
pub mod geo;
pub mod limits;
pub mod log_limit;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod partition;
pub mod reply_queue;
pub mod server;
pub mod store;
pub mod tls;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::NodeConfig;
pub use server::{start, RunningNode, StartError};

/// The allocator node binaries install (`#[global_allocator]`). Values are large and
/// short-lived; glibc's allocator raises its threshold for returning memory to the
/// system after large frees and keeps a 64 MiB arena per thread, so memory freed by
/// eviction and log compaction stayed in the process (RSS far past `--max-memory`).
/// mimalloc gives freed pages back soon after.
pub use tikv_jemallocator::Jemalloc as NodeAllocator;
