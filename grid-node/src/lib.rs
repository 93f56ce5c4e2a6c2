//! The grid node: serves the wire protocol over TCP (or TLS), runs the Raft groups of the
//! partitions it holds, and links to other sites.
//!
//! - [`server`]: starts a node: listeners, the cluster runtime and every background job
//!   ([`workers`], each named, with a status); [`conn`]: one connection, authenticated
//!   and bounded ([`limits`], [`reply_queue`]); [`admin`] and [`metrics`]: the admin
//!   HTTP endpoint.
//! - [`node`]: the edge every operation passes (limits, memory refusals, remote pulls)
//!   before the cluster runtime.
//! - [`cluster`]: placement, the control group, one openraft group per partition, the
//!   peer transport, and the runtime that hosts and moves groups.
//! - [`partition`]: a partition's replicated state machine (the pure [`store`] plus lock
//!   queues and the [`outbox`] of events), applied identically on every replica.
//! - [`events`]: delivery of outbox events (expiry, low-memory eviction) to the clients
//!   registered on this node, with acknowledgement and redelivery.
//! - [`geo`]: geo replication: serving other sites, pulling missed objects, resolving
//!   hand-overs left half-done.
//! - [`format`](mod@format): the versions of every format nodes exchange or snapshot.
//! - [`config`] and [`cli`]: validated settings and the `grid-node` command line;
//!   [`tls`]: certificates and keys.
//! - [`disk`]: Raft's state on disk for `--data-dir`: checksummed log segments, damage
//!   cut away on start, and the fsync policies.
//! - [`exports`]: partition copies kept while a backup pages through them.
//! - [`clock`]: the injected time source; [`log_limit`]: rate limits for repeated log lines.
//!
//! One write, from socket to reply:
//!
//! ```text
//! client ─frame─▶ conn (auth, limits) ─▶ node.execute (check_op, memory) ─▶ cluster.execute
//!   ─▶ group of partition hash(ns,key) % P, run by its leader (else NotLeader + leader hint)
//!   ─▶ raft.client_write(GroupCommand) ─▶ append + replicate to a quorum ─▶ commit
//!   ─▶ every replica: state_machine.apply ─▶ partition.apply ─▶ store.apply ─▶ Outcome
//!   ─▶ leader: Outcome.reply to the caller, answers to parked lock waiters
//!   ─▶ conn: reply queue ─▶ writer ─frame(same request id)─▶ client
//! ```
//!
//! A plain read goes `group.read`: the leader confirms it still leads (openraft's
//! linearizable read), then answers from its own state; the access is recorded later, in
//! a batch, through the log.

pub mod admin;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod disk;
pub mod events;
pub mod exports;
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
pub mod workers;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::NodeConfig;
pub use server::{start, RunningNode, StartError};

/// The allocator node binaries install (`#[global_allocator]`). Values are large and
/// short-lived; glibc's allocator raises its threshold for returning memory to the
/// system after large frees and keeps a 64 MiB arena per thread, so memory freed by
/// eviction and log compaction stayed in the process (RSS far past `--max-memory`).
/// jemalloc gives freed pages back soon after (mimalloc, also measured, commits far more
/// memory at start).
pub use tikv_jemallocator::Jemalloc as NodeAllocator;
