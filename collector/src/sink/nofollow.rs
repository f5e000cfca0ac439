//! Opening output files without following any symbolic link below `output.dir`.
//!
//! Invariants:
//! - Every directory under `output.dir` is opened with `openat(parent, name, O_DIRECTORY |
//!   O_NOFOLLOW)` relative to the descriptor of the one before it, starting at the descriptor of
//!   `output.dir` itself; a missing one is created with `mkdirat` on that same descriptor. The
//!   file is opened with `O_NOFOLLOW` relative to its directory's descriptor. So a link planted
//!   anywhere below `output.dir` (by another local user, or by an earlier hostile path) makes
//!   the open fail with `ELOOP` (or `ENOTDIR`): nothing is ever read, written or truncated
//!   through it, and no path check can be raced between a check and the open. Within one
//!   batch the descriptor of the last directory walked to is reused for the next file of the
//!   same directory ([`LastDir`]): a descriptor names the directory, never a path, so that
//!   follows no link either.
//! - An output file is a regular file: anything else (a FIFO, a device, a socket) is refused
//!   without blocking (`O_NONBLOCK`) and without writing.
//! - A directory this module creates is not durable in its parent yet: the parent is returned to
//!   the caller ([`Opened::made_in`]), which makes the entry durable before a line in it is acked
//!   (the sink defers it to the batch's sync, so 400 new directories cost one syncfs rather than
//!   400 fsyncs in turn). [`create_in_existing`] makes no directory at all, and returns the
//!   directory of a file it made, whose entry is not durable yet either.
//!
//! `output.dir` itself is the operator's: it may be a link, and is followed once, at start.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

/// Flags of every directory opened on the way to a file.
const DIR_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

/// Permission bits of created directories and files, before the umask (as `create_dir_all` and
/// `OpenOptions::create` use).
const DIR_MODE: libc::mode_t = 0o777;
const FILE_MODE: libc::c_uint = 0o666;

/// An output file and the directory that holds it (to sync its entry).
pub struct Opened {
    pub file: File,
    pub dir: File,
    /// The directories in which this open made a new directory, with their paths relative to
    /// the root, parents first: their new entries are not durable yet.
    pub made_in: Vec<(File, PathBuf)>,
}

/// Opens `output.dir` itself (following a link there: the operator chose it).
pub fn open_root(dir: &Path) -> io::Result<OwnedFd> {
    let path = c_path(dir.as_os_str())?;
    // SAFETY: a NUL-terminated path; the descriptor returned is owned below.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    owned(fd)
}

/// The directory the last [`open_append`] walked to, reused by the next one into the same
/// directory: 400 new files of one directory cost one walk (an `openat` per level), not 400.
/// Hold one only across the opens
/// of one batch: a descriptor stands for the directory it was opened on, so reusing it follows
/// no link, but a directory removed later would take the files made in it along.
#[derive(Default)]
pub struct LastDir(Option<(PathBuf, OwnedFd)>);

/// Opens `relative` (under `root`) for appending, creating it and its directories if missing;
/// from `last`'s directory when it is the same one.
pub fn open_append(
    root: BorrowedFd<'_>,
    relative: &Path,
    last: &mut LastDir,
) -> io::Result<Opened> {
    let (dirs, name) = split(relative)?;
    let dir_path: PathBuf = dirs.iter().collect();
    let (dir, made_in) = match last.0.take() {
        Some((walked, dir)) if walked == dir_path => (dir, Vec::new()),
        _ => {
            let mut made_in = Vec::new();
            let dir = walk(root, dirs, Some(&mut made_in))?;
            (dir, made_in)
        }
    };
    let file = open_at(
        dir.as_fd(),
        name,
        libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT,
    )?;
    last.0 = Some((dir_path, dir.try_clone()?));
    Ok(Opened {
        file,
        dir: File::from(dir),
        made_in,
    })
}

/// Creates `relative` (under `root`) empty if it is missing, but only in a directory that
/// exists: no directory is made. Returns its directory (with its path relative to the root) if
/// this made the file, whose new entry is then not durable yet; `None` if it existed (a link
/// or any other non-file in its place is left alone). From `last`'s directory when it is the
/// same one.
pub fn create_in_existing(
    root: BorrowedFd<'_>,
    relative: &Path,
    last: &mut LastDir,
) -> io::Result<Option<(File, PathBuf)>> {
    let (dirs, name) = split(relative)?;
    let dir_path: PathBuf = dirs.iter().collect();
    let dir = match last.0.take() {
        Some((walked, dir)) if walked == dir_path => dir,
        _ => walk(root, dirs, None)?,
    };
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    let made = match open_at(dir.as_fd(), name, flags) {
        Ok(_) => Some((File::from(dir.try_clone()?), dir_path.clone())),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => None,
        Err(err) => return Err(err),
    };
    last.0 = Some((dir_path, dir));
    Ok(made)
}

/// Opens the existing file `relative` (under `root`) for reading and writing, to truncate or
/// compact it; `NotFound` if it or a directory on the way is missing.
pub fn open_existing(root: BorrowedFd<'_>, relative: &Path) -> io::Result<File> {
    let (dirs, name) = split(relative)?;
    let dir = walk(root, dirs, None)?;
    open_at(dir.as_fd(), name, libc::O_RDWR)
}

/// Whether `err` is this module refusing a link or a non-regular file (so the path can never be
/// written and its lines must be dead-lettered).
pub fn is_refusal(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ELOOP | libc::ENXIO))
        || err.kind() == io::ErrorKind::InvalidInput
}

/// The directories and the file name of a relative path made by `outpath` (only normal
/// components).
fn split(relative: &Path) -> io::Result<(Vec<&OsStr>, &OsStr)> {
    let mut parts = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            _ => return Err(invalid("not a plain relative path")),
        }
    }
    let name = parts.pop().ok_or_else(|| invalid("empty path"))?;
    Ok((parts, name))
}

/// Opens each of `dirs` in turn relative to the one before (the first relative to `root`),
/// never following a link; with `made_in`, makes the missing ones and adds the directory each
/// was made in (with its path) there.
fn walk(
    root: BorrowedFd<'_>,
    dirs: Vec<&OsStr>,
    mut made_in: Option<&mut Vec<(File, PathBuf)>>,
) -> io::Result<OwnedFd> {
    let dot = c_path(OsStr::new("."))?;
    // SAFETY: a valid descriptor and a NUL-terminated name; the result is owned below.
    let mut current = owned(unsafe { libc::openat(root.as_raw_fd(), dot.as_ptr(), DIR_FLAGS) })?;
    let mut path = PathBuf::new();
    for name in dirs {
        let c_name = c_path(name)?;
        let open = |dir: &OwnedFd| {
            // SAFETY: as above.
            owned(unsafe { libc::openat(dir.as_raw_fd(), c_name.as_ptr(), DIR_FLAGS) })
        };
        current = match open(&current) {
            Ok(next) => next,
            Err(err) if made_in.is_some() && err.kind() == io::ErrorKind::NotFound => {
                // SAFETY: a valid descriptor and a NUL-terminated name.
                let made = unsafe { libc::mkdirat(current.as_raw_fd(), c_name.as_ptr(), DIR_MODE) };
                if made != 0 {
                    let err = io::Error::last_os_error();
                    // Made meanwhile by someone else: open it (refusing it if it is a link).
                    if err.kind() != io::ErrorKind::AlreadyExists {
                        return Err(err);
                    }
                }
                // The new entry must be durable before a line in it is acked: the caller's job.
                if let Some(made_in) = made_in.as_deref_mut() {
                    made_in.push((File::from(current.try_clone()?), path.clone()));
                }
                open(&current)?
            }
            Err(err) => return Err(err),
        };
        path.push(name);
    }
    Ok(current)
}

/// Opens `name` in `dir` without following a link, and refuses anything but a regular file.
fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: libc::c_int) -> io::Result<File> {
    let c_name = c_path(name)?;
    let flags = flags | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: a valid descriptor and a NUL-terminated name; the result is owned below.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c_name.as_ptr(), flags, FILE_MODE) };
    let file = File::from(owned(fd)?);
    if !file.metadata()?.file_type().is_file() {
        return Err(invalid("not a regular file"));
    }
    Ok(file)
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: a descriptor just returned by the kernel, owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

fn c_path(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| invalid("NUL in a path"))
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn the_next_file_of_the_same_directory_is_made_in_it_without_a_walk_and_another_one_walks() {
        let out = tempfile::tempdir().unwrap();
        let root = open_root(out.path()).unwrap();
        let mut last = LastDir::default();
        let first = open_append(root.as_fd(), Path::new("h/a/x.log"), &mut last).unwrap();
        assert_eq!(first.made_in.len(), 2, "h and h/a made");
        let second = open_append(root.as_fd(), Path::new("h/a/y.log"), &mut last).unwrap();
        assert!(second.made_in.is_empty());
        let other = open_append(root.as_fd(), Path::new("h/b/z.log"), &mut last).unwrap();
        assert_eq!(other.made_in.len(), 1, "h/b made");
        for file in ["h/a/x.log", "h/a/y.log", "h/b/z.log"] {
            assert!(out.path().join(file).is_file(), "{file}");
        }
        // A link planted in place of a directory between batches (a new LastDir) is refused.
        std::fs::rename(out.path().join("h/a"), out.path().join("h/moved")).unwrap();
        std::os::unix::fs::symlink(out.path().join("h/moved"), out.path().join("h/a")).unwrap();
        let err = open_append(
            root.as_fd(),
            Path::new("h/a/w.log"),
            &mut LastDir::default(),
        )
        .err()
        .unwrap();
        assert!(
            is_refusal(&err) || err.raw_os_error() == Some(libc::ENOTDIR),
            "{err}"
        );
    }

    #[test]
    fn files_and_directories_are_created_and_appended_to() {
        let out = tempfile::tempdir().unwrap();
        let root = open_root(out.path()).unwrap();
        for line in ["a\n", "b\n"] {
            let mut opened = open_append(
                root.as_fd(),
                Path::new("h/var/log/x.log"),
                &mut LastDir::default(),
            )
            .unwrap();
            opened.file.write_all(line.as_bytes()).unwrap();
        }
        let text = std::fs::read_to_string(out.path().join("h/var/log/x.log")).unwrap();
        assert_eq!(text, "a\nb\n");
        // The directories made, each named by the one it was made in, parents first.
        let made = open_append(
            root.as_fd(),
            Path::new("h/new/deeper/y.log"),
            &mut LastDir::default(),
        )
        .unwrap();
        let made_in: Vec<&Path> = made.made_in.iter().map(|(_, p)| p.as_path()).collect();
        assert_eq!(made_in, [Path::new("h"), Path::new("h/new")]);
        assert!(open_existing(root.as_fd(), Path::new("h/var/log/x.log")).is_ok());
        let missing = open_existing(root.as_fd(), Path::new("h/none/x.log")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn links_below_the_root_are_never_followed() {
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("victim");
        std::fs::write(&target, "untouched\n").unwrap();
        std::fs::create_dir_all(out.path().join("h")).unwrap();
        std::os::unix::fs::symlink(&target, out.path().join("h/x.log")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), out.path().join("evil")).unwrap();
        let root = open_root(out.path()).unwrap();
        for relative in ["h/x.log", "evil/victim", "evil/new/y.log"] {
            let err = open_append(root.as_fd(), Path::new(relative), &mut LastDir::default())
                .err()
                .unwrap_or_else(|| panic!("{relative} opened through a link"));
            assert!(
                is_refusal(&err) || err.raw_os_error() == Some(libc::ENOTDIR),
                "{relative}: {err}"
            );
            assert!(open_existing(root.as_fd(), Path::new(relative)).is_err());
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched\n");
        assert!(!elsewhere.path().join("new").exists());
    }

    #[test]
    fn creating_in_existing_directories_makes_no_directory_and_follows_no_link() {
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(out.path().join("h")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), out.path().join("h/evil")).unwrap();
        let dangling = elsewhere.path().join("made-through-a-link");
        std::os::unix::fs::symlink(&dangling, out.path().join("h/x.log")).unwrap();
        let root = open_root(out.path()).unwrap();
        let mut last = LastDir::default();
        let made = create_in_existing(root.as_fd(), Path::new("h/new.log"), &mut last).unwrap();
        assert_eq!(made.map(|(_, dir)| dir), Some(PathBuf::from("h")));
        assert_eq!(std::fs::read(out.path().join("h/new.log")).unwrap(), b"");
        // Existing: nothing made, and a link in the file's place is left alone.
        for existing in ["h/new.log", "h/x.log"] {
            let made = create_in_existing(root.as_fd(), Path::new(existing), &mut last).unwrap();
            assert!(made.is_none(), "{existing}");
        }
        assert!(!dangling.exists());
        let missing = create_in_existing(root.as_fd(), Path::new("h/no/y.log"), &mut last);
        assert_eq!(missing.unwrap_err().kind(), io::ErrorKind::NotFound);
        assert!(!out.path().join("h/no").exists());
        let through = create_in_existing(root.as_fd(), Path::new("h/evil/z.log"), &mut last);
        let err = through.err().unwrap();
        assert!(
            is_refusal(&err) || err.raw_os_error() == Some(libc::ENOTDIR),
            "{err}"
        );
        assert!(!elsewhere.path().join("z.log").exists());
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let out = tempfile::tempdir().unwrap();
        let fifo = c_path(out.path().join("f").as_os_str()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let root = open_root(out.path()).unwrap();
        let err = open_append(root.as_fd(), Path::new("f"), &mut LastDir::default())
            .err()
            .unwrap();
        assert!(is_refusal(&err), "{err}");
    }
}
