//! Two network namespaces joined by a veth pair: a "cloud" host and an "edge" host on one
//! machine, with a link the test can cut silently (iptables DROP, so only keepalives notice)
//! and heal. Needs root, iproute2 and iptables (`hack/install-deps.sh` installs both).
//!
//! Processes are started inside a namespace with `ip netns exec`, which execs the program, so
//! the child's pid is the daemon's own and signals reach it. Dropping the pair deletes both
//! namespaces (and with them the veth ends and the rules).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::Process;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The cloud side's address on the link.
pub const CLOUD_IP: &str = "10.213.0.1";
/// The edge side's address on the link.
pub const EDGE_IP: &str = "10.213.0.2";

/// Why namespaces cannot be used here, or `None` when they can.
pub fn unavailable() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if uid.as_deref() != Some("0") {
        return Some("network namespace tests need root".into());
    }
    for tool in ["ip", "iptables"] {
        let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output();
        if !found.is_ok_and(|o| o.status.success()) {
            return Some(format!("{tool} is missing (hack/install-deps.sh installs it)"));
        }
    }
    None
}

/// A cloud namespace and an edge namespace with a veth link between them.
pub struct Pair {
    cloud: String,
    edge: String,
}

/// A command setting up or changing the namespaces that could not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command could not be started.
    #[error("{command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// The command exited unsuccessfully.
    #[error("{command} failed: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
}

fn sh(args: &[&str]) -> Result<(), Error> {
    let command = || args.join(" ");
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|source| Error::Spawn { command: command(), source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Failed { command: command(), stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned() })
    }
}

impl Pair {
    /// Creates the namespaces and the link (`10.213.0.1/24` cloud, `10.213.0.2/24` edge), with
    /// loopback up in both.
    pub fn new() -> Result<Self, Error> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}x{n}", std::process::id() % 100_000);
        let pair = Self { cloud: format!("kec{tag}"), edge: format!("kee{tag}") };
        let (vc, ve) = (format!("vc{tag}"), format!("ve{tag}"));
        sh(&["ip", "netns", "add", &pair.cloud])?;
        sh(&["ip", "netns", "add", &pair.edge])?;
        sh(&["ip", "link", "add", &vc, "type", "veth", "peer", "name", &ve])?;
        sh(&["ip", "link", "set", &vc, "netns", &pair.cloud])?;
        sh(&["ip", "link", "set", &ve, "netns", &pair.edge])?;
        for (ns, dev, ip) in [(&pair.cloud, &vc, CLOUD_IP), (&pair.edge, &ve, EDGE_IP)] {
            sh(&["ip", "-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev])?;
            sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    /// The cloud namespace's name.
    pub fn cloud(&self) -> &str {
        &self.cloud
    }

    /// The edge namespace's name.
    pub fn edge(&self) -> &str {
        &self.edge
    }

    /// Starts `bin` inside namespace `ns`.
    pub fn spawn(&self, ns: &str, bin: &Path, args: &[&str]) -> std::io::Result<Process> {
        let bin = bin.to_str().ok_or_else(|| std::io::Error::other("non-UTF-8 path"))?;
        let mut full = vec!["netns", "exec", ns, bin];
        full.extend_from_slice(args);
        Process::spawn(Path::new("ip"), &full)
    }

    /// Runs `bin` to completion inside `ns`: (success, stdout, stderr).
    pub fn run(&self, ns: &str, bin: &str, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("ip").args(["netns", "exec", ns, bin]).args(args).output();
        match out {
            Ok(o) => (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            ),
            Err(e) => (false, String::new(), e.to_string()),
        }
    }

    /// Cuts the link silently: the edge drops every packet to and from the cloud. Nothing is
    /// reset or refused, so only timeouts can tell.
    pub fn cut(&self) -> Result<(), Error> {
        sh(&["ip", "netns", "exec", &self.edge, "iptables", "-I", "INPUT", "-s", CLOUD_IP, "-j", "DROP"])?;
        sh(&["ip", "netns", "exec", &self.edge, "iptables", "-I", "OUTPUT", "-d", CLOUD_IP, "-j", "DROP"])
    }

    /// Heals the link cut by [`Pair::cut`].
    pub fn heal(&self) -> Result<(), Error> {
        sh(&["ip", "netns", "exec", &self.edge, "iptables", "-D", "INPUT", "-s", CLOUD_IP, "-j", "DROP"])?;
        sh(&["ip", "netns", "exec", &self.edge, "iptables", "-D", "OUTPUT", "-d", CLOUD_IP, "-j", "DROP"])
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.cloud]);
        let _ = sh(&["ip", "netns", "del", &self.edge]);
    }
}
