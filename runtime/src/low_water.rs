//! The receive low-water mark (`SO_RCVLOWAT`) of the socket under a broker connection.
//!
//! lapin reads its socket on a thread of its own, woken through tokio's reactor each time bytes
//! arrive. A consumer that keeps up with a live stream gets deliveries a few at a time, so it
//! pays two thread wake-ups and a read for every few lines: 1.7-1.8 times the CPU per line of
//! the same consumer draining a full queue, which gets them in full reads. While the mark is
//! raised the kernel wakes the reader only once that many bytes wait; lowering it signals at
//! once whatever waits (Linux 4.18 and later, which re-checks readiness when the mark changes),
//! so the trickle of the raised span is read in one go.
//!
//! Invariants:
//! - Whoever raises the mark lowers it within a bounded time: a raised mark holds back every
//!   frame of the connection, heartbeats and replies too.
//! - It is best effort: a socket that is gone, or a kernel that cannot take it, only loses the
//!   saving, never a byte.

use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

/// No socket is known (yet), or the kernel does not re-check readiness when the mark changes.
const NONE: RawFd = -1;

/// The low-water mark of the socket of the last connection made through it; clones share it.
#[derive(Debug, Clone)]
pub struct LowWater(Arc<AtomicI32>);

impl Default for LowWater {
    fn default() -> Self {
        LowWater(Arc::new(AtomicI32::new(NONE)))
    }
}

impl LowWater {
    /// From now on the mark is that of `socket` (a new connection's).
    pub(crate) fn watch(&self, socket: RawFd) {
        let socket = if kernel_signals_on_change() {
            socket
        } else {
            NONE
        };
        self.0.store(socket, Ordering::Relaxed);
    }

    /// Holds back read wake-ups until `bytes` wait (the kernel caps it at half the largest
    /// receive buffer).
    pub fn raise(&self, bytes: u32) {
        self.set(i32::try_from(bytes).unwrap_or(i32::MAX));
    }

    /// Back to the default of one byte: whatever waits is signalled at once.
    pub fn lower(&self) {
        self.set(1);
    }

    fn set(&self, bytes: i32) {
        let socket = self.0.load(Ordering::Relaxed);
        if socket == NONE {
            return;
        }
        // SAFETY: setsockopt(2) reads `bytes` for its size; on a descriptor that is no longer
        // a socket it fails with ENOTSOCK or EBADF, which only loses the saving.
        unsafe {
            libc::setsockopt(
                socket,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&bytes as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            );
        }
    }
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
mod tests {
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

    #[test]
    fn a_raised_mark_holds_back_readiness_until_lowered() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let reader =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut writer, _) = listener.accept().expect("accept");
        let low_water = LowWater::default();
        low_water.watch(reader.as_raw_fd());
        if !kernel_signals_on_change() {
            eprintln!("skipped: this kernel is older than 4.18");
            return;
        }
        low_water.raise(64 * 1024);
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
        low_water.lower();
        assert_eq!(mark(&reader), 1);
        assert!(readable(1000), "not readable once the mark is lowered");
        let mut got = [0u8; 11];
        (&reader).read_exact(&mut got).expect("read");
        assert_eq!(&got, b"a few bytes");
    }

    #[test]
    fn without_a_socket_nothing_is_set() {
        let low_water = LowWater::default();
        low_water.raise(1 << 20);
        low_water.lower();
    }
}
