//! Liveness, readiness and startup probes, as kubelet runs them: `exec` (through CRI
//! ExecSync), `httpGet` (HTTP/1.1 GET, 200–399 is success) and `tcpSocket` (a connection
//! opens), each with `initialDelaySeconds`, `periodSeconds`, `timeoutSeconds`,
//! `successThreshold` and `failureThreshold`.
//!
//! A liveness probe that fails `failureThreshold` times in a row gets its container stopped,
//! and the restart policy restarts it (so `restartCount` goes up); readiness decides the
//! container's `ready` and the pod's Ready condition; until a startup probe has succeeded the
//! other two are not run.
//!
//! Every probe run is counted as kubelet's `prober_probe_total` counts it (by container, probe
//! type and result), for the kubelet server's `/metrics/probes`. The counts of a pod belong to
//! its [`Prober`], that is to its worker: the prober is their only writer, and a
//! [`ProbeMetrics`] registry only holds weak references for the server to read, so a pod's
//! counters are gone as soon as its worker ends (the pod was deleted).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kubeedge_cri::Cri;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// gRPC's `DeadlineExceeded` status code (an ExecSync that timed out).
const GRPC_DEADLINE_EXCEEDED: i32 = 4;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// startupProbe.
    Startup,
    /// livenessProbe.
    Liveness,
    /// readinessProbe.
    Readiness,
}

impl Kind {
    /// The `probe_type` label kubelet gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// What one probe run gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// The check passed.
    Success,
    /// The check failed (non-zero exit, refused connection, a status ≥ 400, a timeout).
    Failure,
    /// The check could not be run (the runtime's error, a named port the container lacks);
    /// it counts as a failure towards the thresholds.
    Unknown,
}

impl Outcome {
    /// The `result` label kubelet gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "successful",
            Outcome::Failure => "failed",
            Outcome::Unknown => "unknown",
        }
    }
}

// === metrics ===

/// One pod's probe counts, written by its prober alone.
#[derive(Debug)]
struct PodCounts {
    namespace: String,
    pod: String,
    uid: String,
    /// (container, probe, outcome) → runs. A lock only because the server reads it; each
    /// critical section is one map operation.
    counts: Mutex<BTreeMap<(String, Kind, Outcome), u64>>,
}

/// One sample of `prober_probe_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeCount {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's UID.
    pub uid: String,
    /// The container's name.
    pub container: String,
    /// Which probe.
    pub kind: Kind,
    /// The result counted.
    pub outcome: Outcome,
    /// How many runs gave it.
    pub count: u64,
}

/// Where the kubelet server reads the probe counts of the pods that have probe workers. Cheap
/// to clone. It owns none of them: each pod's prober registers its counts at its first check,
/// and they disappear with the prober.
#[derive(Debug, Clone, Default)]
pub struct ProbeMetrics {
    pods: Arc<Mutex<Vec<Weak<PodCounts>>>>,
}

impl ProbeMetrics {
    fn register(&self, pod: &Pod) -> Arc<PodCounts> {
        let counts = Arc::new(PodCounts {
            namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            pod: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            counts: Mutex::new(BTreeMap::new()),
        });
        let mut pods = self.pods.lock();
        // Pods that went are pruned here, so the list is as long as the live pods with probes.
        pods.retain(|w| w.strong_count() > 0);
        pods.push(Arc::downgrade(&counts));
        counts
    }

    /// Every live count, ordered by its labels as Prometheus prints them (container,
    /// namespace, pod, pod_uid, probe_type, result); counts under the same labels (a pod
    /// briefly with two workers) are summed.
    pub fn snapshot(&self) -> Vec<ProbeCount> {
        let live: Vec<Arc<PodCounts>> = self.pods.lock().iter().filter_map(Weak::upgrade).collect();
        let mut merged: BTreeMap<(String, String, String, String, &str, &str), ProbeCount> = BTreeMap::new();
        for p in &live {
            for ((container, kind, outcome), n) in p.counts.lock().iter() {
                let key = (
                    container.clone(),
                    p.namespace.clone(),
                    p.pod.clone(),
                    p.uid.clone(),
                    kind.as_str(),
                    outcome.as_str(),
                );
                merged
                    .entry(key)
                    .or_insert_with(|| ProbeCount {
                        namespace: p.namespace.clone(),
                        pod: p.pod.clone(),
                        uid: p.uid.clone(),
                        container: container.clone(),
                        kind: *kind,
                        outcome: *outcome,
                        count: 0,
                    })
                    .count += n;
            }
        }
        merged.into_values().collect()
    }
}

// === probes ===

#[derive(Debug, Default)]
struct Track {
    container_id: String,
    started: Option<Instant>,
    last_run: Option<Instant>,
    successes: i32,
    failures: i32,
    passed: bool,
}

/// The probes' state for the containers of one pod (by container and probe), owned by the
/// pod's worker.
#[derive(Debug, Default)]
pub struct Prober {
    tracks: HashMap<(String, Kind), Track>,
    /// Where this pod's counts are published.
    metrics: ProbeMetrics,
    /// This pod's counts, registered with `metrics` at the first check.
    counts: Option<Arc<PodCounts>>,
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

fn outcome(passed: bool) -> Outcome {
    if passed { Outcome::Success } else { Outcome::Failure }
}

async fn run_once(
    cri: &Cri,
    probe: &Probe,
    c: &k8s_openapi::api::core::v1::Container,
    container_id: &str,
    ip: &str,
) -> Outcome {
    let timeout = Duration::from_secs(u64::try_from(probe.timeout_seconds.unwrap_or(1).max(1)).unwrap_or(1));
    if let Some(e) = &probe.exec {
        let cmd = e.command.clone().unwrap_or_default();
        return match cri.exec_sync(container_id, cmd, timeout).await {
            Ok(r) => outcome(r.exit_code == 0),
            // As kubelet: a command that timed out failed; other runtime errors say nothing.
            Err(e) if e.code().map(i32::from) == Some(GRPC_DEADLINE_EXCEEDED) => Outcome::Failure,
            Err(_) => Outcome::Unknown,
        };
    }
    if let Some(h) = &probe.http_get {
        if port_of(&h.port, c).is_none() {
            return Outcome::Unknown;
        }
        return outcome(http_get(h, c, ip, timeout).await);
    }
    if let Some(t) = &probe.tcp_socket {
        let Some(port) = port_of(&t.port, c) else { return Outcome::Unknown };
        let host = t.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| ip.to_owned());
        return outcome(matches!(
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host.as_str(), port))).await,
            Ok(Ok(_))
        ));
    }
    // A probe with no handler (e.g. gRPC, not built): treated as passing, as if absent.
    Outcome::Success
}

/// An `httpGet` probe: HTTP/1.1 GET (HTTPS without verifying the certificate, as kubelet),
/// 200–399 within `timeout` is success.
pub async fn http_get(
    h: &k8s_openapi::api::core::v1::HTTPGetAction,
    c: &k8s_openapi::api::core::v1::Container,
    ip: &str,
    timeout: Duration,
) -> bool {
    let Some(port) = port_of(&h.port, c) else { return false };
    let host = h.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| ip.to_owned());
    let path = h.path.clone().unwrap_or_else(|| "/".into());
    let https = h.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
    let mut headers = String::new();
    for hd in h.http_headers.iter().flatten() {
        // Header names and values from the spec; CR/LF would split the request.
        if !hd.name.contains(['\r', '\n', ':']) && !hd.value.contains(['\r', '\n']) {
            headers.push_str(&format!("{}: {}\r\n", hd.name, hd.value));
        }
    }
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.ok()?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.30\r\n{headers}Connection: close\r\n\r\n"
        );
        let line = if https {
            // As kubelet: HTTPS probes do not verify the certificate.
            let cfg = kubeedge_pki::insecure_client_config().ok()?;
            let name = rustls::pki_types::ServerName::try_from(host.clone()).ok()?;
            let mut s = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(name, tcp).await.ok()?;
            exchange(&mut s, &req).await?
        } else {
            let mut s = tcp;
            exchange(&mut s, &req).await?
        };
        let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

/// Sends `req` and reads the start of the response (its status line).
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S, req: &str) -> Option<String> {
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 64];
    let n = s.read(&mut buf).await.ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

impl Prober {
    /// A prober whose counts `metrics` shows.
    pub fn new(metrics: ProbeMetrics) -> Self {
        Self { metrics, ..Self::default() }
    }

    /// Runs the probes that are due for container `name` (id `container_id`, running) of `pod`,
    /// reachable at `ip`, and says what they conclude. A prober serves one pod: the first
    /// `pod` it is given names its counts.
    pub async fn check(&mut self, cri: &Cri, pod: &Pod, name: &str, container_id: &str, ip: &str) -> Verdict {
        let Some(c) = pod.spec.as_ref().and_then(|s| s.containers.iter().find(|c| c.name == name)) else {
            return Verdict { ready: true, kill: false };
        };
        if self.counts.is_none() {
            self.counts = Some(self.metrics.register(pod));
        }
        let mut verdict = Verdict { ready: true, kill: false };
        let startup_ok = match &c.startup_probe {
            Some(p) => self.step(cri, (name.to_owned(), Kind::Startup), p, c, container_id, ip).await,
            None => Some(true),
        };
        if startup_ok != Some(true) {
            // Until the startup probe passes, nothing else runs and the container is not ready.
            verdict.ready = false;
            verdict.kill = startup_ok == Some(false);
            return verdict;
        }
        if let Some(p) = &c.liveness_probe
            && self.step(cri, (name.to_owned(), Kind::Liveness), p, c, container_id, ip).await == Some(false)
        {
            verdict.kill = true;
        }
        if let Some(p) = &c.readiness_probe {
            verdict.ready =
                self.step(cri, (name.to_owned(), Kind::Readiness), p, c, container_id, ip).await == Some(true);
        }
        verdict
    }

    /// One probe: `Some(true)` passed (threshold reached), `Some(false)` failed past its
    /// threshold, `None` undecided (initial delay, or between thresholds, not yet passed).
    async fn step(
        &mut self,
        cri: &Cri,
        key: (String, Kind),
        probe: &Probe,
        c: &k8s_openapi::api::core::v1::Container,
        container_id: &str,
        ip: &str,
    ) -> Option<bool> {
        let t = self.tracks.entry(key.clone()).or_default();
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
            let result = run_once(cri, probe, c, container_id, ip).await;
            if let Some(counts) = &self.counts {
                let (container, kind) = key;
                *counts.counts.lock().entry((container, kind, result)).or_default() += 1;
            }
            if result == Outcome::Success {
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
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{Container, HTTPGetAction};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Answers every connection with `status`, over TLS when `tls` is given.
    async fn server(status: u16, tls: Option<tokio_rustls::TlsAcceptor>) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let tls = tls.clone();
                tokio::spawn(async move {
                    let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                    let mut buf = [0u8; 1024];
                    match tls {
                        Some(acc) => {
                            let Ok(mut s) = acc.accept(tcp).await else { return };
                            let _ = s.read(&mut buf).await;
                            let _ = s.write_all(reply.as_bytes()).await;
                            let _ = s.shutdown().await;
                        }
                        None => {
                            let mut s = tcp;
                            let _ = s.read(&mut buf).await;
                            let _ = s.write_all(reply.as_bytes()).await;
                        }
                    }
                });
            }
        });
        port
    }

    fn action(port: u16, scheme: &str) -> HTTPGetAction {
        HTTPGetAction {
            port: IntOrString::Int(i32::from(port)),
            scheme: Some(scheme.into()),
            path: Some("/healthz".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_pods_counts_are_shown_while_its_prober_lives() {
        let metrics = ProbeMetrics::default();
        let pod = |name: &str| -> Pod {
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}")}}),
            )
            .unwrap()
        };
        let add = |c: &PodCounts, container: &str, kind, outcome| {
            *c.counts.lock().entry((container.to_owned(), kind, outcome)).or_default() += 1;
        };
        let web = metrics.register(&pod("web"));
        let db = metrics.register(&pod("db"));
        add(&web, "app", Kind::Readiness, Outcome::Success);
        add(&web, "app", Kind::Readiness, Outcome::Success);
        add(&web, "app", Kind::Liveness, Outcome::Unknown);
        add(&db, "app", Kind::Startup, Outcome::Failure);
        let seen = |m: &ProbeMetrics| -> Vec<(String, &'static str, &'static str, u64)> {
            m.snapshot().into_iter().map(|s| (s.pod, s.kind.as_str(), s.outcome.as_str(), s.count)).collect()
        };
        assert_eq!(
            seen(&metrics),
            [
                ("db".into(), "Startup", "failed", 1),
                ("web".into(), "Liveness", "unknown", 1),
                ("web".into(), "Readiness", "successful", 2),
            ],
            "ordered by labels: container, namespace, pod, pod_uid, probe_type, result"
        );
        // A second worker of the same pod (briefly, across a restart): one series.
        let again = metrics.register(&pod("web"));
        add(&again, "app", Kind::Readiness, Outcome::Success);
        assert!(seen(&metrics).contains(&("web".into(), "Readiness", "successful", 3)));
        drop((web, again));
        assert_eq!(seen(&metrics), [("db".into(), "Startup", "failed", 1)], "the deleted pod's series are gone");
        let _later = metrics.register(&pod("cache"));
        assert_eq!(metrics.pods.lock().len(), 2, "dead entries are pruned");
    }

    #[tokio::test]
    async fn http_get_probes_speak_http_and_https_without_verifying() {
        let ca = kubeedge_pki::Ca::generate().unwrap();
        let cert = ca.issue_server(&["127.0.0.1".parse().unwrap()], &[]).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert_der.clone().into()], kubeedge_pki::rustls_key(&cert.key_sec1))
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let c = Container::default();
        let t = Duration::from_secs(5);

        let ok = server(200, None).await;
        let bad = server(500, None).await;
        let tls_ok = server(204, Some(acceptor.clone())).await;
        let tls_bad = server(503, Some(acceptor)).await;
        assert!(http_get(&action(ok, "HTTP"), &c, "127.0.0.1", t).await);
        assert!(!http_get(&action(bad, "HTTP"), &c, "127.0.0.1", t).await);
        assert!(http_get(&action(tls_ok, "HTTPS"), &c, "127.0.0.1", t).await, "HTTPS, a certificate nobody trusts");
        assert!(!http_get(&action(tls_bad, "HTTPS"), &c, "127.0.0.1", t).await);
        // Plain HTTP to a TLS port fails, as it should.
        assert!(!http_get(&action(tls_ok, "HTTP"), &c, "127.0.0.1", Duration::from_secs(1)).await);
    }
}
