use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::clock::ManualClock;

fn registry() -> (Arc<ManualClock>, Workers) {
    let clock = Arc::new(ManualClock::new(1_000));
    (Arc::clone(&clock), Workers::new(clock))
}

fn only(workers: &Workers) -> WorkerStatus {
    let mut all = workers.status();
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

#[test]
fn a_new_job_waits_with_no_rounds() {
    let (_, workers) = registry();
    workers.add("reconcile");
    let s = only(&workers);
    assert_eq!(s.name, "reconcile");
    assert_eq!(s.state, WorkerState::Waiting);
    assert_eq!((s.runs, s.failures, s.since_change_ms), (0, 0, None));
    assert_eq!(s.last_error, None);
}

#[test]
fn rounds_are_counted_timed_and_their_last_error_kept() {
    let (clock, workers) = registry();
    let worker = workers.add("liveness");
    worker.begin();
    clock.advance(30);
    assert_eq!(only(&workers).state, WorkerState::Running);
    assert_eq!(only(&workers).since_change_ms, Some(30));
    worker.end(Err("node 3 did not answer".into()));
    clock.advance(500);
    worker.begin();
    clock.advance(5);
    worker.end(Ok(()));
    clock.advance(100);
    let s = only(&workers);
    assert_eq!(s.state, WorkerState::Waiting);
    assert_eq!((s.runs, s.failures), (2, 1));
    assert_eq!(s.last_took_ms, 5);
    assert_eq!(s.since_change_ms, Some(100));
    // The error stays until another replaces it, with its age.
    assert_eq!(s.last_error.as_deref(), Some("node 3 did not answer"));
    assert_eq!(s.since_last_error_ms, Some(605));
}

#[test]
fn jobs_are_listed_by_name() {
    let (_, workers) = registry();
    for name in ["watch", "accept", "reconcile"] {
        workers.add(name);
    }
    let names: Vec<String> = workers.status().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["accept", "reconcile", "watch"]);
}

#[tokio::test(start_paused = true)]
async fn every_runs_rounds_until_shutdown_then_stops() {
    let (_, workers) = registry();
    let shutdown = CancellationToken::new();
    let rounds = Arc::new(AtomicU64::new(0));
    let job = workers
        .add("housekeeping")
        .every(Duration::from_millis(10), shutdown.clone(), {
            let (rounds, shutdown) = (Arc::clone(&rounds), shutdown.clone());
            move || {
                let n = rounds.fetch_add(1, Ordering::SeqCst) + 1;
                if n == 3 {
                    shutdown.cancel();
                }
                std::future::ready(if n == 2 {
                    Err("boom".to_string())
                } else {
                    Ok(())
                })
            }
        });
    tokio::time::timeout(Duration::from_secs(60), job)
        .await
        .expect("the job stops at shutdown");
    let s = only(&workers);
    assert_eq!(s.state, WorkerState::Stopped);
    assert_eq!(rounds.load(Ordering::SeqCst), 3);
    assert_eq!((s.runs, s.failures), (3, 1));
    assert_eq!(s.last_error.as_deref(), Some("boom"));
}

#[tokio::test(start_paused = true)]
async fn a_round_in_progress_is_cancelled_at_shutdown() {
    let (_, workers) = registry();
    let shutdown = CancellationToken::new();
    let job = tokio::spawn(workers.add("reconcile").every(
        Duration::from_millis(10),
        shutdown.clone(),
        || async {
            std::future::pending::<()>().await;
            Ok(())
        },
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while only(&workers).state != WorkerState::Running {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the round never started"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(60), job)
        .await
        .expect("the job stops at shutdown")
        .expect("the job does not panic");
    assert_eq!(only(&workers).state, WorkerState::Stopped);
    assert_eq!(only(&workers).runs, 0);
}

#[tokio::test]
async fn a_serving_job_shows_serving_then_its_error() {
    let (_, workers) = registry();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let job = tokio::spawn(workers.add("accept").serve(async move {
        let _ = stopped.await;
        Err("listener closed".to_string())
    }));
    // `serve` marks the job before its first await.
    tokio::task::yield_now().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while only(&workers).state != WorkerState::Serving {
        assert!(std::time::Instant::now() < deadline, "never shown serving");
        tokio::task::yield_now().await;
    }
    stop.send(()).expect("the job waits");
    job.await.expect("the job does not panic");
    let s = only(&workers);
    assert_eq!(s.state, WorkerState::Stopped);
    assert_eq!(s.last_error.as_deref(), Some("listener closed"));
}
