//! Process and host figures from `/proc` for status pages: a process's resident memory and CPU
//! time, the host's load average and memory. Every reader returns `None` where `/proc` is
//! missing or unreadable (the page then says "unknown").

use std::path::Path;

/// Resident memory and CPU time of one process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
}

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// This process's usage.
pub fn self_usage() -> Option<Usage> {
    usage_of(Path::new("/proc/self"))
}

fn usage_of(dir: &Path) -> Option<Usage> {
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    Some(Usage {
        rss_bytes: vm_rss(&status)?,
        cpu_seconds: cpu_ticks(&stat)? as f64 / USER_HZ,
    })
}

/// `VmRSS` of a `/proc/<pid>/status` text, in bytes.
fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `utime + stime` of a `/proc/<pid>/stat` line, in clock ticks. The command name (field 2) may
/// contain spaces and parentheses, so fields are counted after its last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    utime.checked_add(stime)
}

/// The host's 5-minute load average (`/proc/loadavg`).
pub fn load_average_5m() -> Option<f64> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The host's memory: (total, available), bytes (`/proc/meminfo`).
pub fn host_memory() -> Option<(u64, u64)> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let status = "Name:\tsnikket\nVmPeak:\t  9000 kB\nVmRSS:\t   13732 kB\nThreads:\t3\n";
        assert_eq!(vm_rss(status), Some(13732 * 1024));
        assert_eq!(vm_rss("Name: x\n"), None);
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 3 0 100 1000000 3433";
        assert_eq!(cpu_ticks(stat), Some(300));
        assert_eq!(cpu_ticks("4242 (short) S 1"), None);
        assert_eq!(parse_loadavg("0.52 0.61 0.70 2/345 6789\n"), Some(0.61));
        let meminfo = "MemTotal:       16303368 kB\nMemFree:         1033216 kB\nMemAvailable:    9867084 kB\n";
        assert_eq!(
            parse_meminfo(meminfo),
            Some((16303368 * 1024, 9867084 * 1024))
        );
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let u = self_usage().expect("/proc/self on Linux");
        assert!(u.rss_bytes > 1024 * 1024, "{u:?}");
        assert!(u.cpu_seconds >= 0.0);
        assert!(load_average_5m().is_some());
        let (total, available) = host_memory().expect("meminfo");
        assert!(total >= available && available > 0);
    }
}
