//! A small filesystem the test controls: a tmpfs mounted in a temp dir, filled to the last byte
//! by a ballast file and given back by deleting it. Needs root (CI runs as root); a test that
//! cannot mount it fails loudly, it never skips.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs of a fixed size; unmounted when dropped.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `megabytes` MiB.
    pub fn mount(megabytes: u32) -> SmallDisk {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a {megabytes} MiB tmpfs failed (the disk-full tests need root): {status}"
        );
        SmallDisk { dir }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn ballast(&self) -> PathBuf {
        self.dir.path().join("ballast")
    }

    /// Writes the ballast file until the filesystem refuses another byte.
    pub fn fill(&self) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.ballast())
            .expect("open ballast");
        let block = vec![0xA5u8; 4096];
        loop {
            if file.write_all(&block).and_then(|()| file.flush()).is_err() {
                break;
            }
        }
        let single = [0u8; 1];
        while file.write_all(&single).is_ok() {}
    }

    /// Deletes the ballast: the space is back.
    pub fn free(&self) {
        std::fs::remove_file(self.ballast()).expect("remove ballast");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
