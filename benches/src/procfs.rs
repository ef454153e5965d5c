//! CPU time and memory of a process, from `/proc`.
//!
//! Two CPU clocks:
//! - `/proc/PID/stat` utime + stime, in clock ticks (`getconf CLK_TCK`, 100 here):
//!   the classic measure, 10 ms resolution.
//! - the sum over the process's threads of `/proc/PID/task/TID/schedstat`'s first
//!   field: nanoseconds on CPU as the scheduler counts them. Threads that ended
//!   between two readings drop out of the sum, so take both readings while the
//!   threads that matter are alive (the SFU's are).

use std::path::Path;
use std::time::Duration;

/// One reading of a process's CPU clocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuReading {
    /// utime + stime in clock ticks.
    pub ticks: u64,
    /// Sum of the threads' scheduler run time, ns.
    pub sched_ns: u64,
}

impl CpuReading {
    /// CPU seconds between two readings, by each clock: (stat, schedstat).
    pub fn since(&self, earlier: &CpuReading, clk_tck: u64) -> (f64, f64) {
        (
            self.ticks.saturating_sub(earlier.ticks) as f64 / clk_tck as f64,
            self.sched_ns.saturating_sub(earlier.sched_ns) as f64 / 1e9,
        )
    }
}

/// `getconf CLK_TCK`, 100 when that cannot be run.
pub fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// utime + stime of `/proc/{pid}/stat` (fields 14 and 15), in ticks.
pub fn stat_ticks(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm) ", field 3 (state) is index 0; utime is field 14 → index 11.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Sum of the run time of every thread of `pid`, in ns.
pub fn sched_ns(pid: &str) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0;
    for e in dir.flatten() {
        let p = e.path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(&p)
            && let Some(ns) = s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        {
            sum += ns;
        }
    }
    Some(sum)
}

/// Run time of the calling thread, ns.
pub fn thread_sched_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

pub fn cpu(pid: &str) -> Option<CpuReading> {
    Some(CpuReading {
        ticks: stat_ticks(pid)?,
        sched_ns: sched_ns(pid)?,
    })
}

/// VmRSS of `/proc/{pid}/status`, in kB.
pub fn rss_kb(pid: &str) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// VmHWM (peak RSS), kB.
pub fn hwm_kb(pid: &str) -> Option<u64> {
    status_field(pid, "VmHWM:")
}

fn status_field(pid: &str, name: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The CPUs this process may run on (`Cpus_allowed_list`), e.g. "0" or "0-1".
pub fn cpus_allowed(pid: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
}

/// A short description of the machine, for reports.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    // Online CPUs of the machine, not of this process's affinity mask.
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{cores} × {cpu}, Linux {kernel}")
}

/// The git commit of the work tree at `dir`, with "-dirty" when it has changes.
pub fn git_sha(dir: &Path) -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let sha = run(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty { format!("{sha}-dirty") } else { sha }
}

/// Sleeps in small steps until `deadline`, so a long wait stays responsive.
pub fn sleep_until(deadline: std::time::Instant) {
    loop {
        let now = std::time::Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id().to_string();
        assert!(stat_ticks(&me).is_some());
        assert!(sched_ns(&me).is_some_and(|n| n > 0));
        assert!(rss_kb(&me).is_some_and(|k| k > 0));
        assert!(cpus_allowed(&me).is_some());
    }
}
