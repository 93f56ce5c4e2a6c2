//! Linearizable reads: answered under a leader lease when one holds, otherwise after a
//! leadership confirmation (read index) that concurrent reads share.
//!
//! **Sharing.** A read is served once a confirmation that started after it arrived has
//! completed; reads arriving while one is in flight share the next, so a burst of reads
//! costs two heartbeat rounds, not one each.
//!
//! **The lease.** A confirmation that started at `t` proves that a quorum acknowledged a
//! heartbeat this leader sent after `t`. Each of those followers refuses to vote for
//! anyone else until its own leader lease (openraft's `election_timeout_max`, counted from
//! when it received that heartbeat, so after `t`) has passed, so no other leader can be
//! elected before `t + election_timeout_max`. The leader therefore answers reads from its
//! own state, with no round, until `t + lease` on its monotonic clock, where the lease is
//! a fraction of that ([`lease_for`]): the margin covers clock-rate drift between nodes
//! and the time a read takes once admitted. A paused leader cannot misuse an old lease:
//! the monotonic clock keeps running while the process is stopped, so on resuming its
//! lease has lapsed and reads go through a confirmation, which a deposed leader fails.
//! The lease is per term: a new term needs a new confirmation (which also waits until
//! everything committed before it is applied here).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use grid_proto::sync::lock;
use tokio::time::Instant;

/// The lease a leader may take for reads, given openraft's `election_timeout_max` (how
/// long followers refuse votes after hearing from it): 40% of it. With the default
/// 500 ms - 1 s election timeout that is 400 ms, leaving 600 ms for drift and delays.
pub(crate) fn lease_for(election_timeout_max: Duration) -> Duration {
    election_timeout_max * 2 / 5
}

/// The read confirmations and lease of one group.
#[derive(Debug)]
pub(super) struct ReadConfirmations {
    /// Reads that asked for a confirmation, numbered in arrival order.
    arrived: AtomicU64,
    /// Every read numbered up to this is covered by a completed confirmation.
    confirmed: AtomicU64,
    /// One confirmation in flight at a time.
    barrier: tokio::sync::Mutex<()>,
    /// How long a confirmation lets reads go without another.
    lease: Duration,
    /// The term of the last confirmation and when its lease ends.
    leased: Mutex<Option<(u64, Instant)>>,
}

impl ReadConfirmations {
    /// Confirmations granting leases of `lease` (zero: no lease reads).
    pub(super) fn new(lease: Duration) -> Self {
        Self {
            arrived: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            barrier: tokio::sync::Mutex::new(()),
            lease,
            leased: Mutex::new(None),
        }
    }

    /// True while a confirmation made in `term` lets a read be answered without another.
    pub(super) fn leased(&self, term: u64) -> bool {
        lock(&self.leased).is_some_and(|(t, until)| t == term && Instant::now() < until)
    }

    /// Returns once a confirmation covering this read has completed, running `confirm`
    /// (for `term`) when none that started after the read's arrival has. A confirmation
    /// that succeeds starts a lease for `term`.
    pub(super) async fn confirm<E, Fut>(
        &self,
        term: u64,
        confirm: impl FnOnce() -> Fut,
    ) -> Result<(), E>
    where
        Fut: Future<Output = Result<(), E>>,
    {
        let ticket = self.arrived.fetch_add(1, Ordering::AcqRel) + 1;
        let _one_at_a_time = self.barrier.lock().await;
        if self.confirmed.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        let covers = self.arrived.load(Ordering::Acquire);
        let started = Instant::now();
        confirm().await?;
        self.confirmed.fetch_max(covers, Ordering::AcqRel);
        if !self.lease.is_zero() {
            let until = started + self.lease;
            let mut leased = lock(&self.leased);
            if leased.is_none_or(|(t, end)| t != term || end < until) {
                *leased = Some((term, until));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "reads_tests.rs"]
mod tests;
