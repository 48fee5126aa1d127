//! Several cloudcore replicas against one API server, behind haproxy, as upstream runs them
//! (its Helm chart's `cloudCore.replicaCount` behind a load balancer): the harness of the
//! multi-replica e2e test and of `bench-scale --replicas`.
//!
//! Each replica is its own process with its own config, ports and state folder; they share the
//! API server (and through it the CA, serving certificate and token Secrets and the
//! ObjectSyncs) and the CA files the harness signs its edges' certificates with. haproxy
//! (TCP mode, `balance leastconn`) fronts every replica's CloudHub WebSocket port
//! (frontend [`WS`]) and join port (frontend [`HTTPS`]); a replica takes connections once its
//! `/readyz` answers 200.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::haproxy::{Balance, Config, Frontend, Haproxy, Server};
use crate::link::{self, Cloud};
use crate::{Process, free_port, set_yaml_line, set_yaml_path};

/// haproxy's frontend for CloudHub's WebSocket ports.
pub const WS: &str = "cloudhub";
/// haproxy's frontend for CloudHub's join API ports.
pub const HTTPS: &str = "cloudhub-https";

/// Starts `apiserver-lite` (the binary `bin`) on a free port, its kubeconfig written to
/// `kubeconfig`, with `history` watch events kept per type.
pub fn apiserver_lite(bin: &Path, kubeconfig: &Path, history: usize) -> std::io::Result<Process> {
    let port = free_port();
    let out = kubeconfig.to_str().ok_or_else(|| std::io::Error::other("non-UTF-8 path"))?;
    let mut api = Process::spawn(
        bin,
        &["--listen", &format!("127.0.0.1:{port}"), "--history", &history.to_string(), "--kubeconfig-out", out],
    )?;
    let deadline = Instant::now() + crate::patience();
    while !std::fs::read_to_string(kubeconfig).is_ok_and(|k| k.contains("current-context")) {
        if Instant::now() > deadline || api.wait_exit(Duration::ZERO).is_some() {
            return Err(std::io::Error::other(format!("apiserver-lite wrote no kubeconfig; its log:\n{}", api.log())));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(api)
}

/// One cloudcore replica.
pub struct Replica {
    /// The process; `None` once killed.
    pub proc: Option<Process>,
    /// Its monitor server (`/metrics`, `/readyz`).
    pub monitor: SocketAddr,
    /// CloudHub's WebSocket port.
    pub ws_port: u16,
    /// CloudHub's join API port.
    pub https_port: u16,
    /// Its config file.
    pub config: PathBuf,
}

impl Replica {
    /// `KubeEdge_CloudHub_connected_nodes` now (`None` if it does not answer).
    pub fn connected_nodes(&self) -> Option<i64> {
        let (_, body) = crate::http_get(self.monitor, "/metrics").ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix("KubeEdge_CloudHub_connected_nodes "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Starts it again on its config (after [`Replica::kill`]) and waits until CloudHub
    /// listens; its ports (the monitor's too) are the same, so haproxy's checks find it again.
    pub fn restart(&mut self, bin: &Path) -> std::io::Result<()> {
        let arg = self.config.to_str().ok_or_else(|| std::io::Error::other("non-UTF-8 path"))?.to_owned();
        let mut proc = Process::spawn(bin, &["--config", &arg])?;
        self.monitor = proc.monitor_addr();
        proc.wait_for_line("CloudHub WebSocket server listening");
        self.proc = Some(proc);
        Ok(())
    }

    /// SIGKILLs it and waits for the exit.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal("KILL");
            let _ = p.wait_exit(crate::patience());
        }
    }
}

/// Several replicas and haproxy in front.
pub struct Replicas {
    /// The replicas, in start order.
    pub replicas: Vec<Replica>,
    /// The load balancer.
    pub lb: Haproxy,
}

/// What [`Replicas::start`] needs.
pub struct Spec<'a> {
    /// The cloudcore binary.
    pub bin: &'a Path,
    /// Replica `i` keeps its config and state in `{dir}/replica-{i}`.
    pub dir: &'a Path,
    /// The API server's kubeconfig.
    pub kubeconfig: &'a Path,
    /// How many replicas.
    pub count: usize,
    /// The cluster CA (PEM certificate and key) every replica loads (`tlsCAFile`,
    /// `tlsCAKeyFile`): the CA the harness signs its edges' certificates with.
    pub ca_pem: (&'a str, &'a str),
    /// cloudcore.yaml settings for every replica (`path` → YAML value).
    pub settings: &'a [(&'a [&'a str], String)],
    /// haproxy's `maxconn` (edges + slack).
    pub maxconn: usize,
}

/// Starts the replicas (all at once) without a load balancer and waits until each listens.
pub fn start_replicas(spec: &Spec<'_>) -> std::io::Result<Vec<Replica>> {
    let mut starting = Vec::new();
    for i in 0..spec.count {
        let dir = spec.dir.join(format!("replica-{i}"));
        std::fs::create_dir_all(dir.join("cloud"))?;
        std::fs::write(dir.join("cloud/ca.crt"), spec.ca_pem.0)?;
        std::fs::write(dir.join("cloud/ca.key"), spec.ca_pem.1)?;
        let (ws_port, https_port) = (free_port(), free_port());
        let cloud = Cloud { kubeconfig: spec.kubeconfig, ip: "127.0.0.1", ws_port, https_port };
        let config = link::cloudcore(spec.bin, &dir, &cloud);
        // A monitor port of its own, kept across a restart: haproxy checks its `/readyz`.
        let monitor = format!("127.0.0.1:{}", free_port());
        let mut yaml = set_yaml_line(&std::fs::read_to_string(&config)?, "bindAddress", &monitor);
        for (path, value) in spec.settings {
            yaml = set_yaml_path(&yaml, path, value);
        }
        std::fs::write(&config, yaml)?;
        let arg = config.to_str().ok_or_else(|| std::io::Error::other("non-UTF-8 path"))?.to_owned();
        let proc = Process::spawn(spec.bin, &["--config", &arg])?;
        starting.push((proc, ws_port, https_port, config));
    }
    let mut replicas = Vec::new();
    for (mut proc, ws_port, https_port, config) in starting {
        let monitor = proc.monitor_addr();
        proc.wait_for_line("CloudHub WebSocket server listening");
        replicas.push(Replica { proc: Some(proc), monitor, ws_port, https_port, config });
    }
    Ok(replicas)
}

impl Replicas {
    /// Starts the replicas (all at once), waits until each listens, then starts haproxy.
    pub fn start(spec: &Spec<'_>) -> std::io::Result<Self> {
        let replicas = start_replicas(spec)?;
        let frontend = |name: &str, port: fn(&Replica) -> u16| Frontend {
            name: name.to_owned(),
            servers: replicas
                .iter()
                .map(|r| Server {
                    addr: SocketAddr::from(([127, 0, 0, 1], port(r))),
                    ready_port: Some(r.monitor.port()),
                })
                .collect(),
        };
        let lb = Haproxy::start(&Config {
            frontends: vec![frontend(WS, |r| r.ws_port), frontend(HTTPS, |r| r.https_port)],
            balance: Balance::LeastConn,
            maxconn: spec.maxconn,
        })?;
        Ok(Self { replicas, lb })
    }

    /// Where edges connect: haproxy's WebSocket frontend, `host:port`.
    pub fn ws_server(&self) -> String {
        self.lb.addr(WS).to_string()
    }

    /// Each replica's `KubeEdge_CloudHub_connected_nodes` (0 for a dead one).
    pub fn connected(&self) -> Vec<i64> {
        self.replicas.iter().map(|r| if r.proc.is_some() { r.connected_nodes().unwrap_or(0) } else { 0 }).collect()
    }
}
