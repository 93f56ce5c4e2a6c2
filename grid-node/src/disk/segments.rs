//! A log kept in segment files: entries appended in index order, found again on start,
//! damage cut away. Blocking file I/O; the caller decides when to [`SegmentLog::sync`]
//! ([`super::FsyncPolicy`]).
//!
//! A directory holds `<first index, 20 digits>.seg` files ([`super::frame`] has their
//! bytes); the last is the one appended to, and a new one starts once it holds
//! `segment_bytes`. [`SegmentLog::open`] reads them in order and stops at the first
//! damage (a torn or corrupt record, a segment that does not follow the one before): the
//! segment is cut back to its last good record and any later segment removed, so the log
//! is the longest run of good entries from its start. Raft then fetches the rest from the
//! group's other replicas. A file that does not begin as a segment of this format (its
//! magic bytes and version) is refused, not removed.
//!
//! A failed append (a full disk) is rolled back, so a later append or a restart finds
//! exactly the entries appended before. A failure that leaves the files unknown (a failed
//! sync, a failed roll-back, truncation or purge) makes the log refuse every later call
//! until the node restarts and reads it again.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::frame::{self, Damage, HeaderError};

/// What can go wrong with a log directory.
#[derive(Debug, Error)]
pub enum DiskError {
    /// The operating system refused (no space, no permission, a failing disk).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A file that is not a log segment sits where segments go.
    #[error("{} is not a log segment of this grid; move it out of the data directory", path.display())]
    Foreign {
        /// The file.
        path: PathBuf,
    },
    /// A segment of another release's format.
    #[error("{} is log segment format {got}, this node reads {reads}: start the release that wrote it", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// The format found.
        got: u16,
        /// The format this build reads.
        reads: u16,
    },
    /// An entry too large for a record.
    #[error("entry {index} is {bytes} bytes, over the log's limit of {limit}")]
    TooLarge {
        /// The entry.
        index: u64,
        /// Its payload's size.
        bytes: usize,
        /// The largest payload a record holds.
        limit: usize,
    },
    /// An earlier failure left the log's files in a state it cannot vouch for.
    #[error("the log in {} failed earlier ({why}); restart the node to recover it from disk", dir.display())]
    Failed {
        /// The log's directory.
        dir: PathBuf,
        /// The failure.
        why: String,
    },
    /// An append that does not follow the log's last entry.
    #[error("entry {got} does not follow the log's last entry {last}")]
    NotNext {
        /// The last entry held.
        last: u64,
        /// The entry offered.
        got: u64,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    /// The index of its first record.
    first: u64,
    path: PathBuf,
    /// Where each record starts, in index order from `first`.
    offsets: Vec<u64>,
    /// Its length in bytes.
    len: u64,
}

impl Segment {
    /// The index after its last record.
    fn end(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }
}

/// Where [`SegmentLog::open`] cut damage away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The segment cut.
    pub path: PathBuf,
    /// Its length after the cut.
    pub at: u64,
    /// What was found there.
    pub damage: Damage,
    /// Later segments removed.
    pub removed_segments: usize,
}

/// A log opened from its directory: the log, its entries, and the cut if there was one.
#[derive(Debug)]
pub struct Recovered {
    /// The log, ready to append after its last entry.
    pub log: SegmentLog,
    /// Every good entry, `(index, payload)`, in order.
    pub entries: Vec<(u64, Vec<u8>)>,
    /// Damage found and cut away.
    pub cut: Option<Cut>,
}

/// Where the log stood before an append, to roll back to.
#[derive(Debug, Clone, Copy)]
struct Mark {
    segments: usize,
    len: u64,
    offsets: usize,
    next: Option<u64>,
}

/// A log in a directory of segment files.
#[derive(Debug)]
pub struct SegmentLog {
    dir: PathBuf,
    segment_bytes: u64,
    segments: Vec<Segment>,
    /// The last segment, open for appending.
    active: Option<File>,
    /// The index the next append must have, once known.
    next: Option<u64>,
    /// Why the log refuses every call, after a failure that left the disk unknown.
    failed: Option<String>,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

/// The first index a segment file's name gives, if it is named as one.
fn named_first(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Makes a directory's entries (files created, renamed or removed) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

/// What a segment file found on start is.
enum Verdict {
    /// A segment of this log: its records as far as they are good.
    Read(frame::Scan),
    /// Ours, but none of it can be used (a torn or damaged header, or it does not follow
    /// the segment before): removed with every later one.
    Unusable(Damage),
}

/// Judges the bytes of segment file `path`, named as starting at `first`, where the log
/// so far expects `expected` next; `last` if no later segment exists. A file that is not
/// one of ours is an error, so that nothing removes it.
fn judge(
    bytes: &[u8],
    path: &Path,
    first: u64,
    expected: u64,
    last: bool,
) -> Result<Verdict, DiskError> {
    let damage = match frame::read_header(bytes) {
        Ok(named) if named != first => Damage::Checksum,
        Ok(_) if first != expected => Damage::OutOfOrder {
            expected,
            found: first,
        },
        Ok(_) => return Ok(Verdict::Read(frame::scan(bytes, first))),
        // A header cut short can only be the last segment's, torn as it was made (what
        // there is of it must read as a segment's start).
        Err(HeaderError::Short) if last && frame::starts_as_segment(bytes) => Damage::Torn,
        Err(HeaderError::Foreign) | Err(HeaderError::Short) => {
            return Err(DiskError::Foreign {
                path: path.to_path_buf(),
            })
        }
        Err(HeaderError::Version(got)) => {
            return Err(DiskError::Version {
                path: path.to_path_buf(),
                got,
                reads: frame::VERSION,
            })
        }
        Err(HeaderError::Checksum) => Damage::Checksum,
    };
    Ok(Verdict::Unusable(damage))
}

impl SegmentLog {
    /// Opens the log in `dir` (created if missing), reading every segment and cutting
    /// damage away (logged as a warning). New segments start after `segment_bytes`.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<Recovered, DiskError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let path = entry.map_err(io_err(dir))?.path();
            if path.extension().is_some_and(|e| e == "seg") {
                let first =
                    named_first(&path).ok_or_else(|| DiskError::Foreign { path: path.clone() })?;
                found.push((first, path));
            }
        }
        found.sort();
        let mut log = SegmentLog {
            dir: dir.to_path_buf(),
            segment_bytes,
            segments: Vec::new(),
            active: None,
            next: None,
            failed: None,
        };
        let mut entries = Vec::new();
        let mut cut = None;
        for (i, (first, path)) in found.iter().enumerate() {
            let bytes = fs::read(path).map_err(io_err(path))?;
            let expected = log.next.unwrap_or(*first);
            let last = i + 1 == found.len();
            let (damage_at, scan) = match judge(&bytes, path, *first, expected, last)? {
                Verdict::Read(scan) => {
                    let damage = scan.damage.clone().map(|d| (scan.good_len as u64, d));
                    (damage, Some(scan))
                }
                Verdict::Unusable(damage) => (Some((0, damage)), None),
            };
            if let Some(scan) = &scan {
                entries.extend(
                    scan.records
                        .iter()
                        .map(|r| (r.index, bytes[r.payload.clone()].to_vec())),
                );
                let segment = Segment {
                    first: *first,
                    path: path.clone(),
                    offsets: scan.records.iter().map(|r| r.offset as u64).collect(),
                    len: scan.good_len as u64,
                };
                log.next = Some(segment.end());
                log.segments.push(segment);
            }
            if let Some((at, damage)) = damage_at {
                let removed = &found[i + 1..];
                if scan.is_some() {
                    let file = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(io_err(path))?;
                    file.set_len(at).map_err(io_err(path))?;
                    file.sync_all().map_err(io_err(path))?;
                } else {
                    fs::remove_file(path).map_err(io_err(path))?;
                }
                for (_, later) in removed {
                    fs::remove_file(later).map_err(io_err(later))?;
                }
                sync_dir(dir).map_err(io_err(dir))?;
                let c = Cut {
                    path: path.clone(),
                    at,
                    damage,
                    removed_segments: removed.len(),
                };
                tracing::warn!(
                    segment = %c.path.display(),
                    cut_at = c.at,
                    damage = ?c.damage,
                    removed_segments = c.removed_segments,
                    last_good_entry = ?log.next.map(|n| n.saturating_sub(1)),
                    "damaged log found on start: cut back to the last good entry; the rest comes from the group's other replicas"
                );
                cut = Some(c);
                break;
            }
        }
        if let Some(last) = log.segments.last() {
            let file = OpenOptions::new()
                .write(true)
                .open(&last.path)
                .map_err(io_err(&last.path))?;
            // What was read may have been only in the kernel's cache (the process died
            // before a sync): make it durable before anyone counts on it.
            file.sync_data().map_err(io_err(&last.path))?;
            log.active = Some(file);
        }
        sync_dir(dir).map_err(io_err(dir))?;
        Ok(Recovered { log, entries, cut })
    }

    /// The index of the last entry held, if any.
    pub fn last_index(&self) -> Option<u64> {
        self.segments
            .iter()
            .rev()
            .find(|s| !s.offsets.is_empty())
            .map(|s| s.end() - 1)
    }

    /// Appends `entries` (indexes consecutive, after the last entry held). Not durable
    /// until [`Self::sync`]. On failure none of them is left in the log: a full disk
    /// fails the append, and a later one (once there is room) or a restart finds exactly
    /// the entries appended before.
    pub fn append(&mut self, entries: &[(u64, &[u8])]) -> Result<(), DiskError> {
        self.usable()?;
        let mut expected = self.next;
        for (index, payload) in entries {
            if let Some(next) = expected {
                if *index != next {
                    return Err(DiskError::NotNext {
                        last: next.saturating_sub(1),
                        got: *index,
                    });
                }
            }
            if payload.len() > frame::MAX_RECORD_BODY - 8 {
                return Err(DiskError::TooLarge {
                    index: *index,
                    bytes: payload.len(),
                    limit: frame::MAX_RECORD_BODY - 8,
                });
            }
            expected = Some(index.saturating_add(1));
        }
        let before = Mark {
            segments: self.segments.len(),
            len: self.segments.last().map_or(0, |s| s.len),
            offsets: self.segments.last().map_or(0, |s| s.offsets.len()),
            next: self.next,
        };
        for (index, payload) in entries {
            if let Err(e) = self.append_one(*index, payload) {
                self.roll_back(before);
                return Err(e);
            }
        }
        Ok(())
    }

    fn append_one(&mut self, index: u64, payload: &[u8]) -> Result<(), DiskError> {
        let full = self
            .segments
            .last()
            .is_none_or(|s| s.len >= self.segment_bytes);
        if self.active.is_none() || full {
            self.start_segment(index)?;
        }
        let (Some(file), Some(segment)) = (self.active.as_ref(), self.segments.last_mut()) else {
            unreachable!("a segment is open once started");
        };
        let mut bytes = Vec::with_capacity(frame::record_len(payload.len()));
        frame::push_record(&mut bytes, index, payload);
        // At the segment's length, not the file's position: a cut (a truncation, a failed
        // append rolled back) leaves the position past the end.
        file.write_all_at(&bytes, segment.len)
            .map_err(io_err(&segment.path))?;
        segment.offsets.push(segment.len);
        segment.len += bytes.len() as u64;
        self.next = Some(index.saturating_add(1));
        Ok(())
    }

    /// Undoes a failed append back to `mark`: segments it started removed, the segment
    /// it wrote to cut back. If that fails too, the log refuses every later call.
    fn roll_back(&mut self, mark: Mark) {
        let result = (|| -> io::Result<()> {
            while self.segments.len() > mark.segments {
                if let Some(started) = self.segments.pop() {
                    self.active = None;
                    fs::remove_file(&started.path)?;
                    sync_dir(&self.dir)?;
                }
            }
            if let Some(segment) = self.segments.last_mut() {
                segment.len = mark.len;
                segment.offsets.truncate(mark.offsets);
                let file = OpenOptions::new().write(true).open(&segment.path)?;
                file.set_len(mark.len)?;
                self.active = Some(file);
            }
            Ok(())
        })();
        self.next = mark.next;
        if let Err(e) = result {
            self.fail(format!("rolling back a failed append: {e}"));
        }
    }

    fn fail(&mut self, why: String) {
        tracing::error!(dir = %self.dir.display(), %why, "log directory failed: it takes no more writes until the node restarts");
        self.failed = Some(why);
    }

    fn usable(&self) -> Result<(), DiskError> {
        match &self.failed {
            Some(why) => Err(DiskError::Failed {
                dir: self.dir.clone(),
                why: why.clone(),
            }),
            None => Ok(()),
        }
    }

    fn start_segment(&mut self, first: u64) -> Result<(), DiskError> {
        // A full segment is made durable as it is closed, whatever the policy.
        let closing = match (self.active.as_ref(), self.segments.last()) {
            (Some(file), Some(full)) => file.sync_data().map_err(io_err(&full.path)),
            _ => Ok(()),
        };
        if let Err(e) = closing {
            // What the kernel failed to write is gone from its cache: nothing tells
            // which appends reached the disk, so the log takes no more.
            self.fail(e.to_string());
            return Err(e);
        }
        let path = segment_path(&self.dir, first);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let header = frame::header(first);
        if let Err(e) = file.write_all_at(&header, 0) {
            let _ = fs::remove_file(&path);
            return Err(io_err(&path)(e));
        }
        self.segments.push(Segment {
            first,
            path,
            offsets: Vec::new(),
            len: header.len() as u64,
        });
        self.active = Some(file);
        sync_dir(&self.dir).map_err(io_err(&self.dir))
    }

    /// Makes every append so far durable. A failed sync leaves the log refusing every
    /// later call: the kernel may have dropped the pages it could not write.
    pub fn sync(&mut self) -> Result<(), DiskError> {
        self.failing_for_good(|log| match (&log.active, log.segments.last()) {
            (Some(file), Some(segment)) => file.sync_data().map_err(io_err(&segment.path)),
            _ => Ok(()),
        })
    }

    /// Removes entries from `index` on (Raft replacing a conflicting suffix). Durable on
    /// return; a failure leaves the log refusing every later call.
    pub fn truncate_from(&mut self, index: u64) -> Result<(), DiskError> {
        self.failing_for_good(|log| log.cut_from(index))
    }

    /// Runs `step` on a usable log; if it fails, the log refuses every later call.
    fn failing_for_good(
        &mut self,
        step: impl FnOnce(&mut Self) -> Result<(), DiskError>,
    ) -> Result<(), DiskError> {
        self.usable()?;
        let result = step(self);
        if let Err(e) = &result {
            self.fail(e.to_string());
        }
        result
    }

    fn cut_from(&mut self, index: u64) -> Result<(), DiskError> {
        while let Some(segment) = self.segments.last() {
            if segment.first < index {
                break;
            }
            let path = segment.path.clone();
            self.active = None;
            fs::remove_file(&path).map_err(io_err(&path))?;
            self.segments.pop();
            // One removal at a time, from the end: whatever a crash keeps is a prefix.
            sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        }
        if let Some(segment) = self.segments.last_mut() {
            let file = OpenOptions::new()
                .write(true)
                .open(&segment.path)
                .map_err(io_err(&segment.path))?;
            if index < segment.end() {
                let keep = (index - segment.first) as usize;
                segment.len = segment.offsets[keep];
                segment.offsets.truncate(keep);
                file.set_len(segment.len).map_err(io_err(&segment.path))?;
                file.sync_all().map_err(io_err(&segment.path))?;
            }
            self.active = Some(file);
        }
        if self.next.is_some_and(|n| n > index) {
            self.next = Some(index);
        }
        Ok(())
    }

    /// Removes the segments that hold only entries up to `index` (covered by a
    /// snapshot). Entries up to `index` in a segment that also holds later ones stay
    /// until that segment goes: the caller keeps `index` (in a state file) and skips
    /// them when it reads the log. The next append must follow the log's last entry, or
    /// `index` if that is later; after a restart that rule is the caller's to apply.
    /// A failure leaves the log refusing every later call.
    pub fn purge_through(&mut self, index: u64) -> Result<(), DiskError> {
        self.failing_for_good(|log| log.drop_through(index))
    }

    fn drop_through(&mut self, index: u64) -> Result<(), DiskError> {
        while let Some(segment) = self.segments.first() {
            if segment.end() > index.saturating_add(1) {
                break;
            }
            fs::remove_file(&segment.path).map_err(io_err(&segment.path))?;
            if self.segments.len() == 1 {
                self.active = None;
            }
            self.segments.remove(0);
            // One removal at a time, from the start: a crash never keeps a later segment
            // without the one before it (which the next start would take for damage).
            sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        }
        if self.next.is_none_or(|n| n <= index) {
            self.next = Some(index.saturating_add(1));
        }
        Ok(())
    }

    /// Segment files held now.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

#[cfg(test)]
#[path = "segments_tests.rs"]
mod tests;
