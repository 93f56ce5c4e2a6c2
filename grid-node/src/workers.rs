//! The node's background jobs by name, each with a status an operator can read
//! (`gridctl status --workers`, the admin endpoint's `/workers`): whether it is waiting,
//! running or stopped, how many rounds it ran, when the last one ended and its last
//! error.
//!
//! A periodic job runs its rounds through [`Worker::every`]; a job that serves until
//! shutdown (a listener) runs through [`Worker::serve`]. Times come from the node's
//! [`Clock`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grid_proto::sync::lock;
use grid_proto::{Millis, WorkerState, WorkerStatus};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;

/// What one round of a job gives back: an error text to show as its last error.
pub type Round = Result<(), String>;

/// The status of a job, kept by the registry.
#[derive(Debug, Default, Clone)]
struct Record {
    state: WorkerState,
    runs: u64,
    failures: u64,
    /// When the current round started (running) or the last one ended.
    changed_at: Option<Millis>,
    last_took_ms: u64,
    last_error: Option<(Millis, String)>,
}

/// Every job of one node.
#[derive(Debug, Clone)]
pub struct Workers {
    clock: Arc<dyn Clock>,
    records: Arc<Mutex<BTreeMap<&'static str, Record>>>,
}

impl Workers {
    /// An empty registry reading `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            records: Arc::default(),
        }
    }

    /// Registers the job `name` (waiting, no rounds yet). Names are unique per node; a
    /// second registration under a name starts its record afresh.
    pub fn add(&self, name: &'static str) -> Worker {
        lock(&self.records).insert(name, Record::default());
        Worker {
            name,
            workers: self.clone(),
        }
    }

    /// Every job's status, by name, as of now.
    pub fn status(&self) -> Vec<WorkerStatus> {
        let now = self.clock.now();
        lock(&self.records)
            .iter()
            .map(|(name, r)| status_of(name, r, now))
            .collect()
    }

    fn update(&self, name: &'static str, change: impl FnOnce(&mut Record, Millis)) {
        let now = self.clock.now();
        if let Some(record) = lock(&self.records).get_mut(name) {
            change(record, now);
        }
    }
}

/// A record as the status reply shows it, with times relative to `now`.
fn status_of(name: &str, r: &Record, now: Millis) -> WorkerStatus {
    let ago = |at: Millis| now.saturating_sub(at);
    WorkerStatus {
        name: name.to_string(),
        state: r.state,
        runs: r.runs,
        failures: r.failures,
        since_change_ms: r.changed_at.map(ago),
        last_took_ms: r.last_took_ms,
        last_error: r.last_error.as_ref().map(|(_, e)| e.clone()),
        since_last_error_ms: r.last_error.as_ref().map(|(at, _)| ago(*at)),
    }
}

/// One job's handle on its record.
#[derive(Debug, Clone)]
pub struct Worker {
    name: &'static str,
    workers: Workers,
}

impl Worker {
    /// Marks a round as started.
    fn begin(&self) {
        self.workers.update(self.name, |r, now| {
            r.state = WorkerState::Running;
            r.changed_at = Some(now);
        });
    }

    /// Marks the round started by [`Worker::begin`] as ended with `outcome`.
    fn end(&self, outcome: Round) {
        self.workers.update(self.name, |r, now| {
            r.last_took_ms = r.changed_at.map_or(0, |at| now.saturating_sub(at));
            r.state = WorkerState::Waiting;
            r.changed_at = Some(now);
            r.runs += 1;
            if let Err(e) = outcome {
                r.failures += 1;
                r.last_error = Some((now, e));
            }
        });
    }

    fn stop(&self, outcome: Round) {
        self.workers.update(self.name, |r, now| {
            r.state = WorkerState::Stopped;
            r.changed_at = Some(now);
            if let Err(e) = outcome {
                r.failures += 1;
                r.last_error = Some((now, e));
            }
        });
    }

    /// Runs `round` every `period` until `shutdown`; a round is cancelled at shutdown.
    /// When a round takes longer than the period, the next starts a period after it
    /// ended, never several at once.
    pub async fn every<F, Fut>(self, period: Duration, shutdown: CancellationToken, mut round: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Round>,
    {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => {
                    self.begin();
                    tokio::select! {
                        // A round that has finished is recorded, shutdown or not.
                        biased;
                        outcome = round() => self.end(outcome),
                        _ = shutdown.cancelled() => break,
                    }
                }
            }
        }
        self.stop(Ok(()));
    }

    /// Runs a job that serves until it returns (a listener, stopped by its own shutdown
    /// signal), shown as serving meanwhile.
    pub async fn serve<Fut>(self, job: Fut)
    where
        Fut: Future<Output = Round>,
    {
        self.workers.update(self.name, |r, now| {
            r.state = WorkerState::Serving;
            r.changed_at = Some(now);
        });
        let outcome = job.await;
        if let Err(e) = &outcome {
            tracing::error!(worker = self.name, error = %e, "a node job stopped");
        }
        self.stop(outcome);
    }
}

#[cfg(test)]
#[path = "workers_tests.rs"]
mod tests;
