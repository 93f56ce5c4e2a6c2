//! Small records replaced whole (a group's vote, committed and purged log ids; the node's
//! identity): written to a temporary file, synced, renamed over the old one and the
//! directory synced, so a crash leaves the old record or the new one, never a mix. Each
//! carries a name, a format version and a checksum, so a damaged or foreign file is
//! refused with an error that names it instead of being misread.
//!
//! ```text
//! file = "gridstate" (9) | name length u8 | name | version u16 | body length u32 | body | xxh3 of all before (8)
//! ```

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;
use xxhash_rust::xxh3::xxh3_64;

use super::segments::sync_dir;

const MAGIC: &[u8; 9] = b"gridstate";

/// A state file that cannot be used.
#[derive(Debug, Error)]
pub enum StateFileError {
    /// The operating system refused.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The file is damaged: its checksum or length does not match.
    #[error("{} is damaged ({reason})", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What does not match.
        reason: &'static str,
    },
    /// The file holds another record, or is not a state file.
    #[error("{} holds {found:?}, not a {expected}", path.display())]
    Foreign {
        /// The file.
        path: PathBuf,
        /// The record it should hold.
        expected: &'static str,
        /// What it holds (empty when it is no state file at all).
        found: String,
    },
    /// Written by a release with another version of the record.
    #[error("{} is {name} format {got}, this node reads {reads}: start the release that wrote it", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// The record.
        name: &'static str,
        /// The version found.
        got: u16,
        /// The version this build reads.
        reads: u16,
    },
}

/// A kind of record kept in a state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateKind {
    /// Its name, written in the file.
    pub name: &'static str,
    /// The version of its body this build writes and reads.
    pub version: u16,
}

/// The bytes of a state file holding `body`.
pub fn encode(kind: StateKind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 1 + kind.name.len() + 6 + body.len() + 8);
    out.extend_from_slice(MAGIC);
    out.push(kind.name.len() as u8);
    out.extend_from_slice(kind.name.as_bytes());
    out.extend_from_slice(&kind.version.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    let sum = xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// The body of state-file bytes read from `path`.
pub fn decode<'a>(
    kind: StateKind,
    path: &Path,
    bytes: &'a [u8],
) -> Result<&'a [u8], StateFileError> {
    let foreign = |found: &[u8]| StateFileError::Foreign {
        path: path.to_path_buf(),
        expected: kind.name,
        found: String::from_utf8_lossy(found).into_owned(),
    };
    let damaged = |reason| StateFileError::Damaged {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < MAGIC.len() + 1 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(foreign(b""));
    }
    let (sum_at, sum) = match bytes.len().checked_sub(8) {
        Some(at) if at > MAGIC.len() => (at, &bytes[at..]),
        _ => return Err(damaged("too short")),
    };
    if xxh3_64(&bytes[..sum_at]).to_le_bytes() != sum {
        return Err(damaged("checksum mismatch"));
    }
    let name_len = bytes[MAGIC.len()] as usize;
    let name_at = MAGIC.len() + 1;
    let rest = &bytes[..sum_at];
    let name = rest
        .get(name_at..name_at + name_len)
        .ok_or(damaged("name cut short"))?;
    if name != kind.name.as_bytes() {
        return Err(foreign(name));
    }
    let at = name_at + name_len;
    let head = rest.get(at..at + 6).ok_or(damaged("header cut short"))?;
    let version = u16::from_le_bytes([head[0], head[1]]);
    if version != kind.version {
        return Err(StateFileError::Version {
            path: path.to_path_buf(),
            name: kind.name,
            got: version,
            reads: kind.version,
        });
    }
    let len = u32::from_le_bytes([head[2], head[3], head[4], head[5]]) as usize;
    let body = &rest[at + 6..];
    if body.len() != len {
        return Err(damaged("length mismatch"));
    }
    Ok(body)
}

/// Replaces the record in `path` with `body`, durably. The record goes to
/// `<path>.tmp` first, which a failed write removes.
pub fn write(kind: StateKind, path: &Path, body: &[u8]) -> Result<(), StateFileError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| StateFileError::Io { path: p, source }
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let written = File::create(&tmp).and_then(|mut file| {
        file.write_all(&encode(kind, body))?;
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    fs::rename(&tmp, path).map_err(io(path))?;
    sync_dir(dir).map_err(io(dir))
}

/// The record in `path`, or `None` if there is no such file.
pub fn read(kind: StateKind, path: &Path) -> Result<Option<Vec<u8>>, StateFileError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(decode(kind, path, &bytes)?.to_vec())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateFileError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOTE: StateKind = StateKind {
        name: "vote",
        version: 1,
    };

    fn path() -> PathBuf {
        PathBuf::from("g/vote")
    }

    #[test]
    fn a_record_reads_back() {
        let bytes = encode(VOTE, b"term 3, node 2");
        assert_eq!(decode(VOTE, &path(), &bytes).unwrap(), b"term 3, node 2");
        assert_eq!(decode(VOTE, &path(), &encode(VOTE, b"")).unwrap(), b"");
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_refused() {
        let bytes = encode(VOTE, b"term 3, node 2");
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x04;
            assert!(decode(VOTE, &path(), &bad).is_err(), "flip at {at} read");
        }
        for len in 0..bytes.len() {
            assert!(
                decode(VOTE, &path(), &bytes[..len]).is_err(),
                "cut at {len} read"
            );
        }
    }

    #[test]
    fn another_record_or_version_is_named_in_the_error() {
        let other = StateKind {
            name: "identity",
            version: 1,
        };
        let err = decode(VOTE, &path(), &encode(other, b"x")).unwrap_err();
        assert!(
            err.to_string().contains("\"identity\", not a vote"),
            "{err}"
        );
        let newer = StateKind {
            name: "vote",
            version: 2,
        };
        let err = decode(VOTE, &path(), &encode(newer, b"x")).unwrap_err();
        assert!(
            matches!(
                err,
                StateFileError::Version {
                    got: 2,
                    reads: 1,
                    ..
                }
            ),
            "{err}"
        );
        let err = decode(VOTE, &path(), b"{\"term\": 3}").unwrap_err();
        assert!(matches!(err, StateFileError::Foreign { .. }), "{err}");
    }

    #[test]
    fn a_write_replaces_the_record_on_disk() {
        let scratch = crate::disk::test_dir::TempDir::new();
        let dir = scratch.0.clone();
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("vote");
        assert_eq!(read(VOTE, &file).unwrap(), None);
        write(VOTE, &file, b"first").unwrap();
        write(VOTE, &file, b"second").unwrap();
        assert_eq!(read(VOTE, &file).unwrap().as_deref(), Some(&b"second"[..]));
        assert!(!dir.join("vote.tmp").exists());
    }
}
