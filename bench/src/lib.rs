//! Benchmarks of the grid: real node processes on loopback, a load generator with HDR
//! latency histograms, and CPU accounting from `/proc`.
//!
//! - [`nodes`]: start, kill and settle `grid-node` release processes; [`procfs`]: their
//!   RSS and CPU time.
//! - [`load`]: fixed-duration closed-loop load with warm-up, reporting ops/s and
//!   percentiles.
//! - [`compare`]: the grid, Redis and etcd side by side in interleaved rounds;
//!   [`floor`]: the raw loopback round trip; [`report`]: JSON, markdown and SVG.
//! - [`memory`]: bytes per object per replica; [`failover`]: write gaps after kill -9;
//!   [`idle`]: CPU of an idle cluster.
//! - [`durable`]: the grid with `--data-dir` against Redis with its append-only file;
//!   restart, backup and restore of a filled node.
//! - [`log_store`]: the on-disk log's choice, the node's segment files against redb.
//! - [`raft_core`]: openraft 0.9 against 0.10 alone, in one process, on the write path.
//! - [`geo`]: pull-on-miss between two sites against a local read; QUIC against TCP.
//! - [`session`]: the session provider's request cycle and lock hand-off latency.
//! - [`redis_peer`] and [`etcd_peer`]: the peers, started from their Debian packages on
//!   loopback, with minimal clients (RESP2; etcd's JSON gateway over HTTP/1.1).

pub mod codec;
pub mod compare;
pub mod durable;
pub mod etcd_peer;
pub mod failover;
pub mod floor;
pub mod geo;
pub mod idle;
pub mod large_session;
pub mod load;
pub mod log_store;
pub mod memory;
pub mod nodes;
pub mod procfs;
pub mod raft_core;
pub mod redis_peer;
pub mod report;
pub mod session;
