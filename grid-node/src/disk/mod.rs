//! Keeping Raft's state on disk, for `--data-dir` (the grid is in memory without it).
//!
//! - [`frame`]: the bytes of a log segment (header, checksummed records) and the scan
//!   that finds where the good records end; pure.
//! - [`segments`]: a log in a directory of segment files: append, sync, truncate, purge,
//!   and on start the longest run of good entries, damage cut away and logged.
//! - [`state_file`]: small records replaced whole and durably (a vote, the node's
//!   identity), checksummed and versioned.
//! - [`writer`]: the node's one thread doing the log I/O, appends synced together.
//! - [`FsyncPolicy`]: when appends reach the disk, and what each choice promises.

pub mod frame;
pub mod segments;
pub mod space;
pub mod state_file;
#[cfg(test)]
mod test_dir;
pub mod writer;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub use segments::{Cut, DiskError, Recovered, SegmentLog};

/// When appended log entries are forced to the disk (`--fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Before Raft counts an entry as stored: an acknowledged write is on a majority's
    /// disks, so it survives every node losing power at once.
    #[default]
    Always,
    /// About once a second, off the write path: a node that loses power loses up to the
    /// last second of its entries; a write survives while a majority of its replicas'
    /// machines stay up (a process crash loses nothing, the kernel still has the pages).
    EverySec,
    /// When the operating system writes its cache back: as `EverySec`, with a window of
    /// up to the kernel's write-back delay (about 30 s on Linux by default).
    Never,
}

impl FsyncPolicy {
    /// Whether an append is synced before it counts as stored.
    pub fn sync_each_append(self) -> bool {
        self == Self::Always
    }

    /// How often a background sync runs, if one does.
    pub fn background_interval(self) -> Option<Duration> {
        (self == Self::EverySec).then_some(Duration::from_secs(1))
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Always => "always",
            Self::EverySec => "everysec",
            Self::Never => "never",
        })
    }
}

impl FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Self::Always),
            "everysec" => Ok(Self::EverySec),
            "never" => Ok(Self::Never),
            other => Err(format!(
                "unknown fsync policy {other:?}: expected always, everysec or never"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_read_back_from_their_names() {
        for p in [
            FsyncPolicy::Always,
            FsyncPolicy::EverySec,
            FsyncPolicy::Never,
        ] {
            assert_eq!(p.to_string().parse::<FsyncPolicy>(), Ok(p));
        }
        let err = "sometimes".parse::<FsyncPolicy>().unwrap_err();
        assert!(err.contains("always, everysec or never"), "{err}");
        assert!(FsyncPolicy::Always.sync_each_append());
        assert!(!FsyncPolicy::EverySec.sync_each_append());
        assert_eq!(
            FsyncPolicy::EverySec.background_interval(),
            Some(Duration::from_secs(1))
        );
        assert_eq!(FsyncPolicy::Never.background_interval(), None);
    }
}
