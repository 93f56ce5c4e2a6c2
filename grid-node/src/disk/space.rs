//! Free space where the data directory lives, and what a node refuses when it runs low:
//! writes that add data are refused at the node's edge once free space falls under the
//! reserve (`--disk-reserve`), so the log never meets a full disk in the middle of an
//! append; what the reserve keeps covers the rest (lock and touch entries, expirations,
//! a vote) until an operator makes room.

use std::io;
use std::path::Path;

/// Bytes free for an unprivileged writer on the file system holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Whether a write must be refused: free space under the reserve.
pub fn too_full(free: u64, reserve: u64) -> bool {
    free < reserve
}

/// Whether a snapshot of about `bytes` may be written: it must leave half the reserve.
pub fn room_for_snapshot(free: u64, reserve: u64, bytes: u64) -> bool {
    free >= bytes.saturating_add(reserve / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_decides() {
        assert!(too_full(10, 11));
        assert!(!too_full(11, 11));
        assert!(room_for_snapshot(100, 40, 80));
        assert!(!room_for_snapshot(100, 40, 81));
        assert!(room_for_snapshot(u64::MAX, u64::MAX, u64::MAX));
    }

    #[test]
    fn the_free_space_of_a_real_directory_is_read() {
        let free = free_bytes(&std::env::temp_dir()).unwrap();
        assert!(free > 0);
        let err = free_bytes(Path::new("/no/such/grid/directory")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
