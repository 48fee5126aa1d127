//! `GET /stats/summary` and `GET /metrics/resource`, kubelet's resource endpoints, from CRI
//! (`ListContainerStats`) for containers and pods and from `/proc` for the node. They are
//! what `kubectl top` (through metrics-server) and `kubectl get --raw
//! /api/v1/nodes/{node}/proxy/stats/summary` read through the stream tunnel.
//!
//! - The summary is kubelet's `statsapi.Summary` JSON: `node` (`nodeName`, `startTime` = boot
//!   time, `cpu` with `usageCoreNanoSeconds` and, from the previous request's sample,
//!   `usageNanoCores`; `memory` from `/proc/meminfo`) and `pods`, each with `podRef`, its
//!   containers (`cpu`, `memory`, `rootfs`) and their sums. Kubelet's cAdvisor-only parts
//!   (network, volumes, per-process stats) are absent.
//! - `/metrics/resource` is the Prometheus text kubelet serves: `node_cpu_usage_seconds_total`,
//!   `node_memory_working_set_bytes`, `container_cpu_usage_seconds_total`,
//!   `container_memory_working_set_bytes`, `container_start_time_seconds`,
//!   `pod_cpu_usage_seconds_total`, `pod_memory_working_set_bytes`, `resource_scrape_error`,
//!   with kubelet's label names and millisecond timestamps.
//! - `/metrics/probes` is kubelet's `prober_probe_total` counter, from the probe workers' counts
//!   ([`ProbeMetrics`]); like the Prometheus client, it prints nothing while no probe has run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kubeedge_cri::Cri;
use kubeedge_cri::v1;
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::super::pods::{LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID};
use super::super::probes::{ProbeCount, ProbeMetrics};

/// Kubelet's stability tag of `prober_probe_total`, as its `# HELP` line shows it.
const PROBE_TOTAL_STABILITY: &str = "ALPHA";

/// Jiffies per second in `/proc/stat` (USER_HZ, 100 on every Linux ABI kubelet supports).
const USER_HZ: u64 = 100;

/// The node's CPU counter at the last sample, and the rate measured then, for `usageNanoCores`.
#[derive(Default)]
pub struct NodeCpu(Mutex<Option<(Instant, u64, Option<u64>)>>);

/// The shortest window a CPU rate is measured over (jiffies are 10 ms: shorter windows are
/// noise); requests closer together get the last rate.
const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// One container's numbers.
#[derive(Debug, Clone, Default, PartialEq)]
struct Usage {
    name: String,
    start_ns: i64,
    cpu_ns: Option<u64>,
    nano_cores: Option<u64>,
    working_set: Option<u64>,
    usage: Option<u64>,
    rss: Option<u64>,
    page_faults: Option<u64>,
    major_page_faults: Option<u64>,
    rootfs_used: Option<u64>,
    rootfs_inodes: Option<u64>,
    timestamp_ns: i64,
}

/// A pod: namespace, name, uid → containers.
type Pods = BTreeMap<(String, String, String), Vec<Usage>>;

fn value(v: Option<&v1::UInt64Value>) -> Option<u64> {
    v.map(|v| v.value)
}

/// The running containers' usage, grouped by pod (containers Edged did not create are left out).
async fn pods(cri: &Cri) -> Result<Pods, kubeedge_cri::Error> {
    let running = v1::ContainerFilter {
        state: Some(v1::ContainerStateValue { state: v1::ContainerState::ContainerRunning.into() }),
        ..Default::default()
    };
    let started: BTreeMap<String, i64> =
        cri.list_containers(Some(running.clone())).await?.into_iter().map(|c| (c.id, c.created_at)).collect();
    let mut pods = Pods::new();
    for s in cri.list_container_stats(None).await? {
        let Some(attrs) = s.attributes else { continue };
        let Some(&start_ns) = started.get(&attrs.id) else { continue };
        let label = |k: &str| attrs.labels.get(k).cloned();
        let (Some(ns), Some(pod), Some(uid)) =
            (label(LABEL_POD_NAMESPACE), label(LABEL_POD_NAME), label(LABEL_POD_UID))
        else {
            continue;
        };
        let name = label(LABEL_CONTAINER_NAME).or_else(|| attrs.metadata.map(|m| m.name)).unwrap_or_default();
        let (cpu, mem, fs) =
            (s.cpu.unwrap_or_default(), s.memory.unwrap_or_default(), s.writable_layer.unwrap_or_default());
        pods.entry((ns, pod, uid)).or_default().push(Usage {
            name,
            start_ns,
            cpu_ns: value(cpu.usage_core_nano_seconds.as_ref()),
            nano_cores: value(cpu.usage_nano_cores.as_ref()),
            working_set: value(mem.working_set_bytes.as_ref()),
            usage: value(mem.usage_bytes.as_ref()),
            rss: value(mem.rss_bytes.as_ref()),
            page_faults: value(mem.page_faults.as_ref()),
            major_page_faults: value(mem.major_page_faults.as_ref()),
            rootfs_used: value(fs.used_bytes.as_ref()),
            rootfs_inodes: value(fs.inodes_used.as_ref()),
            timestamp_ns: cpu.timestamp.max(mem.timestamp),
        });
    }
    for containers in pods.values_mut() {
        containers.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(pods)
}

/// The node's numbers from `/proc`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Node {
    boot_secs: i64,
    cpu_ns: u64,
    mem_total: u64,
    mem_available: u64,
    mem_free: u64,
}

/// Parses `/proc/stat` (the `cpu` line and `btime`) and `/proc/meminfo`.
fn parse_node(stat: &str, meminfo: &str) -> Node {
    let mut node = Node::default();
    for line in stat.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            // user nice system idle iowait irq softirq steal: busy time leaves out idle, iowait
            // and steal (time the hypervisor gave to others).
            Some("cpu") => {
                let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
                let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| v.get(i)).sum();
                node.cpu_ns = busy.saturating_mul(1_000_000_000 / USER_HZ);
            }
            Some("btime") => node.boot_secs = f.next().and_then(|x| x.parse().ok()).unwrap_or(0),
            _ => {}
        }
    }
    for line in meminfo.lines() {
        let mut f = line.split_whitespace();
        let (key, kb) = (f.next(), f.next().and_then(|x| x.parse::<u64>().ok()).unwrap_or(0));
        match key {
            Some("MemTotal:") => node.mem_total = kb * 1024,
            Some("MemAvailable:") => node.mem_available = kb * 1024,
            Some("MemFree:") => node.mem_free = kb * 1024,
            _ => {}
        }
    }
    node
}

async fn node() -> Node {
    let stat = tokio::fs::read_to_string("/proc/stat").await.unwrap_or_default();
    let meminfo = tokio::fs::read_to_string("/proc/meminfo").await.unwrap_or_default();
    parse_node(&stat, &meminfo)
}

fn time_of_ns(ns: i64) -> String {
    kubeedge_kube_serve::time::format_unix(ns / 1_000_000_000)
}

fn now() -> String {
    kubeedge_kube_serve::time::format_system(SystemTime::now())
}

fn sum(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    values.fold(None, |acc, v| match (acc, v) {
        (None, v) => v,
        (Some(a), Some(b)) => Some(a.saturating_add(b)),
        (a, None) => a,
    })
}

/// Inserts the present fields of a CPU or memory object.
fn object(fields: &[(&str, Option<u64>)], time: &str) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("time".into(), json!(time));
    for (k, v) in fields {
        if let Some(v) = v {
            m.insert((*k).into(), json!(v));
        }
    }
    Value::Object(m)
}

fn cpu(c: &[&Usage], time: &str) -> Value {
    object(
        &[
            ("usageNanoCores", sum(c.iter().map(|u| u.nano_cores))),
            ("usageCoreNanoSeconds", sum(c.iter().map(|u| u.cpu_ns))),
        ],
        time,
    )
}

fn memory(c: &[&Usage], time: &str) -> Value {
    object(
        &[
            ("usageBytes", sum(c.iter().map(|u| u.usage))),
            ("workingSetBytes", sum(c.iter().map(|u| u.working_set))),
            ("rssBytes", sum(c.iter().map(|u| u.rss))),
            ("pageFaults", sum(c.iter().map(|u| u.page_faults))),
            ("majorPageFaults", sum(c.iter().map(|u| u.major_page_faults))),
        ],
        time,
    )
}

/// `/stats/summary`.
pub async fn summary(cri: &Cri, node_name: &str, last: &NodeCpu) -> Result<Value, kubeedge_cri::Error> {
    let pods = pods(cri).await?;
    let n = node().await;
    let time = now();
    let sampled = Instant::now();
    let nano_cores = {
        let mut last = last.0.lock();
        match *last {
            Some((at, _, rate)) if sampled.duration_since(at) < RATE_WINDOW => rate,
            previous => {
                let rate = previous.and_then(|(at, ns, _)| {
                    let dt = sampled.duration_since(at).as_nanos();
                    (dt > 0 && n.cpu_ns >= ns)
                        .then(|| u64::try_from(u128::from(n.cpu_ns - ns) * 1_000_000_000 / dt).unwrap_or(u64::MAX))
                });
                *last = Some((sampled, n.cpu_ns, rate));
                rate
            }
        }
    };
    let node = json!({
        "nodeName": node_name,
        "systemContainers": [],
        "startTime": kubeedge_kube_serve::time::format_unix(n.boot_secs),
        "cpu": object(&[("usageNanoCores", nano_cores), ("usageCoreNanoSeconds", Some(n.cpu_ns))], &time),
        "memory": object(&[
            ("availableBytes", Some(n.mem_available)),
            ("usageBytes", Some(n.mem_total.saturating_sub(n.mem_free))),
            ("workingSetBytes", Some(n.mem_total.saturating_sub(n.mem_available))),
        ], &time),
    });
    let pods: Vec<Value> = pods
        .iter()
        .map(|((ns, name, uid), containers)| {
            let all: Vec<&Usage> = containers.iter().collect();
            let start = containers.iter().map(|c| c.start_ns).min().unwrap_or(0);
            let containers: Vec<Value> = containers
                .iter()
                .map(|c| {
                    json!({
                        "name": c.name,
                        "startTime": time_of_ns(c.start_ns),
                        "cpu": cpu(&[c], &time),
                        "memory": memory(&[c], &time),
                        "rootfs": object(&[("usedBytes", c.rootfs_used), ("inodesUsed", c.rootfs_inodes)], &time),
                    })
                })
                .collect();
            json!({
                "podRef": {"name": name, "namespace": ns, "uid": uid},
                "startTime": time_of_ns(start),
                "containers": containers,
                "cpu": cpu(&all, &time),
                "memory": memory(&all, &time),
            })
        })
        .collect();
    Ok(json!({"node": node, "pods": pods}))
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', r"\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[allow(clippy::cast_precision_loss)]
fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// `/metrics/resource`.
pub async fn resource_metrics(cri: &Cri) -> String {
    let mut out = String::new();
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let n = node().await;
    let scraped = pods(cri).await;
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} [STABLE] {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v} {ms}");
        }
    };
    family(
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
        vec![(String::new(), seconds(n.cpu_ns).to_string())],
    );
    family(
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
        vec![(String::new(), n.mem_total.saturating_sub(n.mem_available).to_string())],
    );
    let pods = scraped.as_ref().map(Clone::clone).unwrap_or_default();
    let containers = |f: &dyn Fn(&Usage) -> Option<String>| -> Vec<(String, String)> {
        pods.iter()
            .flat_map(|((ns, pod, _), cs)| {
                cs.iter().filter_map(move |c| {
                    let l = format!(
                        "{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}}",
                        label(&c.name),
                        label(ns),
                        label(pod)
                    );
                    f(c).map(|v| (l, v))
                })
            })
            .collect()
    };
    let cpu_samples = containers(&|c| c.cpu_ns.map(|v| seconds(v).to_string()));
    let mem_samples = containers(&|c| c.working_set.map(|v| v.to_string()));
    #[allow(clippy::cast_precision_loss)]
    let start_samples = containers(&|c| Some((c.start_ns as f64 / 1e9).to_string()));
    let pod_samples = |f: &dyn Fn(&Usage) -> Option<u64>, conv: &dyn Fn(u64) -> String| -> Vec<(String, String)> {
        pods.iter()
            .filter_map(|((ns, pod, _), cs)| {
                sum(cs.iter().map(f))
                    .map(|v| (format!("{{namespace=\"{}\",pod=\"{}\"}}", label(ns), label(pod)), conv(v)))
            })
            .collect()
    };
    let pod_cpu = pod_samples(&|c| c.cpu_ns, &|v| seconds(v).to_string());
    let pod_mem = pod_samples(&|c| c.working_set, &|v| v.to_string());
    family(
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
        cpu_samples,
    );
    family("container_memory_working_set_bytes", "gauge", "Current working set of the container in bytes", mem_samples);
    family(
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds",
        start_samples,
    );
    family(
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
        pod_cpu,
    );
    family("pod_memory_working_set_bytes", "gauge", "Current working set of the pod in bytes", pod_mem);
    let error = if scraped.is_err() { "1" } else { "0" };
    let _ = writeln!(
        out,
        "# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n# TYPE resource_scrape_error gauge\nresource_scrape_error {error}"
    );
    out
}

/// `/metrics/probes`.
pub fn probe_metrics(probes: &ProbeMetrics) -> String {
    render_probe_counts(probes.snapshot())
}

fn render_probe_counts(samples: Vec<ProbeCount>) -> String {
    if samples.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "# HELP prober_probe_total [{PROBE_TOTAL_STABILITY}] Cumulative number of a liveness, readiness or startup \
         probe for a container by result.\n# TYPE prober_probe_total counter\n"
    );
    for s in samples {
        let _ = writeln!(
            out,
            "prober_probe_total{{container=\"{}\",namespace=\"{}\",pod=\"{}\",pod_uid=\"{}\",probe_type=\"{}\",result=\"{}\"}} {}",
            label(&s.container),
            label(&s.namespace),
            label(&s.pod),
            label(&s.uid),
            s.kind.as_str(),
            s.outcome.as_str(),
            s.count
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_numbers_come_from_proc() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\nbtime 1764750000\n";
        let meminfo = "MemTotal:       2048 kB\nMemFree:         512 kB\nMemAvailable:   1024 kB\n";
        let n = parse_node(stat, meminfo);
        // (100 + 5 + 50 + 3 + 2) jiffies × 10 ms.
        assert_eq!(n.cpu_ns, 160 * 10_000_000);
        assert_eq!(
            (n.boot_secs, n.mem_total, n.mem_available, n.mem_free),
            (1_764_750_000, 2 << 20, 1 << 20, 512 << 10)
        );
    }

    #[test]
    fn sums_keep_absent_apart_from_zero() {
        assert_eq!(sum([None, None].into_iter()), None);
        assert_eq!(sum([Some(1), None, Some(2)].into_iter()), Some(3));
        assert_eq!(label("a\"b\\c"), "a\\\"b\\\\c");
    }

    #[test]
    fn probe_counts_render_as_kubelets_counter() {
        use super::super::super::probes::{Kind, Outcome};
        assert_eq!(render_probe_counts(vec![]), "", "no family without samples");
        let count = |container: &str, kind, outcome, count| ProbeCount {
            namespace: "default".into(),
            pod: "web".into(),
            uid: "u-1".into(),
            container: container.into(),
            kind,
            outcome,
            count,
        };
        let text = render_probe_counts(vec![
            count("app", Kind::Readiness, Outcome::Success, 3),
            count("a\"b", Kind::Liveness, Outcome::Failure, 1),
        ]);
        assert_eq!(
            text,
            "# HELP prober_probe_total [ALPHA] Cumulative number of a liveness, readiness or startup probe for a \
             container by result.\n# TYPE prober_probe_total counter\n\
             prober_probe_total{container=\"app\",namespace=\"default\",pod=\"web\",pod_uid=\"u-1\",\
             probe_type=\"Readiness\",result=\"successful\"} 3\n\
             prober_probe_total{container=\"a\\\"b\",namespace=\"default\",pod=\"web\",pod_uid=\"u-1\",\
             probe_type=\"Liveness\",result=\"failed\"} 1\n"
        );
    }
}
