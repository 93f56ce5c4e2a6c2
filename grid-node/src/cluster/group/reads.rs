//! Linearizable reads that share their leadership confirmations: a read is served once a
//! confirmation that started after it arrived has completed, and reads arriving while one
//! is in flight share the next, so a burst of reads costs two heartbeat rounds, not one
//! each.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

/// The confirmations of one group.
#[derive(Debug, Default)]
pub(super) struct ReadConfirmations {
    /// Reads that asked for a confirmation, numbered in arrival order.
    arrived: AtomicU64,
    /// Every read numbered up to this is covered by a completed confirmation.
    confirmed: AtomicU64,
    /// One confirmation in flight at a time.
    barrier: tokio::sync::Mutex<()>,
}

impl ReadConfirmations {
    /// Returns once a confirmation covering this read has completed, running `confirm`
    /// when none that started after the read's arrival has.
    pub(super) async fn confirm<E, Fut>(&self, confirm: impl FnOnce() -> Fut) -> Result<(), E>
    where
        Fut: Future<Output = Result<(), E>>,
    {
        let ticket = self.arrived.fetch_add(1, Ordering::AcqRel) + 1;
        let _one_at_a_time = self.barrier.lock().await;
        if self.confirmed.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        let covers = self.arrived.load(Ordering::Acquire);
        confirm().await?;
        self.confirmed.fetch_max(covers, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn reads_waiting_on_a_confirmation_share_the_next_one() {
        let reads = Arc::new(ReadConfirmations::default());
        let rounds = Arc::new(AtomicUsize::new(0));
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        // The first read's confirmation is held until the others have arrived.
        let first = tokio::spawn({
            let (reads, rounds) = (Arc::clone(&reads), Arc::clone(&rounds));
            async move {
                reads
                    .confirm(|| async move {
                        rounds.fetch_add(1, Ordering::SeqCst);
                        let _ = held.await;
                        Ok::<(), ()>(())
                    })
                    .await
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while rounds.load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "first round never ran"
            );
            tokio::task::yield_now().await;
        }
        let later: Vec<_> = (0..10)
            .map(|_| {
                let (reads, rounds) = (Arc::clone(&reads), Arc::clone(&rounds));
                tokio::spawn(async move {
                    reads
                        .confirm(|| async move {
                            rounds.fetch_add(1, Ordering::SeqCst);
                            Ok::<(), ()>(())
                        })
                        .await
                })
            })
            .collect();
        while reads.arrived.load(Ordering::SeqCst) < 11 {
            assert!(std::time::Instant::now() < deadline, "reads never arrived");
            tokio::task::yield_now().await;
        }
        release.send(()).expect("the first round waits");
        first.await.expect("runs").expect("confirmed");
        for read in later {
            read.await.expect("runs").expect("confirmed");
        }
        assert_eq!(
            rounds.load(Ordering::SeqCst),
            2,
            "ten later reads shared one round"
        );
    }

    #[tokio::test]
    async fn a_failed_confirmation_covers_nothing() {
        let reads = ReadConfirmations::default();
        assert_eq!(
            reads.confirm(|| async { Err("no quorum") }).await,
            Err("no quorum")
        );
        let mut ran = false;
        reads
            .confirm(|| {
                ran = true;
                async { Ok::<(), &str>(()) }
            })
            .await
            .expect("confirmed");
        assert!(ran, "the next read confirmed for itself");
    }
}
