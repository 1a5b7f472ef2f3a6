//! What a server process costs, read from `/proc`: CPU seconds
//! (`/proc/<pid>/stat` utime + stime, all threads) and peak resident set
//! size (`/proc/<pid>/status` VmHWM), which `/proc/<pid>/clear_refs` can
//! reset so each phase gets its own peak.

use std::sync::OnceLock;

use anyhow::Context;

/// CPU seconds (user + system, every thread) the process has used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / clock_ticks_per_second())
}

/// utime + stime in clock ticks from the text of `/proc/<pid>/stat`.
fn parse_cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    // The command name (field 2) is in parentheses and may hold spaces, so
    // count fields after the last ')': state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').context("no ')' in /proc stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse().context("utime")?;
    let stime: u64 = fields.get(12).context("no stime")?.parse().context("stime")?;
    Ok(utime + stime)
}

/// `getconf CLK_TCK`, or Linux's usual 100 if that cannot be asked.
fn clock_ticks_per_second() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// Peak resident set size in bytes since start or the last
/// [`reset_peak_rss`].
pub fn peak_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    parse_kib_field(&status, "VmHWM:").map(|kib| kib * 1024)
}

/// Resident set size in bytes now (`VmRSS`).
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    parse_kib_field(&status, "VmRSS:").map(|kib| kib * 1024)
}

fn parse_kib_field(status: &str, field: &str) -> anyhow::Result<u64> {
    let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field}"))?;
    let kib = line[field.len()..].trim().trim_end_matches("kB").trim();
    kib.parse().with_context(|| format!("{field} {kib:?}"))
}

/// Resets the process's peak RSS to its current RSS (Linux 4.0+; needs to
/// own the process). Returns false where the kernel refuses, in which case
/// the peak covers the process's whole life.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "1234 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 1 2 3";
        assert_eq!(parse_cpu_ticks(stat).unwrap(), 300);
    }

    #[test]
    fn parses_hwm() {
        let status = "Name:\tetcd\nVmPeak:\t  100 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_kib_field(status, "VmHWM:").unwrap(), 2048);
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert!(peak_rss_bytes(pid).unwrap() > 0);
    }
}
