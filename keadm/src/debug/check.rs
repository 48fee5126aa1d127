//! `keadm debug check ITEM`: whether this host can run an edge node, item by item, with
//! upstream's thresholds: a supported architecture, a CPU, 256 MiB of memory (128 MiB free),
//! 1 GiB of disk (512 MiB free) where edgecore keeps its state, a resolvable domain, CloudHub
//! reachable, a CRI runtime answering, and process IDs to spare.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Ctx, Error, Outcome, Report, fail};
use crate::paths;

const MIB: u64 = 1024 * 1024;
/// Upstream's memory thresholds.
const MIN_MEM_TOTAL: u64 = 256 * MIB;
const MIN_MEM_FREE: u64 = 128 * MIB;
/// Upstream's disk thresholds.
const MIN_DISK_TOTAL: u64 = 1024 * MIB;
const MIN_DISK_FREE: u64 = 512 * MIB;
/// Below this share of `pid_max` left, new containers may fail to start.
const MIN_PID_FREE_PERCENT: u64 = 5;
/// How long a name lookup or a connection may take.
const NET_TIMEOUT: Duration = Duration::from_secs(5);
/// The runtime upstream assumes.
const DEFAULT_RUNTIME: &str = "unix:///run/containerd/containerd.sock";

/// The items, in `all` order.
const ITEMS: [&str; 8] = ["arch", "cpu", "mem", "disk", "dns", "network", "runtime", "pid"];

/// `keadm debug check` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// all, arch, cpu, mem (memory), disk, dns, network, runtime or pid.
    pub item: String,
    /// The domain the dns check resolves.
    #[arg(long = "domain", default_value = "www.github.com")]
    pub domain: String,
    /// CloudHub's `host:port` for the network check (default: edgeHub.websocket.server of
    /// edgecore.yaml).
    #[arg(short = 's', long = "cloud-hub-server")]
    pub cloud_hub_server: Option<String>,
    /// The runtime's endpoint for the runtime check (default: edgecore.yaml's, else
    /// unix:///run/containerd/containerd.sock).
    #[arg(short = 'r', long = "remote-runtime-endpoint")]
    pub runtime_endpoint: Option<String>,
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<(), Error> {
    let item = match args.item.as_str() {
        "memory" => "mem",
        other => other,
    };
    let items: Vec<&str> = match item {
        "all" => ITEMS.to_vec(),
        i if ITEMS.contains(&i) => vec![i],
        other => {
            return Err(Error::Usage(format!("keadm debug check: unknown item {other:?} (all, {})", ITEMS.join(", "))));
        }
    };
    let mut report = Report::default();
    for item in items {
        let outcome = match item {
            "arch" => arch(std::env::consts::ARCH),
            "cpu" => cpu(),
            "mem" => memory(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default()),
            "disk" => disk(&state_dir(ctx)),
            "dns" => dns(&args.domain),
            "network" => network(args, ctx),
            "runtime" => runtime(args, ctx),
            _ => pid(),
        };
        report.add(item, outcome);
    }
    report.finish()
}

/// The architectures KubeEdge ships for.
pub fn arch(arch: &str) -> Outcome {
    match arch {
        "x86_64" => Outcome::Pass("amd64".into()),
        "aarch64" => Outcome::Pass("arm64".into()),
        "arm" => Outcome::Pass("arm".into()),
        other => fail(format!("{other} is not an architecture KubeEdge supports"), "use an amd64, arm64 or arm host"),
    }
}

fn cpu() -> Outcome {
    match std::thread::available_parallelism() {
        Ok(n) => Outcome::Pass(format!("{n} CPU(s) usable (needs 1)")),
        Err(e) => fail(format!("the CPU count is unknown: {e}"), "check /proc and the cgroup's cpuset"),
    }
}

/// A `/proc/meminfo` field in bytes.
fn meminfo(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Memory against upstream's thresholds, from `/proc/meminfo`'s text.
pub fn memory(meminfo_text: &str) -> Outcome {
    let (Some(total), Some(free)) = (meminfo(meminfo_text, "MemTotal"), meminfo(meminfo_text, "MemAvailable")) else {
        return fail("/proc/meminfo has no MemTotal/MemAvailable", "run on Linux with /proc mounted");
    };
    let what = format!("{} MiB total, {} MiB available", total / MIB, free / MIB);
    if total < MIN_MEM_TOTAL || free < MIN_MEM_FREE {
        fail(
            format!("{what}; needs {} MiB total and {} MiB available", MIN_MEM_TOTAL / MIB, MIN_MEM_FREE / MIB),
            "free memory (stop other services) or use a larger host",
        )
    } else {
        Outcome::Pass(what)
    }
}

/// Where edgecore keeps its state (the database's directory), or the nearest existing parent.
fn state_dir(ctx: &Ctx) -> PathBuf {
    let db = ctx.edge().map_or_else(|_| ctx.at(paths::STATE_DIR).join("edgecore.db"), |e| e.database());
    let mut dir = db.parent().map_or_else(|| PathBuf::from("/"), Path::to_owned);
    while !dir.exists() {
        match dir.parent() {
            Some(p) => dir = p.to_owned(),
            None => break,
        }
    }
    dir
}

/// Total and free bytes of the file system holding `dir` (`df -Pk`; blocking, outside async).
fn disk(dir: &Path) -> Outcome {
    let out = super::collect::output_within(
        std::process::Command::new("df").arg("-Pk").arg(dir),
        std::time::Duration::from_secs(10),
    );
    let parsed = out.ok().filter(|o| o.status.success()).and_then(|o| {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let line = text.lines().nth(1)?.to_owned();
        let f: Vec<&str> = line.split_whitespace().collect();
        Some((f.get(1)?.parse::<u64>().ok()? * 1024, f.get(3)?.parse::<u64>().ok()? * 1024))
    });
    let Some((total, free)) = parsed else {
        return fail(format!("df -Pk {} did not answer", dir.display()), "check that df (coreutils) is installed");
    };
    let what = format!("{}: {} MiB total, {} MiB free", dir.display(), total / MIB, free / MIB);
    if total < MIN_DISK_TOTAL || free < MIN_DISK_FREE {
        fail(
            format!("{what}; needs {} MiB total and {} MiB free", MIN_DISK_TOTAL / MIB, MIN_DISK_FREE / MIB),
            "free space (old images: crictl rmi --prune; logs: journalctl --vacuum-size) or grow the disk",
        )
    } else {
        Outcome::Pass(what)
    }
}

/// Resolves `domain` with the system resolver, on a thread with a deadline.
fn dns(domain: &str) -> Outcome {
    let (tx, rx) = std::sync::mpsc::channel();
    let name = domain.to_owned();
    let _ = std::thread::Builder::new().name("dns".into()).spawn(move || {
        let _ = tx.send((name.as_str(), 0u16).to_socket_addrs().map(|a| a.map(|s| s.ip()).collect::<Vec<_>>()));
    });
    match rx.recv_timeout(NET_TIMEOUT) {
        Ok(Ok(ips)) if !ips.is_empty() => {
            Outcome::Pass(format!("{domain} is {}", ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")))
        }
        Ok(Ok(_)) => fail(format!("{domain} has no address"), "check /etc/resolv.conf and the DNS server"),
        Ok(Err(e)) => fail(format!("{domain} does not resolve: {e}"), "check /etc/resolv.conf and the DNS server"),
        Err(_) => fail(format!("resolving {domain} took over {}s", NET_TIMEOUT.as_secs()), "check the DNS server"),
    }
}

/// A TCP connection to CloudHub.
fn network(args: &Args, ctx: &Ctx) -> Outcome {
    let server = match &args.cloud_hub_server {
        Some(s) => s.clone(),
        None => match ctx.edge() {
            Ok(e) => e.config.modules.edge_hub.websocket.server.clone(),
            Err(e) => {
                return Outcome::Skip(format!(
                    "no --cloud-hub-server and no edgecore.yaml ({})",
                    crate::ctl::chain(&e)
                ));
            }
        },
    };
    // Resolved on a thread with a deadline: a dead resolver must not hang the check.
    let (tx, rx) = std::sync::mpsc::channel();
    let host = server.clone();
    let _ = std::thread::Builder::new().name("resolve".into()).spawn(move || {
        let _ = tx.send(host.to_socket_addrs().map(Iterator::collect::<Vec<_>>));
    });
    let addrs: Vec<_> = match rx.recv_timeout(NET_TIMEOUT) {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return fail(format!("{server}: {e}"), "pass --cloud-hub-server host:port"),
        Err(_) => return fail(format!("{server}: not resolved within {NET_TIMEOUT:?}"), "check the DNS resolver"),
    };
    let mut last = String::from("no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, NET_TIMEOUT) {
            Ok(_) => return Outcome::Pass(format!("CloudHub {server} accepts connections")),
            Err(e) => last = e.to_string(),
        }
    }
    fail(
        format!("CloudHub {server} is not reachable: {last}"),
        "check the route and firewall to cloudcore, and that cloudcore runs (port 10000 by default)",
    )
}

/// CRI `Version` on the runtime's socket.
fn runtime(args: &Args, ctx: &Ctx) -> Outcome {
    let endpoint = args.runtime_endpoint.clone().unwrap_or_else(|| {
        ctx.edge().map_or_else(
            |_| DEFAULT_RUNTIME.to_owned(),
            |e| e.config.modules.edged.tailored_kubelet_config.container_runtime_endpoint.clone(),
        )
    });
    let Some(socket) = endpoint.strip_prefix("unix://") else {
        return fail(format!("{endpoint} is not unix:///path"), "pass -r unix:///run/containerd/containerd.sock");
    };
    let socket = ctx.at(socket);
    let Ok(rt) = super::runtime() else { return fail("no async runtime", "retry") };
    rt.block_on(runtime_version(&socket))
}

/// CRI `Version` of the runtime at `socket`, as an outcome.
pub async fn runtime_version(socket: &Path) -> Outcome {
    let fix = "start the container runtime (systemctl start containerd) or fix containerRuntimeEndpoint";
    let opts =
        kubeedge_cri::Options { connect_timeout: NET_TIMEOUT, request_timeout: NET_TIMEOUT, ..Default::default() };
    if !socket.exists() {
        return fail(format!("{} does not exist", socket.display()), fix);
    }
    let cri = match kubeedge_cri::Cri::connect_with(socket, opts).await {
        Ok(c) => c,
        Err(e) => return fail(format!("{}: {}", socket.display(), crate::ctl::chain(&e)), fix),
    };
    match cri.version().await {
        Ok(v) => Outcome::Pass(format!("{} {} (CRI {})", v.runtime_name, v.runtime_version, v.runtime_api_version)),
        Err(e) => fail(format!("{} does not answer CRI v1: {}", socket.display(), crate::ctl::chain(&e)), fix),
    }
}

/// Tasks in use against `pid_max`.
fn pid() -> Outcome {
    let max = std::fs::read_to_string("/proc/sys/kernel/pid_max").ok().and_then(|s| s.trim().parse::<u64>().ok());
    // /proc/loadavg's fourth field: running/total scheduling entities (threads).
    let used = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().nth(3)?.split_once('/')?.1.parse::<u64>().ok());
    pid_outcome(max, used)
}

/// The pid check on its numbers.
pub fn pid_outcome(max: Option<u64>, used: Option<u64>) -> Outcome {
    let (Some(max), Some(used)) = (max, used) else {
        return fail("/proc/sys/kernel/pid_max or /proc/loadavg unreadable", "run on Linux with /proc mounted");
    };
    let free = max.saturating_sub(used);
    let what = format!("{used} of {max} process IDs in use");
    if free * 100 < max * MIN_PID_FREE_PERCENT {
        fail(
            format!("{what}; under {MIN_PID_FREE_PERCENT}% left"),
            "raise kernel.pid_max (sysctl) or stop runaway processes",
        )
    } else {
        Outcome::Pass(what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_upstreams() {
        assert!(matches!(arch("x86_64"), Outcome::Pass(a) if a == "amd64"));
        assert!(matches!(arch("riscv64"), Outcome::Fail { .. }));
        let mem = |total: u64, avail: u64| {
            memory(&format!("MemTotal: {total} kB\nMemFree: 1 kB\nMemAvailable: {avail} kB\n"))
        };
        assert!(matches!(mem(2_000_000, 1_000_000), Outcome::Pass(_)));
        assert!(matches!(mem(200_000, 100_000), Outcome::Fail { .. }), "256 MiB total needed");
        assert!(matches!(mem(2_000_000, 100_000), Outcome::Fail { .. }), "128 MiB free needed");
        assert!(matches!(memory(""), Outcome::Fail { .. }));
        assert!(matches!(pid_outcome(Some(4_194_304), Some(300)), Outcome::Pass(_)));
        assert!(matches!(pid_outcome(Some(1000), Some(990)), Outcome::Fail { .. }));
        assert!(matches!(pid_outcome(None, Some(1)), Outcome::Fail { .. }));
    }
}
