//! The backup file `gridctl backup` writes and `gridctl restore` reads: a header, one
//! section per partition (its objects as one consistent copy), and an end record. Every
//! part carries a checksum, the end record one over the whole file, and the header a
//! format version, so a damaged, cut short or foreign file is refused with an error that
//! says which, before anything is restored.
//!
//! ```text
//! header  = "gridbackup" | version u16 | created (ms since the epoch) u64 | partitions u32 | xxh3 u64
//! section = "part" | partition u32 | objects u64 | body length u64 | body | xxh3 u64
//!           (body: the objects, rkyv, validated when read)
//! end     = "end!" | sections u32 | xxh3 of every byte before it u64
//! ```
//!
//! Integers are little-endian; each section's and the header's checksum covers its own
//! bytes before it.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use grid_proto::backup::{BackupObject, BackupObjectV1};
use thiserror::Error;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

const MAGIC: &[u8; 10] = b"gridbackup";
/// The format version this build writes and reads (2: objects carry their tags; files of
/// format 1 still read, as objects without tags).
pub const VERSION: u16 = 2;
const VERSION_1: u16 = 1;
const SECTION: &[u8; 4] = b"part";
const END: &[u8; 4] = b"end!";
/// Largest section body read (a partition's objects).
const MAX_BODY: u64 = 1 << 40;

/// A backup file that cannot be used.
#[derive(Debug, Error)]
pub enum BackupFileError {
    /// The system refused.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// Not a backup of this grid.
    #[error("{} is not a grid backup", path.display())]
    Foreign {
        /// The file.
        path: PathBuf,
    },
    /// Written by a release with another format.
    #[error("{} is backup format {got}, this build reads {VERSION}: restore it with the release that wrote it", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// The format found.
        got: u16,
    },
    /// Damaged or cut short.
    #[error("{} is damaged: {what} at byte {at}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What does not match.
        what: String,
        /// Where.
        at: u64,
    },
}

/// What a backup's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupHeader {
    /// When it was written, in ms since the epoch.
    pub created_ms: u64,
    /// Partitions it holds.
    pub partitions: u32,
}

/// Writes a backup file section by section.
pub struct BackupWriter {
    path: PathBuf,
    out: BufWriter<File>,
    whole: Xxh3,
    sections: u32,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BackupFileError + '_ {
    move |source| BackupFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl BackupWriter {
    /// Creates `path` (replacing it) and writes the header.
    pub fn create(path: &Path, header: BackupHeader) -> Result<Self, BackupFileError> {
        let file = File::create(path).map_err(io_err(path))?;
        let mut w = Self {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            whole: Xxh3::new(),
            sections: 0,
        };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&header.created_ms.to_le_bytes());
        bytes.extend_from_slice(&header.partitions.to_le_bytes());
        w.put_checked(bytes)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), BackupFileError> {
        self.whole.update(bytes);
        self.out.write_all(bytes).map_err(io_err(&self.path))
    }

    fn put_checked(&mut self, mut bytes: Vec<u8>) -> Result<(), BackupFileError> {
        let sum = xxh3_64(&bytes);
        bytes.extend_from_slice(&sum.to_le_bytes());
        self.put(&bytes)
    }

    /// Writes partition `p`'s objects.
    pub fn partition(&mut self, p: u32, objects: &[BackupObject]) -> Result<(), BackupFileError> {
        let objects = objects.to_vec();
        let body = grid_proto::msg::encode(&objects);
        let mut bytes = Vec::with_capacity(body.len() + 32);
        bytes.extend_from_slice(SECTION);
        bytes.extend_from_slice(&p.to_le_bytes());
        bytes.extend_from_slice(&(objects.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&body);
        self.sections += 1;
        self.put_checked(bytes)
    }

    /// Writes the end record and syncs the file to disk.
    pub fn finish(mut self) -> Result<(), BackupFileError> {
        let mut end = Vec::new();
        end.extend_from_slice(END);
        end.extend_from_slice(&self.sections.to_le_bytes());
        self.whole.update(&end);
        end.extend_from_slice(&self.whole.digest().to_le_bytes());
        self.out.write_all(&end).map_err(io_err(&self.path))?;
        let file = self.out.into_inner().map_err(|e| BackupFileError::Io {
            path: self.path.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err(&self.path))
    }
}

/// Reads a backup file section by section, checking each.
pub struct BackupReader {
    path: PathBuf,
    input: BufReader<File>,
    whole: Xxh3,
    at: u64,
    header: BackupHeader,
    sections: u32,
    done: bool,
    version: u16,
}

impl BackupReader {
    /// Opens `path` and checks its header.
    pub fn open(path: &Path) -> Result<Self, BackupFileError> {
        let file = File::open(path).map_err(io_err(path))?;
        let mut r = Self {
            path: path.to_path_buf(),
            input: BufReader::new(file),
            whole: Xxh3::new(),
            at: 0,
            header: BackupHeader {
                created_ms: 0,
                partitions: 0,
            },
            sections: 0,
            done: false,
            version: VERSION,
        };
        let mut head = [0u8; 10 + 2 + 8 + 4];
        if r.take(&mut head, "header").is_err() || &head[..10] != MAGIC {
            return Err(BackupFileError::Foreign {
                path: path.to_path_buf(),
            });
        }
        let got = u16::from_le_bytes([head[10], head[11]]);
        r.version = got;
        if got != VERSION && got != VERSION_1 {
            return Err(BackupFileError::Version {
                path: path.to_path_buf(),
                got,
            });
        }
        r.check(&head, "header checksum")?;
        r.header = BackupHeader {
            created_ms: u64::from_le_bytes(head[12..20].try_into().unwrap_or_default()),
            partitions: u32::from_le_bytes(head[20..24].try_into().unwrap_or_default()),
        };
        Ok(r)
    }

    /// The header.
    pub fn header(&self) -> BackupHeader {
        self.header
    }

    fn damaged(&self, what: impl Into<String>) -> BackupFileError {
        BackupFileError::Damaged {
            path: self.path.clone(),
            what: what.into(),
            at: self.at,
        }
    }

    /// Reads exactly `buf.len()` bytes into the whole-file checksum.
    fn take(&mut self, buf: &mut [u8], what: &str) -> Result<(), BackupFileError> {
        self.input.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => self.damaged(format!("cut short in the {what}")),
            _ => BackupFileError::Io {
                path: self.path.clone(),
                source: e,
            },
        })?;
        self.whole.update(buf);
        self.at += buf.len() as u64;
        Ok(())
    }

    /// Reads a checksum and compares it with the one of `covered`.
    fn check(&mut self, covered: &[u8], what: &str) -> Result<(), BackupFileError> {
        let mut sum = [0u8; 8];
        self.take(&mut sum, what)?;
        if u64::from_le_bytes(sum) != xxh3_64(covered) {
            return Err(self.damaged(format!("{what} does not match")));
        }
        Ok(())
    }

    /// The next partition, or `None` after the end record (checked, with the whole
    /// file's checksum).
    pub fn next_partition(&mut self) -> Result<Option<(u32, Vec<BackupObject>)>, BackupFileError> {
        if self.done {
            return Ok(None);
        }
        let mut tag = [0u8; 4];
        self.take(&mut tag, "section")?;
        if &tag == END {
            let mut count = [0u8; 4];
            self.take(&mut count, "end record")?;
            // The end checksum covers every byte before it, its own tag and count included.
            let whole = self.whole.digest();
            let mut sum = [0u8; 8];
            self.input
                .read_exact(&mut sum)
                .map_err(|_| self.damaged("cut short in the end record"))?;
            let sections = u32::from_le_bytes(count);
            if u64::from_le_bytes(sum) != whole {
                return Err(self.damaged("file checksum does not match"));
            }
            if sections != self.sections || sections != self.header.partitions {
                return Err(self.damaged(format!(
                    "{} sections, the header says {}",
                    self.sections, self.header.partitions
                )));
            }
            let mut rest = [0u8; 1];
            if self.input.read(&mut rest).map_err(io_err(&self.path))? != 0 {
                return Err(self.damaged("bytes after the end record"));
            }
            self.done = true;
            return Ok(None);
        }
        if &tag != SECTION {
            return Err(self.damaged("not a section"));
        }
        let mut fixed = [0u8; 4 + 8 + 8];
        self.take(&mut fixed, "section header")?;
        let p = u32::from_le_bytes(fixed[0..4].try_into().unwrap_or_default());
        let count = u64::from_le_bytes(fixed[4..12].try_into().unwrap_or_default());
        let len = u64::from_le_bytes(fixed[12..20].try_into().unwrap_or_default());
        if len > MAX_BODY {
            return Err(self.damaged(format!("a section of {len} bytes")));
        }
        let mut body: grid_proto::msg::AlignedVec =
            grid_proto::msg::AlignedVec::with_capacity(len as usize);
        body.resize(len as usize, 0);
        self.take(&mut body, "section body")?;
        let mut section = Xxh3::new();
        section.update(&tag);
        section.update(&fixed);
        section.update(&body);
        let mut sum = [0u8; 8];
        self.take(&mut sum, "section checksum")?;
        if u64::from_le_bytes(sum) != section.digest() {
            return Err(self.damaged(format!("partition {p}'s checksum does not match")));
        }
        // The objects are validated, not trusted, although the checksum matched.
        let objects: Vec<BackupObject> = if self.version == VERSION_1 {
            grid_proto::msg::decode::<Vec<BackupObjectV1>>(&body)
                .map(|old| old.into_iter().map(Into::into).collect())
        } else {
            grid_proto::msg::decode(&body)
        }
        .map_err(|e| self.damaged(format!("partition {p}'s objects: {e}")))?;
        if objects.len() as u64 != count {
            return Err(self.damaged(format!(
                "partition {p} holds {} objects, its header says {count}",
                objects.len()
            )));
        }
        self.sections += 1;
        Ok(Some((p, objects)))
    }
}

impl std::fmt::Debug for BackupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupWriter")
            .field("path", &self.path)
            .field("sections", &self.sections)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for BackupReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupReader")
            .field("path", &self.path)
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "backup_file_tests.rs"]
mod tests;
