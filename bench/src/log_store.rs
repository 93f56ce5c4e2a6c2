//! The choice of the on-disk Raft log, measured: the node's own segment files
//! (`grid_node::disk::SegmentLog`: append-only, checksummed records) against redb (a
//! well-kept pure-Rust embedded engine: copy-on-write B-trees, a commit per
//! transaction), both writing 4 KB entries keyed by index into a fresh directory on the
//! file system of `--dir`.
//!
//! Per backend, in rounds that alternate the two: entries appended with a sync after
//! each append of one entry (`--fsync always` for a lone writer), of 16 entries (a
//! batch), and with no sync (`everysec` and `never`, whose syncs happen off the write
//! path); then the time to open the log again and read every entry back (a restart).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use grid_node::disk::SegmentLog;
use redb::{Database, Durability, ReadableDatabase, TableDefinition};

const ENTRIES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// How one measurement appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// Entries per append.
    pub batch: usize,
    /// Whether each append is synced before the next.
    pub sync: bool,
}

/// The modes measured, in order.
pub const MODES: [Mode; 3] = [
    Mode {
        batch: 1,
        sync: true,
    },
    Mode {
        batch: 16,
        sync: true,
    },
    Mode {
        batch: 1,
        sync: false,
    },
];

/// A log backend under measurement.
trait Backend: Sized {
    const NAME: &'static str;
    fn create(dir: &Path) -> anyhow::Result<Self>;
    fn append(&mut self, entries: &[(u64, &[u8])], sync: bool) -> anyhow::Result<()>;
    /// Opens the log again and reads every entry into memory, returning how many there
    /// were.
    fn reopen_and_read(dir: &Path) -> anyhow::Result<usize>;
}

struct Segments(SegmentLog);

impl Backend for Segments {
    const NAME: &'static str = "segment files";

    fn create(dir: &Path) -> anyhow::Result<Self> {
        Ok(Self(SegmentLog::open(dir, SEGMENT_BYTES)?.log))
    }

    fn append(&mut self, entries: &[(u64, &[u8])], sync: bool) -> anyhow::Result<()> {
        self.0.append(entries)?;
        if sync {
            self.0.sync()?;
        }
        Ok(())
    }

    fn reopen_and_read(dir: &Path) -> anyhow::Result<usize> {
        Ok(SegmentLog::open(dir, SEGMENT_BYTES)?.entries.len())
    }
}

struct Redb(Database);

impl Redb {
    fn file(dir: &Path) -> PathBuf {
        dir.join("log.redb")
    }
}

impl Backend for Redb {
    const NAME: &'static str = "redb";

    fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self(Database::create(Self::file(dir))?))
    }

    fn append(&mut self, entries: &[(u64, &[u8])], sync: bool) -> anyhow::Result<()> {
        let mut txn = self.0.begin_write()?;
        txn.set_durability(if sync {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        {
            let mut table = txn.open_table(ENTRIES)?;
            for (index, payload) in entries {
                table.insert(*index, *payload)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn reopen_and_read(dir: &Path) -> anyhow::Result<usize> {
        let db = Database::open(Self::file(dir))?;
        let txn = db.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        // Owned entries, as the segment log's recovery gives them.
        let mut entries = Vec::new();
        for row in table.range(0u64..)? {
            let (index, value) = row?;
            entries.push((index.value(), value.value().to_vec()));
        }
        Ok(entries.len())
    }
}

/// One backend's numbers in one round.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Entries appended per second, per mode of [`MODES`].
    pub appends_per_sec: Vec<f64>,
    /// Entries read back per second on reopening, and how many.
    pub reopen: (f64, usize),
}

/// A directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn one<B: Backend>(root: &Path, value: &[u8], each: Duration) -> anyhow::Result<Sample> {
    let mut appends_per_sec = Vec::new();
    let scratch = Scratch(root.join(format!(
        "grid-log-bench-{}-{}",
        std::process::id(),
        B::NAME.replace(' ', "-")
    )));
    let _ = std::fs::remove_dir_all(&scratch.0);
    let mut log = B::create(&scratch.0).with_context(|| format!("creating {}", B::NAME))?;
    let mut next = 1u64;
    for mode in MODES {
        let started = Instant::now();
        let first = next;
        while started.elapsed() < each {
            let batch: Vec<(u64, &[u8])> = (next..next + mode.batch as u64)
                .map(|i| (i, value))
                .collect();
            log.append(&batch, mode.sync)?;
            next += mode.batch as u64;
        }
        appends_per_sec.push((next - first) as f64 / started.elapsed().as_secs_f64());
    }
    // What is written reaches the disk before the restart is timed.
    log.append(&[(next, value)], true)?;
    drop(log);
    let started = Instant::now();
    let n = B::reopen_and_read(&scratch.0)?;
    anyhow::ensure!(
        n as u64 == next,
        "{} read back {n} of {next} entries",
        B::NAME
    );
    Ok(Sample {
        appends_per_sec,
        reopen: (n as f64 / started.elapsed().as_secs_f64(), n),
    })
}

/// `rounds` rounds of segment files then redb in directories under `root`, each mode
/// for `each`; a markdown table of medians.
pub fn run(
    root: &Path,
    value_bytes: usize,
    each: Duration,
    rounds: usize,
) -> anyhow::Result<String> {
    let value = vec![0x5au8; value_bytes];
    let (mut seg, mut redb) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        eprintln!("round {round} of {rounds}: {}", Segments::NAME);
        seg.push(one::<Segments>(root, &value, each)?);
        eprintln!("round {round} of {rounds}: {}", Redb::NAME);
        redb.push(one::<Redb>(root, &value, each)?);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut out = String::from(
        "| measure | segment files | redb | segment files / redb |\n|---|---:|---:|---:|\n",
    );
    for (m, mode) in MODES.iter().enumerate() {
        let a = median(seg.iter().map(|s| s.appends_per_sec[m]).collect());
        let b = median(redb.iter().map(|s| s.appends_per_sec[m]).collect());
        let what = match (mode.batch, mode.sync) {
            (1, true) => "entries/s, a sync per entry".to_string(),
            (n, true) => format!("entries/s, a sync per {n} entries"),
            (_, false) => "entries/s, no sync".to_string(),
        };
        out.push_str(&format!("| {what} | {a:.0} | {b:.0} | {:.2} |\n", a / b));
    }
    let a = median(seg.iter().map(|s| s.reopen.0).collect());
    let b = median(redb.iter().map(|s| s.reopen.0).collect());
    out.push_str(&format!(
        "| entries/s read back on reopening | {a:.0} | {b:.0} | {:.2} |\n",
        a / b
    ));
    Ok(out)
}
