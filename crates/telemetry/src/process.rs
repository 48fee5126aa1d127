//! Process metrics read from `/proc/self` (the names Prometheus clients use everywhere).

use prometheus::{Counter, IntGauge, Opts, Registry};

/// Clock ticks per second in `/proc` (`USER_HZ`, fixed at 100 in the Linux ABI).
const USER_HZ: f64 = 100.0;

pub(crate) struct ProcessMetrics {
    cpu_seconds: Counter,
    resident: IntGauge,
    virtual_mem: IntGauge,
    open_fds: IntGauge,
    threads: IntGauge,
    start_time: IntGauge,
}

impl ProcessMetrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            cpu_seconds: Counter::with_opts(Opts::new(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
            ))?,
            resident: IntGauge::new("process_resident_memory_bytes", "Resident memory size in bytes.")?,
            virtual_mem: IntGauge::new("process_virtual_memory_bytes", "Virtual memory size in bytes.")?,
            open_fds: IntGauge::new("process_open_fds", "Number of open file descriptors.")?,
            threads: IntGauge::new("process_threads", "Number of OS threads in the process.")?,
            start_time: IntGauge::new(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
            )?,
        };
        registry.register(Box::new(m.cpu_seconds.clone()))?;
        registry.register(Box::new(m.resident.clone()))?;
        registry.register(Box::new(m.virtual_mem.clone()))?;
        registry.register(Box::new(m.open_fds.clone()))?;
        registry.register(Box::new(m.threads.clone()))?;
        registry.register(Box::new(m.start_time.clone()))?;
        Ok(m)
    }

    /// Re-reads `/proc/self`. Blocking file reads: call off the async runtime.
    pub(crate) fn refresh(&self) {
        if let Some(stat) = read_stat() {
            let cpu = (stat.utime + stat.stime) as f64 / USER_HZ;
            let delta = cpu - self.cpu_seconds.get();
            if delta > 0.0 {
                self.cpu_seconds.inc_by(delta);
            }
            self.threads.set(stat.threads);
            self.virtual_mem.set(stat.vsize);
            if let Some(btime) = boot_time() {
                self.start_time.set(btime + (stat.starttime as f64 / USER_HZ) as i64);
            }
        }
        if let Some(rss) = status_kb("VmRSS:") {
            self.resident.set(rss * 1024);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.count() as i64);
        }
    }
}

struct Stat {
    utime: u64,
    stime: u64,
    threads: i64,
    starttime: u64,
    vsize: i64,
}

fn read_stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat(&text)
}

/// Parses `/proc/self/stat`; the command name may hold spaces and parentheses, so fields are
/// counted from after the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); field N is f[N - 3].
    let get = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        utime: get(14)?,
        stime: get(15)?,
        threads: get(20)? as i64,
        starttime: get(22)?,
        vsize: get(23)? as i64,
    })
}

fn boot_time() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

fn status_kb(key: &str) -> Option<i64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "42 (we ird) name)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 12345 98765432 1000 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!((s.utime, s.stime, s.threads, s.starttime, s.vsize), (250, 50, 7, 12345, 98_765_432));
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn reads_this_process() {
        let registry = Registry::new();
        let m = ProcessMetrics::register(&registry).unwrap();
        m.refresh();
        assert!(m.resident.get() > 0);
        assert!(m.threads.get() >= 1);
        assert!(m.open_fds.get() >= 3);
    }
}
