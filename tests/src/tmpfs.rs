//! A small tmpfs mounted for one test (a disk that fills up), unmounted when dropped. Needs
//! root; tests that use it skip themselves when it cannot be had.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A mounted tmpfs.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it, e.g. `"16m"`) on `dir`, creating
    /// the directory. `Err` says why not (not root, or the mount refused), for the skip message.
    pub fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        // SAFETY: geteuid(2) cannot fail and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// (bytes used, bytes in all), for messages that show whether it filled.
    pub fn usage(&self) -> (u64, u64) {
        use std::os::unix::ffi::OsStrExt as _;
        let Ok(path) = std::ffi::CString::new(self.dir.as_os_str().as_bytes()) else {
            return (0, 0);
        };
        // SAFETY: statvfs(3) writes into the zeroed struct we pass; the path is NUL-terminated.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
            return (0, 0);
        }
        let block = stat.f_frsize;
        (
            (stat.f_blocks - stat.f_bfree) * block,
            stat.f_blocks * block,
        )
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a daemon still holding files in it must not keep the mount alive, nor a failed
        // test leave it behind.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .status();
    }
}
