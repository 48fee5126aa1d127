//! Two hosts on one machine for the stream tests and benches: apiserver-lite and cloudcore
//! (CloudStream and the iptables manager on, as in our defaults) in a "cloud" network
//! namespace, a private containerd and edgecore (Edged and EdgeStream) in an "edge" one;
//! kubectl runs on the cloud host. Needs root, iproute2, iptables and containerd.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kubeedge_testkit::containerd::PrivateContainerd;
use kubeedge_testkit::link::{self, Cloud};
use kubeedge_testkit::netns::{self, CLOUD_IP, EDGE_IP};
use kubeedge_testkit::{Process, workspace_bin};

/// The edge node.
pub const NODE: &str = "edge-s";

/// The hosts and their daemons. Fields drop in order: processes before containerd before the
/// namespaces.
pub struct Net {
    /// edgecore, in the edge namespace.
    pub edge: Process,
    /// cloudcore, in the cloud namespace.
    pub cloud: Process,
    /// apiserver-lite, in the cloud namespace.
    pub api: Process,
    /// containerd, in the edge namespace.
    pub ctrd: PrivateContainerd,
    /// kubectl's kubeconfig.
    pub kubeconfig: std::path::PathBuf,
    /// Configs, certificates, logs.
    pub dir: tempfile::TempDir,
    /// The namespaces.
    pub pair: netns::Pair,
}

fn q(p: &Path) -> String {
    format!("\"{}\"", p.display())
}

/// kubectl on the cloud host: (success, stdout, stderr).
fn kubectl_in(pair: &netns::Pair, kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let mut full = vec!["--kubeconfig", kubeconfig.to_str().unwrap()];
    full.extend_from_slice(args);
    pair.run(pair.cloud(), "kubectl", &full)
}

impl Net {
    /// Starts everything; returns once the edge's tunnel is connected.
    pub fn start() -> Self {
        let pair = netns::Pair::new().expect("network namespaces");
        let ctrd = PrivateContainerd::start_in(Some(pair.edge())).unwrap_or_else(|e| panic!("private containerd: {e}"));
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let kubeconfig = d.join("kubeconfig");
        let kc = kubeconfig.to_str().unwrap();
        let api_bin = workspace_bin("apiserver-lite");
        let mut api =
            pair.spawn(pair.cloud(), &api_bin, &["--listen", "127.0.0.1:6443", "--kubeconfig-out", kc]).unwrap();
        let deadline = Instant::now() + kubeedge_testkit::patience();
        while !std::fs::read_to_string(&kubeconfig).is_ok_and(|k| k.contains("current-context")) {
            assert!(Instant::now() < deadline, "apiserver-lite wrote no kubeconfig: {}", api.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        // Inside the namespaces the daemons' default ports are free.
        let cloud_link = Cloud { kubeconfig: &kubeconfig, ip: CLOUD_IP, ws_port: 10000, https_port: 10002 };
        let cloud_bin = workspace_bin("cloudcore");
        let cloud_cfg = link::cloudcore(&cloud_bin, d, &cloud_link);
        let yaml = std::fs::read_to_string(&cloud_cfg).unwrap();
        let yaml = kubeedge_testkit::set_yaml_path(&yaml, &["modules", "cloudStream", "enable"], "true");
        let yaml = kubeedge_testkit::set_yaml_path(&yaml, &["modules", "iptablesManager", "enable"], "true");
        std::fs::write(&cloud_cfg, yaml).unwrap();
        let mut cloud = pair.spawn(pair.cloud(), &cloud_bin, &["--config", cloud_cfg.to_str().unwrap()]).unwrap();
        cloud.wait_for_line("CloudStream listening.");
        cloud.wait_for_line("TUNNEL-PORT chain in sync.");

        let template = "go-template={{.data.tokendata | base64decode}}";
        let (ok, token, err) =
            kubectl_in(&pair, &kubeconfig, &["-n", "kubeedge", "get", "secret", "tokensecret", "-o", template]);
        assert!(ok && !token.is_empty(), "reading the token failed: {err}");
        let [ca, cert, key] = link::edge_cert_paths(d);
        std::fs::create_dir_all(d.join("edge/manifests")).unwrap();
        let settings: Vec<(&[&str], String)> = vec![
            (&["modules", "edged", "enable"], "true".into()),
            (&["modules", "edged", "nodeIP"], EDGE_IP.into()),
            (&["modules", "edged", "rootDirectory"], q(&d.join("edge/kubelet"))),
            (
                &["modules", "edged", "tailoredKubeletConfig", "containerRuntimeEndpoint"],
                format!("\"unix://{}\"", ctrd.socket().display()),
            ),
            (&["modules", "edged", "tailoredKubeletConfig", "podLogsDir"], q(&ctrd.pod_log_root())),
            (&["modules", "edged", "tailoredKubeletConfig", "staticPodPath"], q(&d.join("edge/manifests"))),
            (&["modules", "edgeStream", "enable"], "true".into()),
            (&["modules", "edgeStream", "server"], format!("{CLOUD_IP}:10004")),
            (&["modules", "edgeStream", "tlsTunnelCAFile"], q(&ca)),
            (&["modules", "edgeStream", "tlsTunnelCertFile"], q(&cert)),
            (&["modules", "edgeStream", "tlsTunnelPrivateKeyFile"], q(&key)),
        ];
        let edge_bin = workspace_bin("edgecore");
        let edge_cfg = link::edgecore(&edge_bin, d, NODE, token.trim(), &cloud_link, &settings);
        let mut edge = pair.spawn(pair.edge(), &edge_bin, &["--config", edge_cfg.to_str().unwrap()]).unwrap();
        edge.wait_for_line("Connected to CloudHub.");
        edge.wait_for_line("Tunnel to CloudStream connected.");
        // The iptables manager reads the record every 2 s.
        kubeedge_testkit::until("the DNAT of the tunnel port", || {
            let (ok, rules, _) = pair.run(pair.cloud(), "iptables", &["-t", "nat", "-S", "TUNNEL-PORT"]);
            (ok && rules.contains(&format!("--dport 10351 -j DNAT --to-destination {CLOUD_IP}:10003"))).then_some(())
        });
        Self { edge, cloud, api, ctrd, kubeconfig, dir, pair }
    }

    /// Stops edgecore (SIGTERM) and starts it again on the same config; returns once its
    /// tunnel is connected again.
    pub fn restart_edge(&mut self) {
        self.edge.signal("TERM");
        assert!(self.edge.wait_exit(kubeedge_testkit::patience()).is_some_and(|s| s.success()), "{}", self.edge.log());
        let cfg = self.dir.path().join("edgecore.yaml");
        let edge_bin = workspace_bin("edgecore");
        self.edge = self.pair.spawn(self.pair.edge(), &edge_bin, &["--config", cfg.to_str().unwrap()]).unwrap();
        self.edge.wait_for_line("Connected to CloudHub.");
        self.edge.wait_for_line("Tunnel to CloudStream connected.");
    }

    /// kubectl on the cloud host: (success, stdout, stderr).
    pub fn kubectl_raw(&self, args: &[&str]) -> (bool, String, String) {
        kubectl_in(&self.pair, &self.kubeconfig, args)
    }

    /// kubectl on the cloud host; panics with its stderr (and the daemons' logs) on failure.
    pub fn kubectl(&mut self, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl_raw(args);
        assert!(ok, "kubectl {args:?} failed: {err}\ncloudcore:\n{}\nedgecore:\n{}", self.cloud.log(), self.edge.log());
        out
    }

    /// kubectl on the cloud host, left running with its stdin and stdout piped.
    pub fn kubectl_spawn(&self, args: &[&str]) -> Running {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.pair.cloud(), "kubectl", "--kubeconfig", self.kubeconfig.to_str().unwrap()]);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl");
        let (tx, rx) = mpsc::channel();
        for out in
            [Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stderr.take().unwrap())]
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Running { child, lines: rx, seen: Vec::new() }
    }

    /// A gauge on a daemon's `/metrics`, read inside its namespace.
    pub fn gauge(&mut self, edge: bool, name: &str) -> i64 {
        let (ns, addr) = if edge {
            (self.pair.edge().to_owned(), self.edge.monitor_addr())
        } else {
            (self.pair.cloud().to_owned(), self.cloud.monitor_addr())
        };
        let (ok, body, err) =
            self.pair.run(&ns, "curl", &["-sS", "--max-time", "10", &format!("http://{addr}/metrics")]);
        assert!(ok, "{err}");
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
    }

    /// `kubectl apply` of a manifest.
    pub fn apply(&mut self, name: &str, yaml: &str) {
        let file = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        self.kubectl(&["apply", "-f", file.to_str().unwrap()]);
    }
}

/// A kubectl left running: its output lines (stdout and stderr), its stdin.
pub struct Running {
    /// The kubectl process.
    pub child: std::process::Child,
    lines: mpsc::Receiver<String>,
    /// Lines read so far.
    pub seen: Vec<String>,
}

impl Running {
    /// Waits for an output line containing `needle`.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + kubeedge_testkit::patience();
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("kubectl printed no {needle:?}; output:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Writes to kubectl's stdin.
    pub fn write(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for kubectl to exit by itself, at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Stops kubectl (SIGTERM) and waits for it.
    pub fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// Pod `web`: `app` (httpd on 8080 and a log line every 0.2 s), `echo` (cat on stdin), `once`
/// (exits 3 after a second, so it restarts).
pub fn pod_yaml(image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
spec:
  nodeName: {NODE}
  containers:
  - name: app
    image: {image}
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-web > /www/index.html && httpd -p 8080 -h /www && i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done"]
  - name: echo
    image: {image}
    imagePullPolicy: Never
    stdin: true
    command: ["cat"]
  - name: once
    image: {image}
    imagePullPolicy: Never
    command: ["sh", "-c", "echo run-of-once; sleep 1; exit 3"]
"#
    )
}
