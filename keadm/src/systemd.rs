//! The systemd units keadm installs (`build/edgecore.service`, `build/cloudcore.service`,
//! compiled in) and `systemctl`, always run with an argv. With `--root` (not the running
//! host) units are enabled with `systemctl --root DIR enable`, which only makes the symlink, and
//! nothing is started.

use std::process::Command;

use crate::paths::Root;

/// `build/edgecore.service`.
pub const EDGECORE_UNIT: &str = include_str!("../../build/edgecore.service");
/// `build/cloudcore.service`.
pub const CLOUDCORE_UNIT: &str = include_str!("../../build/cloudcore.service");

/// A `systemctl` call that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// systemctl could not be run.
    #[error("running systemctl {args}: {source}")]
    Start {
        /// Its arguments.
        args: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// systemctl failed.
    #[error("systemctl {args} failed ({status}): {stderr}")]
    Failed {
        /// Its arguments.
        args: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
    },
}

/// systemctl for a root.
pub struct Systemctl<'a> {
    root: &'a Root,
}

impl<'a> Systemctl<'a> {
    /// systemctl on the running host, or offline in `--root`.
    pub fn new(root: &'a Root) -> Self {
        Self { root }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("systemctl");
        if !self.root.is_host() {
            c.arg("--root").arg(self.root.dir());
        }
        c.args(args);
        c
    }

    /// Runs `systemctl ARGS`; an error carries its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String, Error> {
        let out = self.command(args).output().map_err(|source| Error::Start { args: args.join(" "), source })?;
        if !out.status.success() {
            return Err(Error::Failed {
                args: args.join(" "),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether systemd is running on this host (and so can start units).
    pub fn available(&self) -> bool {
        self.root.is_host() && std::path::Path::new("/run/systemd/system").is_dir()
    }

    /// `systemctl is-active UNIT` (false when systemctl cannot say).
    pub fn is_active(&self, unit: &str) -> bool {
        self.available() && self.command(&["is-active", "--quiet", unit]).status().is_ok_and(|s| s.success())
    }

    /// Reloads units after one was written or removed (only on a running systemd).
    pub fn daemon_reload(&self) -> Result<(), Error> {
        if self.available() { self.run(&["daemon-reload"]).map(drop) } else { Ok(()) }
    }

    /// Enables `unit` and, on a running systemd, starts it.
    pub fn enable_now(&self, unit: &str) -> Result<(), Error> {
        if self.available() { self.run(&["enable", "--now", unit]) } else { self.run(&["enable", unit]) }.map(drop)
    }

    /// Disables `unit` and, on a running systemd, stops it (waiting for it to stop).
    pub fn disable_now(&self, unit: &str) -> Result<(), Error> {
        if self.available() { self.run(&["disable", "--now", unit]) } else { self.run(&["disable", unit]) }.map(drop)
    }
}
