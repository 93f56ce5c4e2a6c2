//! The partition store core: plain synchronous state, fed with operations and the
//! deciding node's clock reading, returning replies and events. No I/O, no timers.
//!
//! - [`state::Store`]: the replicated state machine of one partition (objects, versions,
//!   locks, expiry). Every decision depends only on its state, the operation and the `now`
//!   passed in, so replicas applying the same commands agree exactly.
//! - [`expiry::DeadlineIndex`]: finds due objects and due lock leases without a scan.
//! - [`waiters::LockQueue`]: the FIFO queue of requests waiting for a lock. It is part
//!   of the replicated partition state ([`crate::partition`]), so the lock passes to the
//!   first waiter in the same apply on every replica; only the node that holds a waiter's
//!   request answers it.

pub mod expiry;
pub mod state;
pub mod waiters;

pub use state::{Applied, GeoRole, Store, StoreConfig, StoreEvent, StoreStats};
pub use waiters::{LockQueue, LockWait, QueueFull};

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod state_tests;
