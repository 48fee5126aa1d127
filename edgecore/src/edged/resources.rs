//! Container resources as kubelet turns them into Linux cgroup settings (CRI
//! `LinuxContainerResources`), and the pod's QoS class:
//!
//! - `cpu_shares` from the CPU request (the limit when there is no request), 1024 per CPU,
//!   at least 2;
//! - `cpu_quota` over a 100 ms `cpu_period` from the CPU limit, at least 1 ms;
//! - `memory_limit_in_bytes` from the memory limit;
//! - `oom_score_adj` by QoS: Guaranteed −997, BestEffort 1000, Burstable
//!   `1000 − 1000 × request / node memory`, kept within 3..=999.

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kubeedge_cri::v1;

/// kubelet's CFS period (100 ms, in µs).
pub const CPU_PERIOD: i64 = 100_000;
/// kubelet's smallest CFS quota (1 ms, in µs).
const MIN_QUOTA: i64 = 1_000;
/// kubelet's smallest cpu.shares.
const MIN_SHARES: i64 = 2;

/// Why a resource quantity does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not a decimal number (with an optional exponent).
    #[error("{0:?} is not a quantity")]
    Malformed(String),
    /// A number with a suffix the API does not know.
    #[error("{quantity:?} has an unknown suffix {suffix:?}")]
    UnknownSuffix {
        /// The whole quantity.
        quantity: String,
        /// The suffix.
        suffix: String,
    },
}

/// A container resource that does not parse, named as kubelet names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("container {container}: resources {resource}: {error}")]
pub struct ResourceError {
    /// The container's name.
    pub container: String,
    /// `cpu` or `memory`.
    pub resource: &'static str,
    /// What is wrong with the quantity.
    pub error: QuantityError,
}

/// A parsed quantity, or why it does not parse.
///
/// Accepts what the API accepts: a decimal number (`1`, `0.5`, `.25`), optionally with an
/// exponent (`1e3`) or one suffix: `n u m k M G T P E` (decimal) or `Ki Mi Gi Ti Pi Ei`
/// (binary).
pub fn parse_quantity(q: &str) -> Result<f64, QuantityError> {
    let malformed = || QuantityError::Malformed(q.to_owned());
    let s = q.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 || num[1..].contains(['+', '-']) {
        return Err(malformed());
    }
    let n: f64 = num.parse().map_err(|_| malformed())?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().map_err(|_| malformed())?;
            10f64.powi(exp)
        }
        _ => return Err(QuantityError::UnknownSuffix { quantity: q.to_owned(), suffix: suffix.to_owned() }),
    };
    Ok(n * factor)
}

/// CPU in millicores (rounded up, as the API's `MilliValue`).
fn milli_cpu(q: &Quantity) -> Result<i64, QuantityError> {
    #[allow(clippy::cast_possible_truncation)]
    Ok((parse_quantity(&q.0)? * 1000.0).ceil() as i64)
}

/// Bytes (rounded up).
fn bytes(q: &Quantity) -> Result<i64, QuantityError> {
    #[allow(clippy::cast_possible_truncation)]
    Ok(parse_quantity(&q.0)?.ceil() as i64)
}

/// A container's request and limit of `resource`; the request defaults to the limit, as the
/// API server defaults it.
fn request_limit(c: &Container, resource: &str) -> (Option<Quantity>, Option<Quantity>) {
    let r = c.resources.as_ref();
    let limit = r.and_then(|r| r.limits.as_ref()).and_then(|l| l.get(resource)).cloned();
    let request = r.and_then(|r| r.requests.as_ref()).and_then(|l| l.get(resource)).cloned().or_else(|| limit.clone());
    (request, limit)
}

/// A pod's QoS class, as kubelet computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// Every container has CPU and memory limits equal to its requests.
    Guaranteed,
    /// Some requests or limits, not Guaranteed.
    Burstable,
    /// No requests or limits at all.
    BestEffort,
}

impl Qos {
    /// The class's name in `status.qosClass`.
    pub fn as_str(self) -> &'static str {
        match self {
            Qos::Guaranteed => "Guaranteed",
            Qos::Burstable => "Burstable",
            Qos::BestEffort => "BestEffort",
        }
    }
}

/// The QoS class of `pod` (init containers included).
pub fn qos(pod: &Pod) -> Qos {
    let Some(spec) = pod.spec.as_ref() else { return Qos::BestEffort };
    let all: Vec<&Container> = spec.containers.iter().chain(spec.init_containers.iter().flatten()).collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        for res in ["cpu", "memory"] {
            let (req, lim) = request_limit(c, res);
            any |= req.is_some() || lim.is_some();
            let same = match (&req, &lim) {
                (Some(r), Some(l)) => parse_quantity(&r.0).ok() == parse_quantity(&l.0).ok(),
                _ => false,
            };
            guaranteed &= same;
        }
    }
    if !any {
        Qos::BestEffort
    } else if guaranteed {
        Qos::Guaranteed
    } else {
        Qos::Burstable
    }
}

/// The Linux resources of container `c` of `pod` on a node with `memory_capacity` bytes.
/// A quantity that does not parse is an error naming the container and resource.
pub fn linux_resources(
    pod: &Pod,
    c: &Container,
    memory_capacity: u64,
) -> Result<v1::LinuxContainerResources, ResourceError> {
    let named = |resource: &'static str| move |error| ResourceError { container: c.name.clone(), resource, error };
    let (cpu_req, cpu_lim) = request_limit(c, "cpu");
    let (mem_req, mem_lim) = request_limit(c, "memory");
    let req_milli = cpu_req.as_ref().map(milli_cpu).transpose().map_err(named("cpu"))?.unwrap_or(0);
    let shares = (req_milli * 1024 / 1000).max(MIN_SHARES);
    let (cpu_period, cpu_quota) = match cpu_lim.as_ref().map(milli_cpu).transpose().map_err(named("cpu"))? {
        Some(m) => (CPU_PERIOD, (m * CPU_PERIOD / 1000).max(MIN_QUOTA)),
        None => (0, 0),
    };
    let memory_limit = mem_lim.as_ref().map(bytes).transpose().map_err(named("memory"))?.unwrap_or(0);
    let mem_request = mem_req.as_ref().map(bytes).transpose().map_err(named("memory"))?.unwrap_or(0);
    let oom = match qos(pod) {
        Qos::Guaranteed => -997,
        Qos::BestEffort => 1000,
        Qos::Burstable => {
            let cap = i64::try_from(memory_capacity.max(1)).unwrap_or(i64::MAX);
            let adj = 1000 - (1000i128 * i128::from(mem_request) / i128::from(cap)) as i64;
            adj.clamp(3, 999)
        }
    };
    Ok(v1::LinuxContainerResources {
        cpu_period,
        cpu_quota,
        cpu_shares: shares,
        memory_limit_in_bytes: memory_limit,
        oom_score_adj: oom,
        ..Default::default()
    })
}

/// The host's memory in bytes (`MemTotal` of /proc/meminfo, read once).
pub fn memory_capacity() -> u64 {
    static CAP: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(resources: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "i", "resources": resources}]}}))
        .unwrap()
    }

    #[test]
    fn quantities_parse_like_the_api() {
        for (q, want) in [
            ("1", 1.0),
            ("250m", 0.25),
            ("0.5", 0.5),
            (".5", 0.5),
            ("128Mi", 134_217_728.0),
            ("1Gi", 1_073_741_824.0),
            ("1G", 1e9),
            ("1e3", 1000.0),
            ("2k", 2000.0),
        ] {
            assert!((parse_quantity(q).unwrap() - want).abs() < 1e-9, "{q}");
        }
        for bad in ["", "abc", "1.2.3", "5X", "1e", "--1", "."] {
            assert!(parse_quantity(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn resources_become_cgroup_settings_as_kubelet_computes_them() {
        let cap = 8 * 1024 * 1024 * 1024;
        // Guaranteed: requests = limits.
        let p = pod(json!({"limits": {"cpu": "500m", "memory": "256Mi"}}));
        let r = linux_resources(&p, &p.spec.as_ref().unwrap().containers[0], cap).unwrap();
        assert_eq!(qos(&p), Qos::Guaranteed);
        assert_eq!((r.cpu_shares, r.cpu_period, r.cpu_quota), (512, 100_000, 50_000));
        assert_eq!((r.memory_limit_in_bytes, r.oom_score_adj), (268_435_456, -997));
        // Burstable: a request only.
        let p = pod(json!({"requests": {"cpu": "100m", "memory": "1Gi"}}));
        let r = linux_resources(&p, &p.spec.as_ref().unwrap().containers[0], cap).unwrap();
        assert_eq!(qos(&p), Qos::Burstable);
        assert_eq!((r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes), (102, 0, 0));
        assert_eq!(r.oom_score_adj, 1000 - 125);
        // BestEffort.
        let p = pod(json!({}));
        let r = linux_resources(&p, &p.spec.as_ref().unwrap().containers[0], cap).unwrap();
        assert_eq!(qos(&p), Qos::BestEffort);
        assert_eq!((r.cpu_shares, r.oom_score_adj), (2, 1000));
        // Tiny limits are raised to kubelet's minimums.
        let p = pod(json!({"limits": {"cpu": "1m"}}));
        let r = linux_resources(&p, &p.spec.as_ref().unwrap().containers[0], cap).unwrap();
        assert_eq!((r.cpu_shares, r.cpu_quota), (2, 1_000));
        // A bad quantity names the container and resource.
        let p = pod(json!({"limits": {"memory": "lots"}}));
        let e = linux_resources(&p, &p.spec.as_ref().unwrap().containers[0], cap).unwrap_err();
        assert_eq!((e.container.as_str(), e.resource), ("c", "memory"));
        assert!(e.to_string().starts_with("container c: resources memory: \"lots\""), "{e}");
    }
}
