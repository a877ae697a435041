//! CPU time and peak memory of the tester itself, so a saturated tester shows in its own report
//! and the cost of a simulated user is measured, not guessed. The one place with `unsafe`: a
//! `getrusage` call.

#![allow(unsafe_code)]

use serde::{Deserialize, Serialize};

/// User and system CPU seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuTime {
    pub user_secs: f64,
    pub sys_secs: f64,
}

impl CpuTime {
    pub fn total(&self) -> f64 {
        self.user_secs + self.sys_secs
    }

    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            user_secs: self.user_secs - earlier.user_secs,
            sys_secs: self.sys_secs - earlier.sys_secs,
        }
    }

    pub fn add(&mut self, other: &CpuTime) {
        self.user_secs += other.user_secs;
        self.sys_secs += other.sys_secs;
    }
}

/// CPU used by the whole process (all threads) so far.
pub fn process() -> CpuTime {
    usage(libc::RUSAGE_SELF)
}

/// CPU used by the calling thread so far. A worker engine runs on one thread, so this is its
/// cost even when several engines share a process.
pub fn thread() -> CpuTime {
    usage(libc::RUSAGE_THREAD)
}

/// Peak resident memory of the whole process so far, in KiB.
pub fn peak_rss_kib() -> u64 {
    rusage(libc::RUSAGE_SELF).map_or(0, |ru| u64::try_from(ru.ru_maxrss).unwrap_or(0))
}

fn usage(who: libc::c_int) -> CpuTime {
    let Some(ru) = rusage(who) else {
        return CpuTime::default();
    };
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    CpuTime {
        user_secs: secs(ru.ru_utime),
        sys_secs: secs(ru.ru_stime),
    }
}

fn rusage(who: libc::c_int) -> Option<libc::rusage> {
    // SAFETY: `getrusage` only writes into the zeroed struct we own; `who` is a valid constant.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: see above; the pointer is to a live, properly aligned `rusage`.
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    (rc == 0).then_some(ru)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_time_grows_with_work() {
        let before = super::thread();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = super::thread();
        assert!(after.total() >= before.total());
        assert!(super::process().total() > 0.0);
        assert!(super::peak_rss_kib() > 0);
    }
}
