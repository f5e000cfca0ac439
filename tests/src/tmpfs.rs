//! A small tmpfs to fill up: a real "No space left on device" without touching a real disk.
//! Mounting needs root; tests skip (with a message) without it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs, unmounted on drop (lazily if still busy, so a failing test never leaves a
/// mount behind).
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it, e.g. `"1m"`) on `path`, created
    /// if missing; `None`, after saying why, when not root or when mounting fails.
    pub fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid(2) cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .status();
        match status {
            Ok(status) if status.success() => Some(Tmpfs {
                path: path.to_path_buf(),
            }),
            other => {
                eprintln!(
                    "skipped: cannot mount a tmpfs on {}: {other:?}",
                    path.display()
                );
                None
            }
        }
    }

    /// Writes a file of zeros until the filesystem is full; returns its path.
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write as _;
        let path = self.path.join(name);
        let mut file = std::fs::File::create(&path).expect("ballast");
        let chunk = vec![0u8; 64 << 10];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) if err.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(err) => panic!("filling {}: {err}", path.display()),
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}
