//! A private containerd for tests that need a real container runtime (CRI v1 over a unix
//! socket): its own root, state, sockets and CNI config in a temp dir, so nothing touches
//! /var/lib/containerd or /run/containerd, and several instances can run side by side.
//!
//! The config follows the facts in the project's runtime notes: the sandbox image is the locally
//! built `localhost/pause:busybox` (there is no registry, so it is imported before any
//! RunPodSandbox), `restrict_oom_score_adj = true` (root here lacks CAP_SYS_RESOURCE), and CNI
//! plugins from Debian's containernetworking-plugins in `/usr/lib/cni`. The CNI conf dir holds
//! a bridge + host-local conflist (a private /24 per instance, first by name, so it is the one
//! CRI uses for pod networking; CRI brings up each pod's loopback itself) and a loopback-only
//! one; either makes CRI report NetworkReady.
//!
//! The images are built once per target dir by `hack/images.sh` (cached under
//! `target/kubeedge-images/`) and imported into each instance with `ctr`. Needs root and the
//! packages `hack/install-deps.sh` installs; [`unavailable`] says why a test must skip.
//!
//! Dropping the instance kills what is still running in it (tasks, then containerd, by PID),
//! removes leftover pod network namespaces, unmounts what is left under its dir, deletes its
//! bridge and removes the dir.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The CRI namespace in containerd (images must be imported there for CRI to see them).
pub const K8S_NAMESPACE: &str = "k8s.io";

/// The sandbox ("pause") image every instance is configured with.
pub const PAUSE_IMAGE: &str = "localhost/pause:busybox";

/// Why a private containerd cannot run here, or `None` when it can.
pub fn unavailable() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if uid.as_deref() != Some("0") {
        return Some("a private containerd needs root".into());
    }
    for tool in ["containerd", "ctr", "runc", "ip", "flock"] {
        let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output();
        if !found.is_ok_and(|o| o.status.success()) {
            return Some(format!("{tool} is missing (hack/install-deps.sh installs it)"));
        }
    }
    for file in ["/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback", "/bin/busybox"] {
        if !Path::new(file).is_file() {
            return Some(format!("{file} is missing (hack/install-deps.sh installs it)"));
        }
    }
    None
}

/// A containerd started for one test, stopped and cleaned up on drop.
pub struct PrivateContainerd {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    bridge: String,
    pod_cidr: String,
    busybox_image: String,
}

/// Why the private containerd could not be started. Messages say what failed and carry the
/// end of containerd's log where there is one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This host cannot run it (see [`unavailable`]).
    #[error("{0}")]
    Unavailable(String),
    /// A file or process operation failed (`what` says which).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// containerd exited while starting.
    #[error("containerd exited with {status}; log:\n{log}")]
    Exited {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its log.
        log: String,
    },
    /// containerd did not serve CRI within the test patience.
    #[error("containerd did not come up at {}; log:\n{log}", socket.display())]
    NotReady {
        /// The socket it should listen on.
        socket: PathBuf,
        /// The end of its log.
        log: String,
    },
    /// `hack/images.sh` failed.
    #[error("{} failed ({status}):\n{output}", script.display())]
    Images {
        /// The script.
        script: PathBuf,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its stdout then stderr.
        output: String,
    },
    /// The image build wrote no `BUSYBOX_IMAGE`.
    #[error("no BUSYBOX_IMAGE in {}", .0.display())]
    NoBusybox(PathBuf),
}

impl PrivateContainerd {
    /// Writes the config and CNI conflists, starts `containerd --config`, waits for its socket
    /// and imports the busybox and pause images (building them first if this target dir has
    /// none yet). Errors say what failed and carry containerd's log.
    pub fn start() -> Result<Self, Error> {
        Self::start_in(None)
    }

    /// As [`PrivateContainerd::start`], with containerd (and so its pods' bridge and its
    /// streaming server) inside network namespace `netns` (e.g. a [`crate::netns::Pair`]'s
    /// edge host), when given.
    pub fn start_in(netns: Option<&str>) -> Result<Self, Error> {
        if let Some(why) = unavailable() {
            return Err(Error::Unavailable(why));
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Short: the socket path must fit in sockaddr_un (108 bytes).
        let dir = std::env::temp_dir().join(format!("kecd-{pid}-{n}"));
        let _ = fs::remove_dir_all(&dir);
        for sub in ["cni", "cni-ipam", "pods"] {
            fs::create_dir_all(dir.join(sub))
                .map_err(|source| Error::Io { what: format!("creating {}", dir.display()), source })?;
        }
        // A /24 in 10.214.0.0/16 (the netns helpers use 10.213.0.0/24), different for each
        // instance of this process and, very likely, from other test processes'.
        let octet = (pid.wrapping_mul(7).wrapping_add(n)) % 250 + 1;
        let pod_cidr = format!("10.214.{octet}.0/24");
        let bridge = format!("kecri{}x{n}", pid % 100_000);
        let socket = dir.join("containerd.sock");

        write(&dir.join("config.toml"), &config(&dir))?;
        write(&dir.join("cni/10-bridge.conflist"), &bridge_conflist(&bridge, &pod_cidr, &dir.join("cni-ipam")))?;
        write(&dir.join("cni/99-loopback.conflist"), LOOPBACK_CONFLIST)?;

        let log = fs::File::create(dir.join("containerd.log"))
            .map_err(|source| Error::Io { what: "creating containerd.log".into(), source })?;
        let log2 = log.try_clone().map_err(|source| Error::Io { what: "containerd.log".into(), source })?;
        // `nsenter` execs containerd (the child's pid is containerd's own) and changes only
        // the network namespace: `ip netns exec` also remounts /sys, which hides the cgroup
        // mount runc needs.
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("containerd");
                c
            }
            None => Command::new("containerd"),
        };
        let child = command
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|source| Error::Io { what: "starting containerd".into(), source })?;
        // From here on, Drop cleans up whatever happens.
        let mut this = Self { child, dir, socket, bridge, pod_cidr, busybox_image: String::new() };
        this.wait_ready()?;
        this.busybox_image = this.import_images()?;
        Ok(this)
    }

    /// The CRI (and containerd API) socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The instance's scratch dir (config, logs, state); a test may put pod log dirs under
    /// [`PrivateContainerd::pod_log_root`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A dir for pod log directories (`PodSandboxConfig.log_directory`), inside the instance's
    /// dir.
    pub fn pod_log_root(&self) -> PathBuf {
        self.dir.join("pods")
    }

    /// The busybox image imported into the instance (`localhost/busybox:<busybox version>`).
    pub fn busybox_image(&self) -> &str {
        &self.busybox_image
    }

    /// The subnet pods on the bridge network get their IPs from.
    pub fn pod_cidr(&self) -> &str {
        &self.pod_cidr
    }

    /// The OS process id of containerd.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ctr --address {socket} --namespace k8s.io {args}`: its stdout; panics (with ctr's
    /// stderr) when it fails.
    pub fn ctr(&self, args: &[&str]) -> String {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", K8S_NAMESPACE])
            .args(args)
            .output()
            .expect("run ctr");
        assert!(out.status.success(), "ctr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// edgecore.yaml settings for an Edged on this containerd, its state under `dir/edge/` and
    /// its kubelet-style server on `kubelet_port` (for [`crate::link::edgecore`]'s `extra`).
    pub fn edged_settings(&self, dir: &Path, kubelet_port: u16) -> Vec<(&'static [&'static str], String)> {
        let q = |p: &Path| format!("\"{}\"", p.display());
        vec![
            (&["modules", "edged", "enable"], "true".into()),
            (&["modules", "edged", "nodeIP"], "127.0.0.1".into()),
            (&["modules", "edged", "rootDirectory"], q(&dir.join("edge/kubelet"))),
            (
                &["modules", "edged", "tailoredKubeletConfig", "containerRuntimeEndpoint"],
                format!("\"unix://{}\"", self.socket.display()),
            ),
            (&["modules", "edged", "tailoredKubeletConfig", "podLogsDir"], q(&self.pod_log_root())),
            (&["modules", "edged", "tailoredKubeletConfig", "readOnlyPort"], kubelet_port.to_string()),
        ]
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits until the socket accepts connections and the CRI plugin has started its services
    /// (its last start-up line), or containerd exits.
    fn wait_ready(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + crate::patience();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Exited { status, log: self.log_tail() });
            }
            if UnixStream::connect(&self.socket).is_ok() && self.log().contains("Start streaming server") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady { socket: self.socket.clone(), log: self.log_tail() });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Builds (once per target dir) and imports the images; returns the busybox image's name.
    fn import_images(&self) -> Result<String, Error> {
        let out = images_cache_dir();
        let script = crate::workspace_root().join("hack/images.sh");
        let res = Command::new("bash")
            .arg(&script)
            .arg("--out")
            .arg(&out)
            .arg("--address")
            .arg(&self.socket)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Io { what: format!("running {}", script.display()), source })?;
        if !res.status.success() {
            let output = format!("{}{}", String::from_utf8_lossy(&res.stdout), String::from_utf8_lossy(&res.stderr));
            return Err(Error::Images { script, status: res.status, output });
        }
        let env = fs::read_to_string(out.join("images.env"))
            .map_err(|source| Error::Io { what: "reading images.env".into(), source })?;
        env.lines()
            .find_map(|l| l.strip_prefix("BUSYBOX_IMAGE="))
            .map(str::to_owned)
            .ok_or_else(|| Error::NoBusybox(out.join("images.env")))
    }

    fn try_ctr(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", K8S_NAMESPACE])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Kills every task and collects the pod network namespaces, while containerd still runs.
    fn kill_tasks(&self) -> Vec<String> {
        let mut netns = Vec::new();
        let containers = self.try_ctr(&["containers", "ls", "-q"]).unwrap_or_default();
        for id in containers.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(info) = self.try_ctr(&["containers", "info", id]) {
                // The spec names the sandbox's netns: "path": "/var/run/netns/cni-<uuid>".
                for part in info.split('"').filter(|p| p.starts_with("/var/run/netns/cni-")) {
                    if !netns.iter().any(|n| n == part) {
                        netns.push(part.to_owned());
                    }
                }
            }
            let _ = self.try_ctr(&["tasks", "delete", "--force", id]);
        }
        netns
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        let netns = if matches!(self.child.try_wait(), Ok(None)) { self.kill_tasks() } else { Vec::new() };
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A shim exits on its own once its last task is deleted, but not at once: any left are
        // killed, and waited for (briefly), so none outlives the fixture.
        reap_shims(&self.dir);
        for path in netns {
            let _ = Command::new("umount").arg(&path).stderr(Stdio::null()).status();
            let _ = fs::remove_file(&path);
        }
        unmount_under(&self.dir);
        let _ = Command::new("ip").args(["link", "delete", &self.bridge]).stderr(Stdio::null()).status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Kills the shims of the containerd in `dir` (their command line names its socket there) and
/// waits up to 5 s for them to be gone.
fn reap_shims(dir: &Path) {
    let needle = dir.display().to_string();
    let shims = || -> Vec<String> {
        let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| {
                let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
                let cmd = fs::read(e.path().join("cmdline")).ok()?;
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                (cmd.contains("containerd-shim") && cmd.contains(&needle)).then(|| pid.to_string())
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left = shims();
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return;
        }
        let _ = Command::new("kill").arg("-9").args(&left).stderr(Stdio::null()).status();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Lazily unmounts every mount point under `dir`, deepest first (overlay rootfs and sandbox
/// shm mounts left by a test that did not remove its pods).
fn unmount_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return };
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<&str> =
        info.lines().filter_map(|l| l.split(' ').nth(4)).filter(|p| p.starts_with(&prefix)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(p).stderr(Stdio::null()).status();
    }
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    fs::write(path, text).map_err(|source| Error::Io { what: format!("writing {}", path.display()), source })
}

/// `<target dir>/kubeedge-images`: the running test is `<target>/<profile>/deps/<test>`, so the
/// cache follows `CARGO_TARGET_DIR` and is shared by every test of that target dir.
fn images_cache_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.ancestors()
        .nth(3)
        .map(|t| t.join("kubeedge-images"))
        .unwrap_or_else(|| crate::workspace_root().join("target/kubeedge-images"))
}

fn config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
"#
    )
}

const LOOPBACK_CONFLIST: &str = r#"{"cniVersion":"0.4.0","name":"lo-only","plugins":[{"type":"loopback"}]}
"#;

fn bridge_conflist(bridge: &str, cidr: &str, ipam_dir: &Path) -> String {
    format!(
        r#"{{
  "cniVersion": "0.4.0",
  "name": "{bridge}",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{bridge}",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {{
        "type": "host-local",
        "dataDir": "{}",
        "ranges": [[{{"subnet": "{cidr}"}}]]
      }}
    }}
  ]
}}
"#,
        ipam_dir.display()
    )
}
