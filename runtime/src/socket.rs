//! The socket under a broker connection, as the kernel sees it: how long since it last received
//! a byte, and its receive low-water mark (`SO_RCVLOWAT`).
//!
//! **Silence.** The broker sends a heartbeat whenever it has sent nothing for half the heartbeat
//! timeout, so the time since the socket last received data tells a live connection (however
//! slow its answers: flow control, a deep queue) from a silent one. The kernel keeps that time
//! (`TCP_INFO`'s `tcpi_last_data_recv`); [`crate::silence`] applies the rule.
//!
//! **Low-water mark.** lapin reads its socket on a thread of its own, woken through tokio's
//! reactor each time bytes arrive. A consumer that keeps up with a live stream gets deliveries a
//! few at a time, so it pays two thread wake-ups and a read for every few lines: 1.7-1.8 times
//! the CPU per line of the same consumer draining a full queue, which gets them in full reads.
//! While the mark is raised the kernel wakes the reader only once that many bytes wait; lowering
//! it signals at once whatever waits (Linux 4.18 and later, which re-checks readiness when the
//! mark changes), so the trickle of the raised span is read in one go.
//!
//! Invariants:
//! - The descriptor is lapin's, never ours: it is only asked about, never kept open. A
//!   descriptor number that lapin closed and the process reused for something else is told
//!   apart by its inode, and then nothing is asked or set.
//! - Whoever raises the mark lowers it within a bounded time: a raised mark holds back every
//!   frame of the connection, heartbeats and replies too.
//! - It is best effort: a socket that is gone, or a kernel that cannot take it, only loses the
//!   saving or the silence reading ([`Socket::silent_for`] is then `None`), never a byte. A
//!   socket that was watched and is gone reads as silent for ever.

use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The socket of the last connection made through it; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Socket(Arc<Mutex<Option<Watched>>>);

/// A socket's descriptor and the inode it had when it was watched.
#[derive(Debug, Clone, Copy)]
struct Watched {
    fd: RawFd,
    inode: u64,
}

impl Socket {
    /// From now on this is `socket` (a new connection's).
    pub(crate) fn watch(&self, socket: RawFd) {
        let watched = inode_of(socket).map(|inode| Watched { fd: socket, inode });
        *self.lock() = watched;
    }

    /// How long since the socket last received data, as the kernel counts it (millisecond
    /// precision); [`Duration::MAX`] once the watched socket is gone (its descriptor closed,
    /// or reused for another file); `None` if no socket is known or the kernel cannot tell.
    pub fn silent_for(&self) -> Option<Duration> {
        let watched = (*self.lock())?;
        if inode_of(watched.fd) != Some(watched.inode) {
            return Some(Duration::MAX);
        }
        // SAFETY: `tcp_info` is a plain C struct of integers, for which all zeroes is a value.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: getsockopt(2) writes at most `len` bytes into `info`, which lives across the
        // call; on a socket that is not TCP it fails and nothing is read.
        let rc = unsafe {
            libc::getsockopt(
                watched.fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        (rc == 0).then(|| Duration::from_millis(u64::from(info.tcpi_last_data_recv)))
    }

    /// Holds back read wake-ups until `bytes` wait (the kernel caps it at half the largest
    /// receive buffer).
    pub fn raise_low_water(&self, bytes: u32) {
        self.set_low_water(i32::try_from(bytes).unwrap_or(i32::MAX));
    }

    /// Back to the default of one byte: whatever waits is signalled at once.
    pub fn lower_low_water(&self) {
        self.set_low_water(1);
    }

    fn set_low_water(&self, bytes: i32) {
        if !kernel_signals_on_change() {
            return;
        }
        let Some(fd) = self.current() else {
            return;
        };
        // SAFETY: setsockopt(2) reads `bytes` for its size; on a descriptor that is no longer
        // a socket it fails with ENOTSOCK or EBADF, which only loses the saving.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&bytes as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            );
        }
    }

    /// The watched descriptor, if it still is the socket that was watched.
    fn current(&self) -> Option<RawFd> {
        let watched = (*self.lock())?;
        (inode_of(watched.fd) == Some(watched.inode)).then_some(watched.fd)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Watched>> {
        // A panic while holding the lock left a plain value behind: take it as it is.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The inode of the socket behind `fd`; `None` if it is not a socket (or not open).
fn inode_of(fd: RawFd) -> Option<u64> {
    // SAFETY: fstat(2) writes into `stat`, which lives across the call; all zeroes is a value
    // of this plain C struct.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::fstat(fd, &mut stat) };
    (rc == 0 && (stat.st_mode & libc::S_IFMT) == libc::S_IFSOCK).then_some(stat.st_ino)
}

/// Whether this kernel re-checks a socket's readiness when its low-water mark changes (Linux
/// 4.18 and later); an older one would leave what waits below a lowered mark unsignalled until
/// more bytes arrive.
fn kernel_signals_on_change() -> bool {
    static SIGNALS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SIGNALS.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/osrelease").is_ok_and(|release| {
            let mut numbers = release
                .trim()
                .split(|c: char| !c.is_ascii_digit())
                .map(|n| n.parse::<u32>().unwrap_or(0));
            let major = numbers.next().unwrap_or(0);
            let minor = numbers.next().unwrap_or(0);
            (major, minor) >= (4, 18)
        })
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::os::fd::AsRawFd as _;
    use std::time::Duration;

    fn mark(socket: &std::net::TcpStream) -> i32 {
        let mut bytes: i32 = 0;
        let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
        // SAFETY: getsockopt(2) writes at most `len` bytes into `bytes`.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&mut bytes as *mut i32).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        bytes
    }

    /// A connected pair of TCP sockets on loopback: (ours, the peer).
    pub(crate) fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let ours =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (peer, _) = listener.accept().expect("accept");
        (ours, peer)
    }

    #[test]
    fn a_raised_mark_holds_back_readiness_until_lowered() {
        let (reader, mut writer) = pair();
        let socket = Socket::default();
        socket.watch(reader.as_raw_fd());
        if !kernel_signals_on_change() {
            eprintln!("skipped: this kernel is older than 4.18");
            return;
        }
        socket.raise_low_water(64 * 1024);
        assert!(mark(&reader) >= 64 * 1024);
        writer.write_all(b"a few bytes").expect("write");
        std::thread::sleep(Duration::from_millis(50));
        let readable = |timeout_ms| {
            let mut poll = libc::pollfd {
                fd: reader.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll(2) on one pollfd that lives across the call.
            unsafe { libc::poll(&mut poll, 1, timeout_ms) == 1 }
        };
        assert!(!readable(0), "readable below the raised mark");
        socket.lower_low_water();
        assert_eq!(mark(&reader), 1);
        assert!(readable(1000), "not readable once the mark is lowered");
        let mut got = [0u8; 11];
        (&reader).read_exact(&mut got).expect("read");
        assert_eq!(&got, b"a few bytes");
    }

    #[test]
    fn without_a_socket_nothing_is_set() {
        let socket = Socket::default();
        socket.raise_low_water(1 << 20);
        socket.lower_low_water();
        assert_eq!(socket.silent_for(), None);
    }

    #[test]
    fn silence_is_the_time_since_data_last_arrived() {
        let (reader, mut writer) = pair();
        let socket = Socket::default();
        socket.watch(reader.as_raw_fd());
        writer.write_all(b"beat").expect("write");
        std::thread::sleep(Duration::from_millis(300));
        let quiet = socket.silent_for().expect("a TCP socket");
        assert!(quiet >= Duration::from_millis(200), "{quiet:?}");
        writer.write_all(b"beat").expect("write");
        std::thread::sleep(Duration::from_millis(20));
        let heard = socket.silent_for().expect("a TCP socket");
        assert!(heard < Duration::from_millis(200), "{heard:?}");
    }

    #[test]
    fn a_socket_closed_or_its_descriptor_reused_is_gone() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let reader =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let socket = Socket::default();
        let fd = reader.as_raw_fd();
        socket.watch(fd);
        assert!(
            socket
                .silent_for()
                .is_some_and(|quiet| quiet < Duration::from_secs(60))
        );
        drop(reader);
        assert_eq!(
            socket.silent_for(),
            Some(Duration::MAX),
            "a closed socket is gone"
        );
        // Another socket under the same number is another inode.
        let other =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        if other.as_raw_fd() == fd {
            assert_eq!(socket.silent_for(), Some(Duration::MAX));
        }
        drop(other);
    }
}
