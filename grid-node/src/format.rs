//! Versioned encodings. Every format a node exchanges with another node or keeps as a
//! snapshot starts with its version number, read before anything else, so a node of
//! another release refuses what it cannot read with an error that says so instead of
//! misreading it. The body is postcard.
//!
//! | format | carries | version |
//! |---|---|---|
//! | [`PEER`] | node-to-node requests and answers, Raft log entries included (their operations in the log's own encoding, `partition/log_format.rs`; 2: a message carries a batch of requests; 3: operations `Write` and `RemoveTagged`) | 3 |
//! | [`GROUP_SNAPSHOT`] | a group's snapshot: Raft's bookkeeping and its state | 1 |
//! | [`PARTITION_SNAPSHOT`] | a partition's objects, lock waiters and events owed (2: events of revocations; 1 still read) | 2 |
//! | [`CONTROL_SNAPSHOT`] | the cluster's membership and partition map | 1 |
//! | [`STORE_SNAPSHOT`] | a partition's objects, locks and tags (3: this framing; 4: tags, 3 still read) | 4 |
//! | [`LOG_ENTRY`] | a Raft log entry kept in a `--data-dir` log segment (`disk/frame.rs` has the segment's own framing and version); 2: operations `Write` and `RemoveTagged`, imports with tags; 1 still read | 2 |
//! | [`DISK_RECORD`] | what a `--data-dir` keeps in its state files: a node's identity, a group's vote and purged log id | 1 |
//!
//! A change to any of these types bumps its version here. The bytes of a fixed value of
//! each are pinned by a test (`format_golden_tests.rs`), so a change to a type inside a
//! format (a wire type it carries, an openraft type in a log entry) cannot go unnoticed.

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// A named, versioned encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// What it carries, for errors.
    pub name: &'static str,
    /// The version this build writes and reads.
    pub version: u16,
}

/// Node-to-node messages ([`crate::cluster::peer`]), Raft log entries included.
pub const PEER: Format = Format {
    name: "peer message",
    version: 3,
};
/// A Raft group's snapshot ([`crate::cluster::state_machine`]).
pub const GROUP_SNAPSHOT: Format = Format {
    name: "group snapshot",
    version: 1,
};
/// A partition's state ([`crate::partition::Partition::snapshot`]).
pub const PARTITION_SNAPSHOT: Format = Format {
    name: "partition snapshot",
    version: 2,
};
/// Partition snapshots before revocation events: the same encoding, one cause fewer.
pub const PARTITION_SNAPSHOT_V1: Format = Format {
    version: 1,
    ..PARTITION_SNAPSHOT
};
/// The control group's state ([`crate::cluster::control::ClusterState`]).
pub const CONTROL_SNAPSHOT: Format = Format {
    name: "control snapshot",
    version: 1,
};
/// A store's objects ([`crate::store::Store::snapshot`]).
pub const STORE_SNAPSHOT: Format = Format {
    name: "store snapshot",
    version: 4,
};

/// A Raft log entry on disk ([`crate::cluster::durable`]).
pub const LOG_ENTRY: Format = Format {
    name: "log entry",
    version: 2,
};
/// Log entries before `Write` and `RemoveTagged`: the same encoding, fewer operations,
/// so they read as [`LOG_ENTRY`] does.
pub const LOG_ENTRY_V1: Format = Format {
    version: 1,
    ..LOG_ENTRY
};
/// The small records of a data directory ([`crate::cluster::durable`]).
pub const DISK_RECORD: Format = Format {
    name: "data directory record",
    version: 1,
};

/// Bytes that could not be read as a format.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FormatError {
    /// Written by a release with another version of the format.
    #[error(
        "{name} format {got} is not supported (this node reads {reads}): run one release on every node"
    )]
    Version {
        /// The format.
        name: &'static str,
        /// Version found.
        got: u16,
        /// Version this build reads.
        reads: u16,
    },
    /// The bytes are not the format.
    #[error("{name} is corrupt: {reason}")]
    Corrupt {
        /// The format.
        name: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
}

impl Format {
    /// Encodes `body` after this format's version.
    pub fn encode<T: Serialize + ?Sized>(&self, body: &T) -> Vec<u8> {
        let framed = (self.version, body);
        // Serializing plain data into a Vec cannot fail. Sized first (a walk that copies
        // nothing), so a message of large values is written once, never moved to grow.
        postcard::experimental::serialized_size(&framed)
            .and_then(|size| postcard::to_extend(&framed, Vec::with_capacity(size)))
            .unwrap_or_else(|e| panic!("{} encode failed: {e}", self.name))
    }

    /// The version `bytes` start with.
    pub fn version_of(&self, bytes: &[u8]) -> Result<u16, FormatError> {
        postcard::take_from_bytes::<u16>(bytes)
            .map(|(v, _)| v)
            .map_err(|e| self.corrupt(e))
    }

    /// Decodes what [`Format::encode`] wrote, refusing another version.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, FormatError> {
        let (got, body) = postcard::take_from_bytes::<u16>(bytes).map_err(|e| self.corrupt(e))?;
        if got != self.version {
            return Err(FormatError::Version {
                name: self.name,
                got,
                reads: self.version,
            });
        }
        postcard::from_bytes(body).map_err(|e| self.corrupt(e))
    }

    fn corrupt(&self, e: postcard::Error) -> FormatError {
        FormatError::Corrupt {
            name: self.name,
            reason: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: Format = Format {
        name: "test",
        version: 1,
    };
    const NEW: Format = Format {
        name: "test",
        version: 2,
    };

    #[test]
    fn a_format_reads_what_it_wrote() {
        let bytes = OLD.encode(&("k", 7u64));
        assert_eq!(OLD.version_of(&bytes), Ok(1));
        assert_eq!(OLD.decode::<(String, u64)>(&bytes), Ok(("k".into(), 7)));
    }

    #[test]
    fn another_version_is_refused_by_name_both_ways() {
        let err = NEW
            .decode::<(String, u64)>(&OLD.encode(&("k", 7u64)))
            .unwrap_err();
        assert_eq!(
            err,
            FormatError::Version {
                name: "test",
                got: 1,
                reads: 2
            }
        );
        assert!(err.to_string().contains("test format 1 is not supported"));
        assert!(matches!(
            OLD.decode::<u64>(&NEW.encode(&1u64)),
            Err(FormatError::Version {
                got: 2,
                reads: 1,
                ..
            })
        ));
    }

    #[test]
    fn truncated_or_foreign_bytes_are_corrupt() {
        assert!(matches!(
            OLD.decode::<u64>(&[]),
            Err(FormatError::Corrupt { .. })
        ));
        let mut bytes = OLD.encode(&("key", 7u64));
        bytes.truncate(3);
        assert!(matches!(
            OLD.decode::<(String, u64)>(&bytes),
            Err(FormatError::Corrupt { .. })
        ));
    }
}

#[cfg(test)]
#[path = "format_golden_tests.rs"]
mod golden;
