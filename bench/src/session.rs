//! The session provider under load, on a 3-node cluster (R=3):
//! - **cycles**: each client runs ASP.NET's request cycle on its own 4 KB session, as a
//!   web server does for every request: `get_item_exclusive` (read-and-lock) then
//!   `set_and_release_item_exclusive` (write back and unlock in one step), near cache on
//!   (the provider's default).
//! - **hand-off**: two requests take turns on one session; each waits in the grid's queue
//!   while the other holds the lock. The latency is from the holder starting its release
//!   to the waiter holding the lock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grid_proto::sync::lock;

use anyhow::Context;
use hdrhistogram::Histogram;
use session_provider::{ItemResult, ProviderSettings, SessionItems, SessionStateProvider};

use crate::load::{self, LoadResult};
use crate::nodes::{connection_string, start_cluster};

/// Bytes of a session's items.
pub const SESSION_BYTES: usize = 4096;

async fn provider(cs: &str) -> anyhow::Result<SessionStateProvider> {
    let mut settings = ProviderSettings::default();
    settings.set("connectionString", &format!("{cs};maxPoolSize=1"))?;
    Ok(SessionStateProvider::connect(settings, "bench-sessions").await?)
}

/// A 4 KB session whose payload encodes `n`, so every write changes it.
fn items(n: u64) -> anyhow::Result<SessionItems> {
    let mut items = SessionItems::default();
    items.set("n", &n)?;
    items.set("payload", &"x".repeat(SESSION_BYTES - 32))?;
    Ok(items)
}

/// One request cycle on session `id`.
async fn cycle(p: &SessionStateProvider, id: &str, n: u64) -> anyhow::Result<()> {
    let ItemResult::Found(item) = p.get_item_exclusive(id, Duration::from_secs(10)).await? else {
        anyhow::bail!("session {id} not acquired");
    };
    p.set_and_release_item_exclusive(id, &items(n)?, item.lock_id, false)
        .await?;
    Ok(())
}

/// Request cycles per second at each client count.
pub async fn cycles(
    cs: &str,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let mut providers = Vec::new();
    for c in 0..clients {
        let p = provider(cs).await?;
        p.set_and_release_item_exclusive(&format!("s{c}"), &items(0)?, None, true)
            .await?;
        providers.push(p);
    }
    let providers = Arc::new(providers);
    Ok(load::run(clients, warmup, duration, move |c, seq| {
        let providers = Arc::clone(&providers);
        async move { cycle(&providers[c], &format!("s{c}"), seq).await }
    })
    .await)
}

/// Lock hand-off latency between two requests taking turns on one session.
pub async fn hand_off(cs: &str, turns: u64) -> anyhow::Result<(u64, u64, u64)> {
    let (a, b) = (Arc::new(provider(cs).await?), Arc::new(provider(cs).await?));
    a.set_and_release_item_exclusive("shared", &items(0)?, None, true)
        .await?;
    // When the last release started, by either side.
    let released: Arc<Mutex<Option<Instant>>> = Arc::default();
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?,
    ));
    let mut tasks = Vec::new();
    for p in [a, b] {
        let (released, histogram) = (Arc::clone(&released), Arc::clone(&histogram));
        tasks.push(tokio::spawn(async move {
            for n in 0..turns {
                let ItemResult::Found(item) = p
                    .get_item_exclusive("shared", Duration::from_secs(10))
                    .await?
                else {
                    anyhow::bail!("not acquired");
                };
                let acquired = Instant::now();
                // Holding the lock: the other side is queued by now or soon.
                let since = lock(&released).take();
                if let Some(since) = since {
                    let us = acquired.duration_since(since).as_micros() as u64;
                    let _ = lock(&histogram).record(us.max(1));
                }
                tokio::task::yield_now().await;
                *lock(&released) = Some(Instant::now());
                p.set_and_release_item_exclusive("shared", &items(n)?, item.lock_id, false)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let h = lock(&histogram);
    Ok((h.len(), h.value_at_quantile(0.5), h.value_at_quantile(0.99)))
}

/// The whole session benchmark, printed as markdown.
pub async fn run(clients: &[usize], warmup: Duration, duration: Duration) -> anyhow::Result<()> {
    let nodes = start_cluster(3, &["--partitions".into(), "64".into()]).await?;
    let cs = connection_string(&nodes);
    println!("| clients | session cycles/s | p50 µs | p99 µs | errors |");
    println!("|---:|---:|---:|---:|---:|");
    for &n in clients {
        let r = cycles(&cs, n, warmup, duration).await?;
        println!(
            "| {n} | {:.0} | {} | {} | {} |",
            r.ops_per_sec, r.p50_us, r.p99_us, r.errors
        );
    }
    let (count, p50, p99) = hand_off(&cs, 1_000).await?;
    println!();
    println!(
        "lock hand-off between two queued requests: p50 {p50} µs, p99 {p99} µs ({count} hand-offs)"
    );
    Ok(())
}
