//! The grid node: serves the wire protocol over TCP and runs the partitions it holds.
//!
//! - [`store`]: the pure partition state machine (objects, versions, locks, expiry) and
//!   the FIFO lock wait queue.
//! - [`partition`]: one partition as its leader runs it (store + waiters).
//! - [`clock`]: the injected time source.
//!
//! ```text
//! client ─frame─▶ conn ─▶ node.execute ─▶ partition[hash(ns,key) % P] ─▶ store.apply
//!   ▲                                          │ (lock busy: park in queue)  │
//!   └──────────── frame(reply) ◀── writer ◀────┴──────── reply / events ◀────┘
//! ```

pub mod clock;
pub mod partition;
pub mod store;
