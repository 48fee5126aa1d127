//! Liveness, readiness and startup probes, as kubelet runs them: `exec` (through CRI
//! ExecSync), `httpGet` (HTTP/1.1 GET, 200–399 is success) and `tcpSocket` (a connection
//! opens), each with `initialDelaySeconds`, `periodSeconds`, `timeoutSeconds`,
//! `successThreshold` and `failureThreshold`.
//!
//! A liveness probe that fails `failureThreshold` times in a row gets its container stopped,
//! and the restart policy restarts it (so `restartCount` goes up); readiness decides the
//! container's `ready` and the pod's Ready condition; until a startup probe has succeeded the
//! other two are not run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kubeedge_cri::Cri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// startupProbe.
    Startup,
    /// livenessProbe.
    Liveness,
    /// readinessProbe.
    Readiness,
}

#[derive(Debug, Default)]
struct Track {
    container_id: String,
    started: Option<Instant>,
    last_run: Option<Instant>,
    successes: i32,
    failures: i32,
    passed: bool,
}

/// The probes' state for every container of every pod (`{uid}/{container}/{kind}`).
#[derive(Debug, Default)]
pub struct Prober {
    tracks: HashMap<(String, String, Kind), Track>,
}

/// What the probes concluded for one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Readiness (true without a readiness probe).
    pub ready: bool,
    /// The liveness probe failed past its threshold: restart the container.
    pub kill: bool,
}

fn port_of(p: &IntOrString, c: &k8s_openapi::api::core::v1::Container) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok()),
    }
}

async fn run_once(
    cri: &Cri,
    probe: &Probe,
    c: &k8s_openapi::api::core::v1::Container,
    container_id: &str,
    ip: &str,
) -> bool {
    let timeout = Duration::from_secs(u64::try_from(probe.timeout_seconds.unwrap_or(1).max(1)).unwrap_or(1));
    if let Some(e) = &probe.exec {
        let cmd = e.command.clone().unwrap_or_default();
        return matches!(cri.exec_sync(container_id, cmd, timeout).await, Ok(r) if r.exit_code == 0);
    }
    if let Some(h) = &probe.http_get {
        let Some(port) = port_of(&h.port, c) else { return false };
        let host = h.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| ip.to_owned());
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect((host.as_str(), port)).await.ok()?;
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.30\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.ok()?;
            let mut buf = vec![0u8; 64];
            let n = s.read(&mut buf).await.ok()?;
            let line = String::from_utf8_lossy(&buf[..n]).into_owned();
            let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some((200..400).contains(&code))
        };
        return matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)));
    }
    if let Some(t) = &probe.tcp_socket {
        let Some(port) = port_of(&t.port, c) else { return false };
        let host = t.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| ip.to_owned());
        return matches!(
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host.as_str(), port))).await,
            Ok(Ok(_))
        );
    }
    // A probe with no handler (e.g. gRPC, not built): treated as passing, as if absent.
    true
}

impl Prober {
    /// Runs the probes that are due for container `name` (id `container_id`, running) of `pod`,
    /// reachable at `ip`, and says what they conclude.
    pub async fn check(&mut self, cri: &Cri, pod: &Pod, name: &str, container_id: &str, ip: &str) -> Verdict {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let Some(c) = pod.spec.as_ref().and_then(|s| s.containers.iter().find(|c| c.name == name)) else {
            return Verdict { ready: true, kill: false };
        };
        let mut verdict = Verdict { ready: true, kill: false };
        let startup_ok = match &c.startup_probe {
            Some(p) => self.step(cri, (uid.clone(), name.to_owned(), Kind::Startup), p, c, container_id, ip).await,
            None => Some(true),
        };
        if startup_ok != Some(true) {
            // Until the startup probe passes, nothing else runs and the container is not ready.
            verdict.ready = false;
            verdict.kill = startup_ok == Some(false);
            return verdict;
        }
        if let Some(p) = &c.liveness_probe
            && self.step(cri, (uid.clone(), name.to_owned(), Kind::Liveness), p, c, container_id, ip).await
                == Some(false)
        {
            verdict.kill = true;
        }
        if let Some(p) = &c.readiness_probe {
            verdict.ready =
                self.step(cri, (uid.clone(), name.to_owned(), Kind::Readiness), p, c, container_id, ip).await
                    == Some(true);
        }
        verdict
    }

    /// One probe: `Some(true)` passed (threshold reached), `Some(false)` failed past its
    /// threshold, `None` undecided (initial delay, or between thresholds, not yet passed).
    async fn step(
        &mut self,
        cri: &Cri,
        key: (String, String, Kind),
        probe: &Probe,
        c: &k8s_openapi::api::core::v1::Container,
        container_id: &str,
        ip: &str,
    ) -> Option<bool> {
        let t = self.tracks.entry(key).or_default();
        if t.container_id != container_id {
            // A new container: its probes start over.
            *t = Track { container_id: container_id.to_owned(), started: Some(Instant::now()), ..Track::default() };
        }
        let now = Instant::now();
        let delay = Duration::from_secs(u64::try_from(probe.initial_delay_seconds.unwrap_or(0).max(0)).unwrap_or(0));
        if now < t.started.unwrap_or(now) + delay {
            return None;
        }
        let period = Duration::from_secs(u64::try_from(probe.period_seconds.unwrap_or(10).max(1)).unwrap_or(10));
        let due = t.last_run.is_none_or(|last| now >= last + period);
        if due {
            t.last_run = Some(now);
            if run_once(cri, probe, c, container_id, ip).await {
                t.successes += 1;
                t.failures = 0;
                if t.successes >= probe.success_threshold.unwrap_or(1).max(1) {
                    t.passed = true;
                }
            } else {
                t.failures += 1;
                t.successes = 0;
                if t.failures >= probe.failure_threshold.unwrap_or(3).max(1) {
                    t.passed = false;
                    t.failures = 0;
                    return Some(false);
                }
            }
        }
        if t.passed { Some(true) } else { None }
    }

    /// Forgets a pod's probes.
    pub fn forget(&mut self, uid: &str) {
        self.tracks.retain(|(u, _, _), _| u != uid);
    }
}
