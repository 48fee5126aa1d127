//! Test harness for process-level tests: start a real daemon binary, learn the addresses it
//! bound from its log, talk HTTP to it, signal it and wait for its exit with a deadline.
//!
//! Synchronous on purpose: a test drives one child process, and std is enough.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long to wait for a daemon to log something before failing a test. Generous: tests
/// must not depend on the machine's speed. `KUBEEDGE_TEST_PATIENCE_SECS` overrides it.
pub fn patience() -> Duration {
    let secs = std::env::var("KUBEEDGE_TEST_PATIENCE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    Duration::from_secs(secs)
}

/// Polls `f` until it yields a value; panics naming `what` after [`patience`].
pub fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + patience();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `check` until it holds; panics naming `what` after [`patience`].
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    until(what, || check().then_some(()))
}

/// [`until`] for async checks, sleeping on tokio's clock.
pub async fn until_async<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + patience();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`eventually`] for async checks, sleeping on tokio's clock.
pub async fn eventually_async(what: &str, mut check: impl AsyncFnMut() -> bool) {
    until_async(what, async || check().await.then_some(())).await
}

/// A running daemon whose stderr is collected line by line.
pub struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Process {
    /// Starts `bin` with `args`, capturing stderr (where the daemons log).
    pub fn spawn(bin: &Path, args: &[&str]) -> std::io::Result<Self> {
        let mut child = Command::new(bin)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().ok_or_else(|| std::io::Error::other("no stderr"))?;
        Ok(Self { child, lines: pump(stderr), seen: Vec::new() })
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a log line containing `needle` and returns it; panics with the log so far
    /// after [`patience`].
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        self.wait_for_line_since(0, needle)
    }

    /// How many lines have been read so far: a mark for [`Process::wait_for_line_since`].
    pub fn mark(&mut self) -> usize {
        self.drain();
        self.seen.len()
    }

    /// Like [`Process::wait_for_line`], ignoring the first `mark` lines.
    pub fn wait_for_line_since(&mut self, mark: usize, needle: &str) -> String {
        if let Some(l) = self.seen.iter().skip(mark).find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + patience();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line.clone());
                    if hit {
                        return line;
                    }
                }
                Err(_) => panic!("no log line containing {needle:?}; log so far:\n{}", self.log()),
            }
        }
    }

    /// The monitor server's address, from its "Monitor server listening." line.
    pub fn monitor_addr(&mut self) -> SocketAddr {
        let line = self.wait_for_line("Monitor server listening");
        field(&line, "address").parse().unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"))
    }

    /// Sends a signal by name (`TERM`, `INT`…) with the system's `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name} {} failed", self.pid());
    }

    /// Waits for the exit, at most `deadline`; `None` if the process is still running.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.drain();
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything logged so far (after draining what is pending).
    pub fn log(&mut self) -> String {
        self.drain();
        self.seen.join("\n")
    }

    fn drain(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pump(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The path of another workspace binary (`cloudcore`, `edgecore`, `apiserver-lite`), next to
/// the running test's target directory. `cargo test --workspace` builds every binary first;
/// a single-package run may need `cargo build -p NAME`.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/test-xxxx → target/debug/NAME
    let dir = exe.parent().and_then(|d| d.parent()).expect("target directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built; run `cargo build -p {name}` (or test the whole workspace)",
        path.display()
    );
    path
}

/// Says loudly that `test` is skipped because `why` (a tool or privilege this machine lacks),
/// or fails it when `KUBEEDGE_REQUIRE_TOOLS` is set (CI sets it: there, a missing tool is a
/// broken setup, not a reason for a green run).
pub fn skip(test: &str, why: &str) {
    if std::env::var_os("KUBEEDGE_REQUIRE_TOOLS").is_some_and(|v| !v.is_empty()) {
        panic!("{test} cannot run: {why} (KUBEEDGE_REQUIRE_TOOLS is set)");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// The workspace root, from this crate's manifest dir (`crates/testkit`).
pub fn workspace_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs a binary to completion and returns (exit status, stdout, stderr).
pub fn run(bin: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(bin).args(args).env_remove("RUST_LOG").stdin(Stdio::null()).output().expect("run binary");
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The value of `key=value` in a text log line (values end at whitespace).
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let pat = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(pat.as_str()))
        .map(|v| v.trim_matches('"'))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// A minimal HTTP/1.1 GET: returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, &[], b"").map(|(status, _, body)| (status, body))
}

/// A minimal HTTP/1.1 request with `headers` and `body`: returns (status, head, body).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(patience()))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.set_nodelay(true)?;
    // Head and body in one write (two small writes would wait on the peer's delayed ACK). A
    // server may answer (413) before taking the whole body: what it read is enough.
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    let _ = s.write_all(&out);
    let mut raw = Vec::new();
    let read = s.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = match split {
        Some(at) => (&raw[..at], &raw[at + 4..]),
        None => (&raw[..], &[][..]),
    };
    let head = String::from_utf8_lossy(head).into_owned();
    // A reset after the whole answer (a server closing on an unread body) is fine; one that
    // cut the answer short is an error.
    if let Err(e) = read {
        let declared = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok()).flatten()
        });
        let whole = split.is_some() && (declared.is_some_and(|n| body.len() >= n) || body.ends_with(b"0\r\n\r\n"));
        if !whole {
            return Err(e);
        }
    }
    let status = head
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {head:?}")))?;
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked { dechunk(body) } else { body.to_vec() };
    Ok((status, head, String::from_utf8_lossy(&body).into_owned()))
}

/// The payload of a chunked HTTP/1.1 body (bytes: a chunk may end inside a character).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&body[..eol]);
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else { break };
        let rest = &body[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        body = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// Sets a value at a path in a YAML document (creating mappings as needed), e.g.
/// `set_yaml_path(yaml, &["modules", "cloudHub", "enable"], "false")`; the value is parsed as
/// YAML.
pub fn set_yaml_path(yaml: &str, path: &[&str], value: &str) -> String {
    use yaml_serde::{Mapping, Value};
    let mut doc: Value = yaml_serde::from_str(yaml).expect("valid YAML");
    let new: Value = yaml_serde::from_str(value).expect("valid YAML value");
    let mut node = &mut doc;
    for (i, key) in path.iter().enumerate() {
        if !node.is_mapping() {
            *node = Value::Mapping(Mapping::new());
        }
        let map = node.as_mapping_mut().expect("mapping");
        if i == path.len() - 1 {
            map.insert(Value::from(*key), new);
            break;
        }
        node = map.entry(Value::from(*key)).or_insert_with(|| Value::Mapping(Mapping::new()));
    }
    yaml_serde::to_string(&doc).expect("serialisable")
}

/// Replaces the value of the first `key: …` line in a YAML text (for tweaking generated
/// configs in tests).
pub fn set_yaml_line(yaml: &str, key: &str, value: &str) -> String {
    let mut done = false;
    yaml.lines()
        .map(|l| {
            let trimmed = l.trim_start();
            if !done && trimmed.starts_with(&format!("{key}:")) {
                done = true;
                let indent = &l[..l.len() - trimmed.len()];
                format!("{indent}{key}: {value}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// A scratch directory under the system temp dir, removed on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// Creates a fresh directory.
    pub fn new() -> Self {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kubeedge-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub mod containerd;
pub mod haproxy;
pub mod netns;
pub mod nspawn;
mod ports;
pub use ports::free_port;
pub mod replicas;

/// Scenarios every daemon must pass, shared by the cloudcore and edgecore process tests.
pub mod daemon {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::{Process, http_get, run, set_yaml_line, set_yaml_path};

    /// The modules of daemon `name` that cannot run alone: they need the other side of the
    /// link or a Kubernetes API.
    pub fn peer_modules(name: &str) -> &'static [&'static str] {
        if name == "cloudcore" {
            &[
                "cloudHub",
                "edgeController",
                "deviceController",
                "syncController",
                "dynamicController",
                "cloudStream",
                // It would change the host's nat table.
                "iptablesManager",
            ]
        } else {
            // Edged needs a container runtime; EdgeStream, a CloudStream.
            &["edgeHub", "edged", "edgeStream"]
        }
    }

    /// Writes `{dir}/{name}.yaml`: the daemon's own `--defaultconfig` with the monitor server
    /// moved to an ephemeral loopback port and a short grace period.
    pub fn test_config(bin: &Path, dir: &Path, name: &str) -> PathBuf {
        let (status, yaml, err) = run(bin, &["--defaultconfig"]);
        assert!(status.success(), "--defaultconfig failed: {err}");
        let yaml = set_yaml_line(&yaml, "bindAddress", "127.0.0.1:0");
        let yaml = set_yaml_line(&yaml, "shutdownGracePeriod", "5");
        // The lifecycle tests run the daemon alone: modules that need a peer (the edge, the
        // cloud, a cluster) are switched off.
        let mut yaml = yaml;
        for module in peer_modules(name) {
            yaml = set_yaml_path(&yaml, &["modules", module, "enable"], "false");
        }
        if name == "edgecore" {
            yaml = set_yaml_path(
                &yaml,
                &["database", "dataSource"],
                &format!("\"{}\"", dir.join("edgecore.db").display()),
            );
            // DeviceTwin serves DMI: in the test's folder, never the host's /etc/kubeedge.
            yaml = set_yaml_path(&yaml, &["modules", "deviceTwin", "dmiSockPath"], &format!("\"{}\"", dir.display()));
        }
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).expect("write config");
        path
    }

    /// Starts the daemon on `config`, checks `/healthz`, `/readyz` and `/metrics`, sends
    /// `signal`, and expects exit 0 within the grace period (plus slack for a loaded machine).
    pub fn serves_and_stops_on(bin: &Path, config: &Path, daemon: &str, signal: &str) {
        let mut p = Process::spawn(bin, &["--config", config.to_str().expect("utf-8 path")]).expect("spawn");
        let addr = p.monitor_addr();
        p.wait_for_line("Started.");
        assert_eq!(http_get(addr, "/healthz").expect("healthz"), (200, "ok".to_owned()));
        assert_eq!(http_get(addr, "/readyz").expect("readyz").0, 200);
        let (code, body) = http_get(addr, "/metrics").expect("metrics");
        assert_eq!(code, 200);
        let info = format!("kubeedge_build_info{{daemon=\"{daemon}\",version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        for want in
            [info.as_str(), "process_resident_memory_bytes ", "process_open_fds ", "kubeedge_bus_pending_requests 0"]
        {
            assert!(body.contains(want), "missing {want:?} in /metrics:\n{body}");
        }
        p.signal(signal);
        let status = p.wait_exit(Duration::from_secs(5) + super::patience());
        let log = p.log();
        let status = status.unwrap_or_else(|| panic!("still running after SIG{signal}; log:\n{log}"));
        assert!(status.success(), "exit {status} after SIG{signal}; log:\n{log}");
        assert!(log.contains("Stopped."), "no clean stop in log:\n{log}");
    }

    /// What the shared daemon scenarios need to know about one daemon.
    pub struct Spec {
        /// The binary.
        pub bin: &'static str,
        /// `cloudcore` or `edgecore`.
        pub name: &'static str,
        /// Its config `apiVersion`.
        pub api_version: &'static str,
        /// Its default monitor address.
        pub monitor_default: &'static str,
        /// Its cloud–edge link module's config key (switched off when it runs alone).
        pub link_module: &'static str,
        /// A numeric key of the link module, for a wrong-type test.
        pub numeric_key: &'static str,
        /// A module of upstream's config that this build does not have (switched on in
        /// upstream's default config for the refusal test); empty when every one is built.
        pub unbuilt_module: &'static str,
        /// Upstream's default config (fixture).
        pub upstream_config: PathBuf,
    }

    impl Spec {
        fn path(&self) -> &Path {
            Path::new(self.bin)
        }

        /// Starts on its own default config, serves, and stops on `signal`.
        pub fn serves_and_stops(&self, signal: &str) {
            let dir = tempfile_dir();
            let cfg = test_config(self.path(), dir.path(), self.name);
            serves_and_stops_on(self.path(), &cfg, self.name, signal);
        }

        /// Several errors at once: every one is listed, exit 64.
        pub fn lists_every_config_error(&self) {
            let dir = tempfile_dir();
            let yaml = format!(
                "apiVersion: {}\nkind: Nonsense\ncommonConfig:\n  monitorServer:\n    bindAddress: not-an-address\n  logging:\n    format: xml\n",
                self.api_version
            );
            refuses_config(
                self.path(),
                dir.path(),
                &yaml,
                &["kind", "commonConfig.monitorServer.bindAddress", "commonConfig.logging.format"],
            );
        }

        /// Wrong types, broken YAML and empty files exit 64 naming the problem.
        pub fn refuses_wrong_types_and_broken_yaml(&self) {
            let dir = tempfile_dir();
            let yaml = format!("modules:\n  {}:\n    {}: lots\n", self.link_module, self.numeric_key);
            refuses_config(self.path(), dir.path(), &yaml, &[self.numeric_key]);
            refuses_config(self.path(), dir.path(), "modules: [\n", &["invalid config"]);
            refuses_config(self.path(), dir.path(), "", &["empty"]);
        }

        /// Upstream's own default config, with a module this build does not have switched on.
        pub fn refuses_unbuilt_modules_by_name(&self) {
            let dir = tempfile_dir();
            let upstream = std::fs::read_to_string(&self.upstream_config).expect("upstream config fixture");
            let upstream = set_yaml_path(&upstream, &["modules", self.unbuilt_module, "enable"], "true");
            refuses_config(
                self.path(),
                dir.path(),
                &upstream,
                &[self.unbuilt_module, "not available in this build yet"],
            );
        }

        /// `--version`, `--defaultconfig`, and a `--minconfig` that starts.
        pub fn version_defaultconfig_and_minconfig(&self) {
            let (status, out, _) = run(self.path(), &["--version"]);
            assert!(status.success());
            assert!(out.starts_with(&format!("{} {}", self.name, env!("CARGO_PKG_VERSION"))), "{out}");
            let (status, out, _) = run(self.path(), &["--defaultconfig"]);
            assert!(status.success());
            assert!(out.contains(&format!("apiVersion: {}", self.api_version)), "{out}");
            assert!(out.contains(&format!("bindAddress: {}", self.monitor_default)), "{out}");
            let dir = tempfile_dir();
            let (status, min, _) = run(self.path(), &["--minconfig"]);
            assert!(status.success());
            let min = set_yaml_line(&min, "bindAddress", "127.0.0.1:0");
            // Alone here, the modules that need a peer run without it.
            let mut min = min;
            for module in peer_modules(self.name) {
                min = set_yaml_path(&min, &["modules", module, "enable"], "false");
            }
            if self.name == "edgecore" {
                let db = format!("\"{}\"", dir.path().join("edgecore.db").display());
                min = set_yaml_path(&min, &["database", "dataSource"], &db);
            }
            let path = dir.path().join("min.yaml");
            std::fs::write(&path, min).expect("write config");
            serves_and_stops_on(self.path(), &path, self.name, "TERM");
        }
    }

    /// A scratch directory removed on drop.
    fn tempfile_dir() -> super::TempDir {
        super::TempDir::new()
    }

    /// Starts the daemon on the config `yaml` makes for a port this test holds: it must exit 1
    /// at start, naming the address and `field`, not keep restarting a module.
    pub fn refuses_a_taken_port(bin: &Path, dir: &Path, yaml: impl Fn(u16) -> String, field: &str) {
        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = held.local_addr().expect("addr");
        let path = dir.join("taken.yaml");
        std::fs::write(&path, yaml(addr.port())).expect("write config");
        let mut p = crate::Process::spawn(bin, &["--config", path.to_str().expect("utf-8 path")]).expect("spawn");
        let status = p.wait_exit(crate::patience());
        let log = p.log();
        assert_eq!(status.and_then(|s| s.code()), Some(1), "the daemon must exit 1 at once:\n{log}");
        assert!(log.contains(&addr.to_string()) && log.contains(field), "the error names {addr} and {field}:\n{log}");
        drop(held);
    }

    /// Runs the daemon on a config text and expects exit 64 with every `expected` fragment in
    /// its stderr.
    pub fn refuses_config(bin: &Path, dir: &Path, yaml: &str, expected: &[&str]) {
        let path = dir.join("bad.yaml");
        std::fs::write(&path, yaml).expect("write config");
        let (status, _, err) = run(bin, &["--config", path.to_str().expect("utf-8 path")]);
        assert_eq!(status.code(), Some(64), "stderr: {err}");
        for e in expected {
            assert!(err.contains(e), "missing {e:?} in stderr:\n{err}");
        }
    }
}

/// Config files for a cloudcore and an edgecore that talk to each other, made from the
/// daemons' own `--defaultconfig` with only the addresses, ports and files changed.
pub mod link {
    use std::path::{Path, PathBuf};

    use super::{run, set_yaml_line, set_yaml_path};

    /// Where a cloudcore listens and what it uses.
    pub struct Cloud<'a> {
        /// The kubeconfig of the cluster.
        pub kubeconfig: &'a Path,
        /// The address CloudHub binds and advertises.
        pub ip: &'a str,
        /// The WebSocket port (upstream 10000).
        pub ws_port: u16,
        /// The join API port (upstream 10002).
        pub https_port: u16,
    }

    fn quoted(path: &Path) -> String {
        format!("\"{}\"", path.display())
    }

    fn write(bin: &Path, dir: &Path, file: &str, settings: &[(&[&str], String)]) -> PathBuf {
        let (status, yaml, err) = run(bin, &["--defaultconfig"]);
        assert!(status.success(), "--defaultconfig failed: {err}");
        let mut yaml = set_yaml_line(&yaml, "bindAddress", "127.0.0.1:0");
        for (path, value) in settings {
            yaml = set_yaml_path(&yaml, path, value);
        }
        let out = dir.join(file);
        std::fs::write(&out, yaml).expect("write config");
        out
    }

    /// Writes `{dir}/cloudcore.yaml`; the PKI files go under `{dir}/cloud/`.
    pub fn cloudcore(bin: &Path, dir: &Path, c: &Cloud<'_>) -> PathBuf {
        let settings: Vec<(&[&str], String)> = vec![
            (&["kubeAPIConfig", "kubeConfig"], quoted(c.kubeconfig)),
            (&["modules", "cloudHub", "advertiseAddress"], format!("[\"{}\"]", c.ip)),
            (&["modules", "cloudHub", "websocket", "address"], c.ip.to_owned()),
            (&["modules", "cloudHub", "websocket", "port"], c.ws_port.to_string()),
            (&["modules", "cloudHub", "https", "address"], c.ip.to_owned()),
            (&["modules", "cloudHub", "https", "port"], c.https_port.to_string()),
            (&["modules", "cloudHub", "tlsCAFile"], quoted(&dir.join("cloud/ca.crt"))),
            (&["modules", "cloudHub", "tlsCAKeyFile"], quoted(&dir.join("cloud/ca.key"))),
            (&["modules", "cloudHub", "tlsCertFile"], quoted(&dir.join("cloud/server.crt"))),
            (&["modules", "cloudHub", "tlsPrivateKeyFile"], quoted(&dir.join("cloud/server.key"))),
            (&["modules", "cloudHub", "unixsocket", "enable"], "false".to_owned()),
            // Streams listen on fixed default ports and the iptables manager changes the host's
            // nat table: tests that want them switch them on with their own ports (and in a
            // network namespace).
            (&["modules", "cloudStream", "enable"], "false".to_owned()),
            (&["modules", "iptablesManager", "enable"], "false".to_owned()),
        ];
        write(bin, dir, "cloudcore.yaml", &settings)
    }

    /// The files an edge keeps its credentials in, under `{dir}/edge/`.
    pub fn edge_cert_paths(dir: &Path) -> [PathBuf; 3] {
        [dir.join("edge/ca/rootCA.crt"), dir.join("edge/certs/server.crt"), dir.join("edge/certs/server.key")]
    }

    /// Writes `{dir}/edgecore.yaml` for node `node` joining `c` with `token`, plus `extra`
    /// settings (e.g. the heartbeat).
    pub fn edgecore(
        bin: &Path,
        dir: &Path,
        node: &str,
        token: &str,
        c: &Cloud<'_>,
        extra: &[(&[&str], String)],
    ) -> PathBuf {
        let [ca, cert, key] = edge_cert_paths(dir);
        let mut settings: Vec<(&[&str], String)> = vec![
            // Off unless `extra` switches it on (it needs a container runtime).
            (&["modules", "edged", "enable"], "false".to_owned()),
            (&["modules", "edgeStream", "enable"], "false".to_owned()),
            (&["modules", "edged", "hostnameOverride"], node.to_owned()),
            (&["modules", "edgeHub", "token"], format!("\"{token}\"")),
            (&["modules", "edgeHub", "httpServer"], format!("https://{}:{}", c.ip, c.https_port)),
            (&["modules", "edgeHub", "websocket", "server"], format!("{}:{}", c.ip, c.ws_port)),
            (&["modules", "edgeHub", "tlsCaFile"], quoted(&ca)),
            (&["modules", "edgeHub", "tlsCertFile"], quoted(&cert)),
            (&["modules", "edgeHub", "tlsPrivateKeyFile"], quoted(&key)),
            (&["database", "dataSource"], quoted(&dir.join("edge/edgecore.db"))),
            // DeviceTwin serves DMI: in the test's folder, never the host's /etc/kubeedge.
            (&["modules", "deviceTwin", "dmiSockPath"], quoted(&dir.join("edge"))),
        ];
        settings.extend(extra.iter().cloned());
        write(bin, dir, "edgecore.yaml", &settings)
    }
}

/// A private mosquitto on `port` (loopback, anonymous, no persistence), stopped on drop;
/// `None` when mosquitto is not installed (hack/install-deps.sh installs it).
pub struct Mosquitto(std::process::Child);

impl Mosquitto {
    /// Starts it with its config in `dir` and waits until it listens.
    pub fn start(dir: &Path, port: u16) -> Option<Self> {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")).ok()?;
        let child = std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let m = Self(child);
        until("mosquitto to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(drop));
        Some(m)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
