//! The pre-checks of a job's `checkItems` (upstream's `actions/pre_check.go`): `cpu`, `mem` and
//! `disk` usage must not exceed 80 %, measured as gopsutil does (CPU busy time over 100 ms from
//! `/proc/stat`; memory `(MemTotal - MemAvailable) / MemTotal`; the root file system's
//! `used / (used + available)` from statvfs).

use std::time::Duration;

/// The most a resource may be in use, in percent (upstream's `MaxCPUUsage`, `MaxMemUsage`,
/// `MaxDiskUsage`).
pub const MAX_USAGE: f64 = 80.0;

/// How long the CPU is sampled (gopsutil's `cpu.Percent(100ms)`).
const CPU_SAMPLE: Duration = Duration::from_millis(100);

/// Runs the checks in order; the first that fails gives the reason.
pub async fn run(items: &[String]) -> Result<(), String> {
    for item in items {
        let usage = match item.as_str() {
            "cpu" => cpu().await?,
            "mem" => mem().await?,
            "disk" => disk().await?,
            other => return Err(format!("check item {other} not support")),
        };
        judge(item, usage)?;
    }
    Ok(())
}

/// Upstream's verdict on one item's usage.
pub fn judge(item: &str, usage: f64) -> Result<(), String> {
    if usage > MAX_USAGE {
        return Err(format!(
            "current {item} usage is {usage:.2}, which exceeds the maximum allowed usage {MAX_USAGE:.2}"
        ));
    }
    Ok(())
}

async fn cpu() -> Result<f64, String> {
    let read =
        || async { tokio::fs::read_to_string("/proc/stat").await.map_err(|e| format!("reading /proc/stat: {e}")) };
    let first = read().await?;
    tokio::time::sleep(CPU_SAMPLE).await;
    let second = read().await?;
    cpu_usage(&first, &second).ok_or_else(|| "/proc/stat has no usable cpu line".to_owned())
}

async fn mem() -> Result<f64, String> {
    let text = tokio::fs::read_to_string("/proc/meminfo").await.map_err(|e| format!("reading /proc/meminfo: {e}"))?;
    mem_usage(&text).ok_or_else(|| "/proc/meminfo has no MemTotal or MemAvailable".to_owned())
}

async fn disk() -> Result<f64, String> {
    let st = tokio::task::spawn_blocking(|| rustix::fs::statvfs("/"))
        .await
        .map_err(|e| format!("statvfs /: {e}"))?
        .map_err(|e| format!("statvfs /: {e}"))?;
    disk_usage(st.f_blocks, st.f_bfree, st.f_bavail).ok_or_else(|| "the root file system reports no blocks".to_owned())
}

/// Busy time (everything but idle and iowait) over total time between two `/proc/stat`
/// samples, in percent.
pub fn cpu_usage(before: &str, after: &str) -> Option<f64> {
    let (busy0, total0) = cpu_times(before)?;
    let (busy1, total1) = cpu_times(after)?;
    let total = total1.saturating_sub(total0);
    if total == 0 {
        return Some(0.0);
    }
    Some(busy1.saturating_sub(busy0) as f64 * 100.0 / total as f64)
}

/// (busy, total) jiffies of the aggregate `cpu` line: user nice system idle iowait irq softirq
/// steal (guest time is already part of user).
fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.split_whitespace().next() == Some("cpu"))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).take(8).filter_map(|f| f.parse().ok()).collect();
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// `(MemTotal - MemAvailable) / MemTotal` in percent.
pub fn mem_usage(meminfo: &str) -> Option<f64> {
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.split_whitespace().next()?.parse::<u64>().ok())
    };
    let (total, available) = (field("MemTotal")?, field("MemAvailable")?);
    if total == 0 {
        return None;
    }
    Some(total.saturating_sub(available) as f64 * 100.0 / total as f64)
}

/// Used over used + available blocks (what an unprivileged user can still get), in percent.
pub fn disk_usage(blocks: u64, free: u64, available: u64) -> Option<f64> {
    let used = blocks.saturating_sub(free);
    let base = used + available;
    if base == 0 {
        return None;
    }
    Some(used as f64 * 100.0 / base as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_over_eighty_percent_fails_with_upstreams_message() {
        assert!(judge("cpu", 80.0).is_ok());
        assert_eq!(
            judge("cpu", 93.456).unwrap_err(),
            "current cpu usage is 93.46, which exceeds the maximum allowed usage 80.00"
        );
        assert!(judge("disk", 80.01).unwrap_err().starts_with("current disk usage is 80.01"));
    }

    #[test]
    fn usages_are_computed_as_gopsutil_does() {
        let a = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n";
        let b = "cpu  150 0 150 750 150 0 0 0 0 0\n";
        // 100 busy jiffies of 200.
        assert_eq!(cpu_usage(a, b), Some(50.0));
        assert_eq!(cpu_usage(a, a), Some(0.0));
        assert_eq!(cpu_usage("intr 1", b), None);
        let mem = "MemTotal:       1000 kB\nMemFree:   100 kB\nMemAvailable:    250 kB\n";
        assert_eq!(mem_usage(mem), Some(75.0));
        assert_eq!(mem_usage("MemTotal: 10 kB\n"), None);
        // 60 used, 20 available to users (20 more reserved for root): 75 %.
        assert_eq!(disk_usage(100, 40, 20), Some(75.0));
        assert_eq!(disk_usage(0, 0, 0), None);
    }

    #[tokio::test]
    async fn unknown_items_are_refused_and_real_readings_work() {
        assert_eq!(run(&["gpu".to_owned()]).await.unwrap_err(), "check item gpu not support");
        assert!(run(&[]).await.is_ok());
        // The real readings succeed (whatever the load of the machine running the test).
        for f in [cpu().await, mem().await, disk().await] {
            let v = f.unwrap();
            assert!((0.0..=100.0).contains(&v), "{v}");
        }
    }
}
