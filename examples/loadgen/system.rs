//! The machine the numbers come from, its load, and the process's resident memory and open
//! files.

/// `VmRSS` of this process in kB, from `/proc/self/status`.
pub(crate) fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kb(&status, "VmRSS:")
}

/// `VmRSS` of process `pid` in kB.
pub(crate) fn rss_kb_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_kb(&status, "VmRSS:")
}

/// Open file descriptors of this process: the entries of `/proc/self/fd`.
pub(crate) fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

/// The machine's 1-minute load average, from `/proc/loadavg`.
pub(crate) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The value in kB of a `/proc/*/status` or `/proc/meminfo` line starting with `key`.
pub(crate) fn parse_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// One line describing the machine: CPU model, logical CPUs, memory, kernel.
pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| parse_kb(&m, "MemTotal:"))
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}; nproc {cpus}; memory {:.1} GiB; Linux {}",
        mem_kb as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_lines() {
        let status = "Name:\tloadgen\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(parse_kb(status, "VmRSS:"), Some(12345));
        assert_eq!(parse_kb(status, "VmSwap:"), None);
        assert!(rss_kb().is_some_and(|kb| kb > 0));
        assert!(machine().contains("nproc"));
        assert!(open_fds().is_some_and(|n| n >= 3));
        assert!(load_average().is_some_and(|l| l >= 0.0));
    }
}
