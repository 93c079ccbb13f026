//! CPU time and RSS of a process from `/proc`.

use anyhow::{anyhow, Context, Result};

/// Linux reports `/proc/<pid>/stat` times in USER_HZ, which is 100 on every supported target.
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU seconds of `pid` ("self" for this process).
pub fn cpu_seconds(pid: &str) -> Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' field 0 is state (field 3 of stat); utime is field 14, stime 15.
    let utime: f64 = fields.get(11).ok_or_else(|| anyhow!("no utime"))?.parse()?;
    let stime: f64 = fields.get(12).ok_or_else(|| anyhow!("no stime"))?.parse()?;
    Ok((utime + stime) / TICKS_PER_SEC)
}

/// Resident set size of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow!("no VmRSS"))?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("malformed VmRSS"))?;
    Ok(kib.parse()?)
}

/// CPU seconds of the server if a pid was given.
pub fn server_cpu(pid: Option<u32>) -> Option<f64> {
    pid.and_then(|p| cpu_seconds(&p.to_string()).ok())
}
