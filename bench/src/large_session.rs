//! A large session (256 KB of JSON items) changed by 100 bytes per request, on a 3-node
//! cluster (R = 3): what one request cycle (lock-read, change one item, write back and
//! unlock) sends, and how many cycles per second `clients` sessions sustain.
//!
//! - **whole** (before per-item writes): the session written back as one JSON object,
//!   uncompressed, under the lock (`update` + unlock), as the provider did before.
//! - **per item** (now): only the changed item, merged on the node
//!   (`set_and_release_item_exclusive`).
//! - **redis-repl**: a Redis session store's cycle on a primary with 2 replicas: `GET`
//!   the session, `SET` it whole, `WAIT 2`.
//!
//! Bytes sent are the client's bytes on the wire per cycle (both requests; the lock-read
//! of the grid sends the cached version and gets `NotModified`); for Redis, the value
//! bytes of the `SET`. Rounds interleave the three; medians.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use grid_client::UpdateOptions;
use session_provider::{ItemResult, ProviderSettings, SessionItems, SessionStateProvider};
use tokio::sync::Mutex;

use crate::load::{self, median};
use crate::nodes::{connection_string, start_cluster};
use crate::redis_peer::{RedisClient, RedisReplicated, REPLICAS};

const NS: &str = "bench-large";
/// Items of the session besides the small one, 16 KB of JSON each.
const PARTS: usize = 16;

/// A session of `PARTS` carts of products (JSON, compressible as real carts are) and one
/// 100-byte item that each request changes.
pub fn session(seed: u64) -> SessionItems {
    const WORDS: [&str; 16] = [
        "red", "shirt", "cotton", "blue", "jeans", "slim", "size", "medium", "large", "shoe",
        "leather", "black", "white", "wool", "sock", "pack",
    ];
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut items = SessionItems::default();
    for part in 0..PARTS {
        let mut cart = Vec::new();
        let mut size = 0;
        while size < 16 * 1024 {
            let name: Vec<&str> = (0..4).map(|_| WORDS[(next() % 16) as usize]).collect();
            let product = serde_json::json!({
                "sku": format!("{:010}", next() % 10_000_000_000),
                "name": name.join(" "),
                "price": (next() % 100_000) as f64 / 100.0,
                "qty": next() % 5 + 1,
            });
            size += product.to_string().len() + 1;
            cart.push(product);
        }
        // Sessions of this size hold plain data: setting it cannot fail.
        let _ = items.set(&format!("cart{part}"), &cart);
    }
    let _ = items.set("small", &"0".repeat(100));
    items
}

/// The session's size as one JSON object (the form written back whole).
fn whole_bytes(items: &SessionItems) -> Vec<u8> {
    serde_json::to_vec(&items.to_json()).unwrap_or_default()
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Whole,
    PerItem,
}

struct Client {
    provider: SessionStateProvider,
    items: Mutex<SessionItems>,
}

async fn grid_cycle(c: &Client, id: &str, n: u64, mode: Mode) -> anyhow::Result<()> {
    let p = &c.provider;
    let ItemResult::Found(held) = p.get_item_exclusive(id, Duration::from_secs(10)).await? else {
        anyhow::bail!("session {id} not acquired");
    };
    let mut items = c.items.lock().await;
    items.set("small", &format!("{n:0100}"))?;
    match mode {
        Mode::PerItem => {
            // What the request changed, over what it read.
            let mut changed = held.items;
            changed.set("small", &format!("{n:0100}"))?;
            p.set_and_release_item_exclusive(id, &changed, held.lock_id, false)
                .await?;
        }
        Mode::Whole => {
            let options = UpdateOptions {
                timeout: None,
                expected_version: None,
                lock_id: held.lock_id,
                unlock: true,
            };
            p.client()
                .update(NS, id, whole_bytes(&items), options)
                .await?;
        }
    }
    Ok(())
}

/// One grid run: cycles per second and client bytes sent per cycle.
async fn grid_run(
    cs: &str,
    clients: usize,
    mode: Mode,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<(f64, f64)> {
    let mut all = Vec::new();
    for c in 0..clients {
        let mut settings = ProviderSettings::default();
        settings.set("connectionString", &format!("{cs};maxPoolSize=1"))?;
        settings.set("namespace", NS)?;
        let provider = SessionStateProvider::connect(settings, NS).await?;
        let items = session(c as u64 + 1);
        let id = format!("{mode:?}-{c}");
        match mode {
            Mode::PerItem => {
                provider
                    .set_and_release_item_exclusive(&id, &items, None, true)
                    .await?
            }
            Mode::Whole => {
                provider
                    .client()
                    .put(NS, &id, whole_bytes(&items), grid_client::Timeout::None)
                    .await?;
            }
        }
        all.push(Client {
            provider,
            items: Mutex::new(items),
        });
    }
    let all = Arc::new(all);
    let sent = |all: &[Client]| -> u64 {
        all.iter()
            .map(|c| c.provider.client().wire_bytes().sent)
            .sum()
    };
    let before = sent(&all);
    let (shared, done) = (Arc::clone(&all), Arc::new(AtomicU64::new(0)));
    let counted = Arc::clone(&done);
    let result = load::run(clients, warmup, duration, move |c, seq| {
        let (all, done) = (Arc::clone(&shared), Arc::clone(&counted));
        async move {
            grid_cycle(&all[c], &format!("{mode:?}-{c}"), seq, mode).await?;
            done.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    })
    .await;
    anyhow::ensure!(
        result.errors == 0,
        "{mode:?}: {} cycles failed",
        result.errors
    );
    let cycles = done.load(Ordering::Relaxed).max(1) as f64;
    let per_cycle = (sent(&all) - before) as f64 / cycles;
    Ok((result.ops_per_sec, per_cycle))
}

/// One Redis run: cycles per second and `SET` value bytes per cycle.
async fn redis_run(
    addr: &str,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<(f64, f64)> {
    let mut conns = Vec::new();
    let value = whole_bytes(&session(1));
    for c in 0..clients {
        let mut conn = RedisClient::connect(addr).await?;
        conn.set(&format!("s{c}"), &value).await?;
        conns.push(Mutex::new(conn));
    }
    let conns = Arc::new(conns);
    let bytes = value.len() as f64;
    let result = load::run(clients, warmup, duration, move |c, seq| {
        let conns = Arc::clone(&conns);
        async move {
            let mut conn = conns[c].lock().await;
            let key = format!("s{c}");
            let mut value = conn.get(&key).await?.unwrap_or_default();
            // The change: 100 bytes of the session, as the grid's cycle makes.
            let stamp = format!("{seq:0100}");
            let at = value.len().saturating_sub(200);
            value[at..at + 100].copy_from_slice(stamp.as_bytes());
            conn.set(&key, &value).await?;
            anyhow::ensure!(
                conn.wait(REPLICAS, 1000).await? == REPLICAS,
                "WAIT timed out"
            );
            Ok(())
        }
    })
    .await;
    anyhow::ensure!(result.errors == 0, "redis: {} cycles failed", result.errors);
    Ok((result.ops_per_sec, bytes))
}

/// The whole benchmark as markdown.
pub async fn run(
    clients: usize,
    rounds: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<String> {
    let nodes = start_cluster(3, &["--partitions".into(), "64".into()]).await?;
    let cs = connection_string(&nodes);
    let redis = RedisReplicated::start().await?;
    let sample = session(1);
    let mut rows: [(&str, Vec<f64>, Vec<f64>); 3] = [
        (
            "grid, whole session written back (before)",
            Vec::new(),
            Vec::new(),
        ),
        ("grid, changed item only (now)", Vec::new(), Vec::new()),
        ("redis-repl GET + SET + WAIT 2", Vec::new(), Vec::new()),
    ];
    for _ in 0..rounds {
        for (i, row) in rows.iter_mut().enumerate() {
            let (rate, bytes) = match i {
                0 => grid_run(&cs, clients, Mode::Whole, warmup, duration).await?,
                1 => grid_run(&cs, clients, Mode::PerItem, warmup, duration).await?,
                _ => redis_run(&redis.primary.addr(), clients, warmup, duration).await?,
            };
            row.1.push(rate);
            row.2.push(bytes);
        }
    }
    let mut out = format!(
        "Session of {} bytes as JSON ({} as the grid stores it, items compressed from 1 KiB), \
         one 100-byte item changed per request; {clients} clients, each on its own session; \
         {rounds} rounds of {duration:?}, medians.\n\n",
        whole_bytes(&sample).len(),
        sample.encode().len(),
    );
    out.push_str("| backend | cycles/s | bytes sent per cycle | cycles/s vs redis-repl |\n");
    out.push_str("|---|---:|---:|---:|\n");
    let redis_rate = median(rows[2].1.clone());
    for (name, rates, bytes) in rows {
        let rate = median(rates);
        out.push_str(&format!(
            "| {name} | {rate:.0} | {:.0} | {:.2} |\n",
            median(bytes),
            rate / redis_rate
        ));
    }
    Ok(out)
}
