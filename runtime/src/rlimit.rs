//! The open-file limit: both daemons raise their soft limit to the hard one at start, and the
//! agent (its watched files) and the collector (its output files) size their budgets from what
//! is left ([`files_under`]).

/// Raises the soft limit on open files to the hard limit, so a daemon serving thousands of
/// files is bounded by what the administrator allows (systemd's `LimitNOFILE=`), not by the
/// 1024 soft default kept for programs that still use select(2). Logged once.
pub fn raise_open_file_limit() {
    match set_open_file_limit_to_hard() {
        Ok((before, after)) if before < after => {
            tracing::info!(from = before, to = after, "raised the open-file limit");
        }
        Ok((_, now)) => tracing::debug!(limit = now, "open-file limit already at its maximum"),
        Err(err) => tracing::warn!(error = %err, "cannot raise the open-file limit"),
    }
}

/// Descriptors a daemon keeps for everything but the files it serves (its state, the broker
/// connection, the runtime, the metrics listener, files opened briefly); each daemon's budget
/// says what its own are.
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// How many served files (watched by the agent, written by the collector) the open-file
/// `limit` leaves room for: the limit less [`RESERVED_DESCRIPTORS`], or half a limit too small
/// for that, at least 1; `None` when there is no limit.
pub fn files_under(limit: Option<u64>) -> Option<usize> {
    limit.map(|limit| {
        let usable = if limit > 2 * RESERVED_DESCRIPTORS {
            limit - RESERVED_DESCRIPTORS
        } else {
            limit / 2
        };
        usize::try_from(usable).unwrap_or(usize::MAX).max(1)
    })
}

/// The current soft limit on open files; `None` if unlimited or unknown.
pub fn open_file_limit() -> Option<u64> {
    let limit = get_nofile().ok()?;
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Sets the soft `RLIMIT_NOFILE` to the hard one; returns (before, after).
fn set_open_file_limit_to_hard() -> std::io::Result<(u64, u64)> {
    let mut limit = get_nofile()?;
    let before = limit.rlim_cur;
    // An unlimited hard limit is not a valid soft one for descriptors: the kernel caps it at
    // fs.nr_open.
    let target = if limit.rlim_max == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(before)
    } else {
        limit.rlim_max
    };
    if target <= before {
        return Ok((before, before));
    }
    limit.rlim_cur = target;
    // SAFETY: setrlimit with a valid pointer to an initialised rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((before, target))
}

fn get_nofile() -> std::io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the rlimit we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_file_limit_reaches_the_hard_one() {
        let (_, after) = set_open_file_limit_to_hard().unwrap();
        let limit = get_nofile().unwrap();
        assert_eq!(limit.rlim_cur, after);
        assert!(limit.rlim_max == libc::RLIM_INFINITY || limit.rlim_cur == limit.rlim_max);
        assert_eq!(open_file_limit(), Some(after));
    }
}
