use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use super::*;

const LEASE: Duration = Duration::from_millis(800);

#[tokio::test]
async fn reads_waiting_on_a_confirmation_share_the_next_one() {
    let reads = Arc::new(ReadConfirmations::new(Duration::ZERO));
    let rounds = Arc::new(AtomicUsize::new(0));
    let (release, held) = tokio::sync::oneshot::channel::<()>();
    // The first read's confirmation is held until the others have arrived.
    let first = tokio::spawn({
        let (reads, rounds) = (Arc::clone(&reads), Arc::clone(&rounds));
        async move {
            reads
                .confirm(1, || async move {
                    rounds.fetch_add(1, Ordering::SeqCst);
                    let _ = held.await;
                    Ok::<(), ()>(())
                })
                .await
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
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
                    .confirm(1, || async move {
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
    assert!(!reads.leased(1), "no lease without a lease length");
}

#[tokio::test]
async fn a_failed_confirmation_covers_nothing_and_grants_no_lease() {
    let reads = ReadConfirmations::new(LEASE);
    assert_eq!(
        reads.confirm(1, || async { Err("no quorum") }).await,
        Err("no quorum")
    );
    assert!(!reads.leased(1));
    let mut ran = false;
    reads
        .confirm(1, || {
            ran = true;
            async { Ok::<(), &str>(()) }
        })
        .await
        .expect("confirmed");
    assert!(ran, "the next read confirmed for itself");
}

#[tokio::test(start_paused = true)]
async fn a_lease_runs_from_the_start_of_its_confirmation_and_only_for_its_term() {
    let reads = ReadConfirmations::new(LEASE);
    // The confirmation itself takes 300 ms: the lease counts from before it.
    reads
        .confirm(4, || async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<(), ()>(())
        })
        .await
        .expect("confirmed");
    assert!(reads.leased(4));
    assert!(!reads.leased(5), "another term has no lease");
    tokio::time::advance(Duration::from_millis(499)).await;
    assert!(reads.leased(4));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(
        !reads.leased(4),
        "lapsed 800 ms after the confirmation started"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pause_longer_than_the_lease_leaves_none() {
    let reads = ReadConfirmations::new(LEASE);
    reads
        .confirm(2, || async { Ok::<(), ()>(()) })
        .await
        .expect("confirmed");
    assert!(reads.leased(2));
    // A stopped process resumes with its monotonic clock moved on.
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(!reads.leased(2));
}

#[test]
fn the_lease_is_well_inside_the_followers_vote_lease() {
    assert_eq!(
        lease_for(Duration::from_secs(2)),
        Duration::from_millis(800)
    );
    assert!(lease_for(Duration::from_millis(500)) < Duration::from_millis(500) / 2);
}
