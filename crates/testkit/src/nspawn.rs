//! A real systemd for tests of units and installers: a container booted with
//! `systemd-nspawn -b -D / --volatile=yes` (the host's /usr read-only, a fresh tmpfs for / with
//! /etc and /var empty), sharing the host's network unless told otherwise, with the binds a test
//! asks for. It reaches `running` in well under a second; commands run inside it with
//! `nsenter` into its PID 1's namespaces (no machined on these hosts). Needs root and Debian's
//! `systemd-container`; [`unavailable`] says why a test must skip.
//!
//! Every unit is disabled at first boot by a preset (else the host's enabled services would
//! start inside). Stopping (or dropping) the machine powers it off with SIGTERM to nspawn,
//! which leaves no mount or process behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Why a container cannot be booted here, or `None` when it can.
pub fn unavailable() -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")) {
        return Some("systemd-nspawn needs root".into());
    }
    for tool in ["/usr/bin/systemd-nspawn", "/usr/bin/nsenter", "/lib/systemd/systemd"] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} is missing (hack/install-deps.sh installs systemd-container)"));
        }
    }
    None
}

/// A bind mount into the machine: the host path and where it appears inside.
#[derive(Debug, Clone)]
pub struct Bind {
    /// On the host.
    pub host: PathBuf,
    /// Inside the machine.
    pub inside: PathBuf,
    /// Read-only.
    pub read_only: bool,
}

impl Bind {
    /// `host` at the same path inside, read-only.
    pub fn ro(host: impl Into<PathBuf>) -> Self {
        let host = host.into();
        Self { inside: host.clone(), host, read_only: true }
    }

    /// `host` at `inside`, writable.
    pub fn rw(host: impl Into<PathBuf>, inside: impl Into<PathBuf>) -> Self {
        Self { host: host.into(), inside: inside.into(), read_only: false }
    }
}

/// Why the machine could not be booted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This host cannot run it (see [`unavailable`]).
    #[error("{0}")]
    Unavailable(String),
    /// Starting nspawn or writing its files failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// It did not boot in time.
    #[error("the machine did not boot ({what}); nspawn log:\n{log}")]
    Boot {
        /// What was awaited.
        what: &'static str,
        /// nspawn's output.
        log: String,
    },
}

/// A booted container; powered off on [`stop`](Machine::stop) or drop.
pub struct Machine {
    child: Child,
    leader: u32,
    dir: PathBuf,
}

impl Machine {
    /// Boots a machine with `binds`, sharing the host's network; returns once systemd says
    /// `running` (or `degraded`).
    pub fn boot(binds: &[Bind]) -> Result<Self, Error> {
        if let Some(why) = unavailable() {
            return Err(Error::Unavailable(why));
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ketest{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|source| Error::Io { what: "creating the machine dir", source })?;
        let preset = dir.join("disable-all.preset");
        fs::write(&preset, "disable *\n").map_err(|source| Error::Io { what: "writing the preset", source })?;
        let log =
            fs::File::create(dir.join("nspawn.log")).map_err(|source| Error::Io { what: "nspawn.log", source })?;
        let log2 = log.try_clone().map_err(|source| Error::Io { what: "nspawn.log", source })?;
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args(["-b", "-D", "/", "--volatile=yes", "-M", &name, "--register=no", "--keep-unit", "--console=passive"]);
        cmd.arg(format!("--bind-ro={}:/etc/systemd/system-preset/00-disable-all.preset", preset.display()));
        for b in binds {
            let flag = if b.read_only { "--bind-ro" } else { "--bind" };
            cmd.arg(format!("{flag}={}:{}", b.host.display(), b.inside.display()));
        }
        cmd.arg("systemd.firstboot=off");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|source| Error::Io { what: "starting systemd-nspawn", source })?;
        let mut this = Self { child, leader: 0, dir };
        let deadline = Instant::now() + crate::patience();
        // nspawn's first child may be a helper: wait for the one that is systemd.
        while this.leader == 0 {
            this.leader = children(this.child.id()).into_iter().find(|&p| comm(p) == "systemd").unwrap_or(0);
            this.check_alive(deadline, "systemd as PID 1")?;
        }
        while !this.exec(&["test", "-S", "/run/systemd/private"]).status.success() {
            this.check_alive(deadline, "systemd's private socket")?;
        }
        loop {
            let out = this.exec(&["systemctl", "is-system-running", "--wait"]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                return Ok(this);
            }
            this.check_alive(deadline, "is-system-running")?;
        }
    }

    fn check_alive(&mut self, deadline: Instant, what: &'static str) -> Result<(), Error> {
        if Instant::now() > deadline || self.child.try_wait().ok().flatten().is_some() {
            return Err(Error::Boot { what, log: self.log() });
        }
        thread::sleep(Duration::from_millis(20));
        Ok(())
    }

    /// The host PID of the machine's systemd.
    pub fn leader(&self) -> u32 {
        self.leader
    }

    /// Runs `argv` inside the machine (all its namespaces) and waits for it.
    pub fn exec(&self, argv: &[&str]) -> Output {
        let out = Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-a", "--"])
            .args(argv)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output();
        out.unwrap_or_else(|e| panic!("nsenter {argv:?}: {e}"))
    }

    /// `systemctl ARGS` inside; its trimmed stdout.
    pub fn systemctl(&self, args: &[&str]) -> String {
        let mut argv = vec!["systemctl"];
        argv.extend_from_slice(args);
        String::from_utf8_lossy(&self.exec(&argv).stdout).trim().to_owned()
    }

    /// A property of a unit (`systemctl show -p NAME --value UNIT`).
    pub fn property(&self, unit: &str, name: &str) -> String {
        self.systemctl(&["show", "-p", name, "--value", unit])
    }

    /// The journal of `unit` inside.
    pub fn journal(&self, unit: &str) -> String {
        let out = self.exec(&["journalctl", "-u", unit, "--no-pager", "-o", "cat"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// nspawn's own output (the console).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("nspawn.log")).unwrap_or_default()
    }

    /// Powers the machine off and waits for nspawn to exit.
    pub fn stop(mut self) {
        self.power_off();
    }

    fn power_off(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while self.child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.power_off();
    }
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_owned()
}

fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            // /proc/PID/stat: "pid (comm) state ppid …"; comm may hold spaces, so split after ')'.
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(parent)
        })
        .collect()
}
