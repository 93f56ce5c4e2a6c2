//! Directories of a test's own (data directories of its nodes), removed when dropped,
//! also when the test fails.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh directory under the system's temporary directory.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A new, empty directory named after `what`.
    pub fn new(what: &str) -> std::io::Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "grid-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `name` inside it, as a string for a command line.
    pub fn join(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small tmpfs the test mounts (it runs as root, as the suite does), unmounted and
/// removed when dropped, also when the test fails.
#[derive(Debug)]
pub struct SmallDisk {
    dir: ScratchDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `bytes`.
    pub fn mount(what: &str, bytes: u64) -> anyhow::Result<Self> {
        let dir = ScratchDir::new(what)?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()?;
        anyhow::ensure!(status.success(), "mounting a tmpfs needs root: {status}");
        Ok(Self { dir })
    }

    /// Grows (or shrinks) it to `bytes`.
    pub fn resize(&self, bytes: u64) -> anyhow::Result<()> {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(self.dir.path())
            .status()?;
        anyhow::ensure!(status.success(), "remount failed: {status}");
        Ok(())
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}
