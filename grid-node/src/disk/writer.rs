//! The one thread of a node that writes its Raft logs to disk, so no async task ever
//! blocks on a file. Jobs run in the order they were sent. Appends waiting together are
//! written one after another and then synced once per log (a group commit), and only
//! then told they are stored; under `everysec` they are told at once and the logs
//! written to are synced about once a second.
//!
//! ```text
//! loop: take every job waiting (up to BATCH)
//!   append  ─▶ write now, remember (log, done)
//!   other   ─▶ settle the appends remembered, then run it
//!   settle  ─▶ always: sync each log written, then done(result) in order
//!              else:   done(Ok) in order, the logs marked to sync later
//! every second (everysec): sync the marked logs
//! ```

use std::collections::HashMap;
use std::io;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use grid_proto::sync::lock;

use super::{DiskError, FsyncPolicy, SegmentLog};

/// Jobs taken together at most.
const BATCH: usize = 1024;

/// A log the writer appends to, shared with its group.
pub type SharedLog = Arc<Mutex<SegmentLog>>;

/// Told when an append is stored (or why it is not).
pub type Done = Box<dyn FnOnce(io::Result<()>) + Send>;

enum Job {
    Append {
        log: SharedLog,
        records: Vec<(u64, Vec<u8>)>,
        done: Done,
    },
    Run(Box<dyn FnOnce() + Send>),
    /// Sync every log written to, then reply.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The writer thread's handle; the thread ends once every handle is dropped (after the
/// jobs already sent).
#[derive(Debug, Clone)]
pub struct DiskWriter {
    jobs: Sender<Job>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Append { .. } => "Append",
            Job::Run(_) => "Run",
            Job::Flush(_) => "Flush",
        })
    }
}

impl DiskWriter {
    /// Starts the thread.
    pub fn start(policy: FsyncPolicy) -> io::Result<Self> {
        let (jobs, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("disk-writer".into())
            .spawn(move || run(rx, policy))?;
        Ok(Self {
            jobs,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// Appends `records` to `log`; `done` is told once they are stored as the policy says.
    pub fn append(&self, log: SharedLog, records: Vec<(u64, Vec<u8>)>, done: Done) {
        let job = Job::Append { log, records, done };
        if let Err(mpsc::SendError(Job::Append { done, .. })) = self.jobs.send(job) {
            done(Err(io::Error::other("the disk writer has stopped")));
        }
    }

    /// Runs `f` on the writer thread after every job sent before it, and returns its
    /// result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, DiskError> + Send + 'static,
    ) -> Result<T, DiskError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = Job::Run(Box::new(move || {
            let _ = tx.send(f());
        }));
        let stopped = || DiskError::Failed {
            dir: Default::default(),
            why: "the disk writer has stopped".into(),
        };
        self.jobs.send(job).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Makes every append sent so far durable, whatever the policy (a graceful stop).
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.jobs.send(Job::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Waits for the thread to finish the jobs sent so far, if this is the last handle.
    pub fn finish(self) {
        let Self { jobs, thread } = self;
        drop(jobs);
        if Arc::strong_count(&thread) == 1 {
            if let Some(t) = lock(&thread).take() {
                let _ = t.join();
            }
        }
    }
}

fn run(rx: Receiver<Job>, policy: FsyncPolicy) {
    let mut dirty: HashMap<usize, SharedLog> = HashMap::new();
    let mut next_sync = policy.background_interval().map(|i| Instant::now() + i);
    loop {
        let first = match next_sync {
            Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(job) => Some(job),
                Err(_) => break,
            },
        };
        if let (Some(at), Some(interval)) = (next_sync, policy.background_interval()) {
            if Instant::now() >= at {
                sync_all(&mut dirty);
                next_sync = Some(Instant::now() + interval);
            }
        }
        let Some(first) = first else { continue };
        let mut pending = Vec::new();
        for job in std::iter::once(first).chain(rx.try_iter().take(BATCH - 1)) {
            match job {
                Job::Append { log, records, done } => {
                    let refs: Vec<(u64, &[u8])> =
                        records.iter().map(|(i, r)| (*i, r.as_slice())).collect();
                    let written = lock(&log).append(&refs).map_err(io::Error::other);
                    pending.push((log, written, done));
                }
                Job::Run(f) => {
                    settle(std::mem::take(&mut pending), policy, &mut dirty);
                    f();
                }
                Job::Flush(reply) => {
                    settle(std::mem::take(&mut pending), policy, &mut dirty);
                    sync_all(&mut dirty);
                    let _ = reply.send(());
                }
            }
        }
        settle(pending, policy, &mut dirty);
    }
    // What `everysec` or `never` left unsynced goes to disk as the node stops.
    sync_all(&mut dirty);
}

/// Tells each append written how it went: under `always` after one sync per log.
fn settle(
    pending: Vec<(SharedLog, io::Result<()>, Done)>,
    policy: FsyncPolicy,
    dirty: &mut HashMap<usize, SharedLog>,
) {
    let mut synced: HashMap<usize, Result<(), String>> = HashMap::new();
    for (log, written, done) in pending {
        let key = Arc::as_ptr(&log) as usize;
        let result = written.and_then(|()| {
            if !policy.sync_each_append() {
                dirty.insert(key, log);
                return Ok(());
            }
            synced
                .entry(key)
                .or_insert_with(|| lock(&log).sync().map_err(|e| e.to_string()))
                .clone()
                .map_err(io::Error::other)
        });
        done(result);
    }
}

fn sync_all(dirty: &mut HashMap<usize, SharedLog>) {
    for (_, log) in dirty.drain() {
        if let Err(e) = lock(&log).sync() {
            tracing::error!(error = %e, "background sync of a log failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::test_dir::TempDir;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn log_in(dir: &std::path::Path) -> SharedLog {
        Arc::new(Mutex::new(SegmentLog::open(dir, 1 << 20).unwrap().log))
    }

    #[tokio::test]
    async fn appends_are_stored_in_order_and_a_later_job_sees_them() {
        for policy in [
            FsyncPolicy::Always,
            FsyncPolicy::EverySec,
            FsyncPolicy::Never,
        ] {
            let dir = TempDir::new();
            let writer = DiskWriter::start(policy).unwrap();
            let log = log_in(&dir.0);
            let told = Arc::new(AtomicUsize::new(0));
            for i in 1..=50u64 {
                let told = Arc::clone(&told);
                writer.append(
                    Arc::clone(&log),
                    vec![(i, vec![i as u8; 10])],
                    Box::new(move |r| {
                        r.unwrap();
                        // Told in the order sent.
                        assert_eq!(told.fetch_add(1, Ordering::SeqCst), i as usize - 1);
                    }),
                );
            }
            let last = {
                let log = Arc::clone(&log);
                writer.run(move || Ok(lock(&log).last_index())).await
            };
            assert_eq!(last.unwrap(), Some(50), "{policy}");
            assert_eq!(told.load(Ordering::SeqCst), 50, "{policy}");
            drop(log);
            writer.finish();
            let reopened = SegmentLog::open(&dir.0, 1 << 20).unwrap();
            assert_eq!(reopened.entries.len(), 50, "{policy}");
            assert!(reopened.cut.is_none());
        }
    }

    #[tokio::test]
    async fn a_refused_append_is_told_its_error() {
        let dir = TempDir::new();
        let writer = DiskWriter::start(FsyncPolicy::Always).unwrap();
        let log = log_in(&dir.0);
        let (tx, rx) = tokio::sync::oneshot::channel();
        writer.append(
            Arc::clone(&log),
            vec![(1, b"a".to_vec()), (3, b"gap".to_vec())],
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        let err = rx.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("3"), "{err}");
        let last = writer.run(move || Ok(lock(&log).last_index())).await;
        assert_eq!(last.unwrap(), None, "nothing of a refused append is kept");
    }
}
