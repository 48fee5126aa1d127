//! edgecore as a systemd service, for the commands that stop and start it: `systemctl` (argv,
//! through [`crate::systemd::Systemctl`]), the wait until EdgeHub is connected again, and
//! running a binary (`edgecore --version`, `ctr`) with a deadline and bounded output.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Error;
use crate::paths::Root;
use crate::systemd::Systemctl;

/// The unit.
pub const UNIT: &str = "edgecore.service";
/// The most output kept from a command.
const MAX_OUTPUT: u64 = 64 * 1024;

/// Fails unless systemd runs here and knows `edgecore.service`.
pub fn require_systemd() -> Result<(), Error> {
    if !Path::new("/run/systemd/system").is_dir() {
        return Err(Error::Failed(format!(
            "systemd is not running on this host (/run/systemd/system is missing): keadm stops and starts edgecore \
             through {UNIT}"
        )));
    }
    let state = property("LoadState")?;
    if state != "loaded" {
        return Err(Error::Failed(format!("{UNIT} is not installed (LoadState={state}); keadm join installs it")));
    }
    Ok(())
}

fn systemctl(args: &[&str]) -> Result<String, Error> {
    Ok(Systemctl::new(&Root::new(None)).run(args)?)
}

/// A property of `edgecore.service`.
pub fn property(name: &str) -> Result<String, Error> {
    Ok(systemctl(&["show", "-p", name, "--value", UNIT])?.trim().to_owned())
}

/// `systemctl stop edgecore.service` (waits until it stopped).
pub fn stop() -> Result<(), Error> {
    println!("[upgrade] Stopping {UNIT}.");
    systemctl(&["stop", UNIT]).map(drop)
}

/// `systemctl start edgecore.service`.
pub fn start() -> Result<(), Error> {
    println!("[upgrade] Starting {UNIT}.");
    systemctl(&["start", UNIT]).map(drop)
}

/// After `what` failed with edgecore stopped (or perhaps stopped: a failed stop): starts it
/// again, and says what failed and whether it runs. A command never leaves edgecore stopped
/// on purpose: a stopped edge cannot be reached to repair it.
pub fn start_after(what: impl std::fmt::Display) -> Error {
    Error::Failed(match start() {
        Ok(()) => format!("{what}; {UNIT} is started again"),
        Err(e) => format!("{what}; starting {UNIT} again failed too, so edgecore may be stopped: {e}"),
    })
}

/// `systemctl restart edgecore.service`.
pub fn restart() -> Result<(), Error> {
    println!("[upgrade] Restarting {UNIT}.");
    systemctl(&["restart", UNIT]).map(drop)
}

/// Waits up to `timeout` for `kubeedge_edgehub_connected 1` on `http://{monitor}/metrics`.
/// A service that exits meanwhile (systemd restarted it, or gave up) ends the wait at once.
pub fn wait_connected(monitor: &str, timeout: Duration) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    // Counted from here: a restart before this point was ours.
    let restarts = property("NRestarts").unwrap_or_default();
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer yet");
    rt.block_on(async {
        while Instant::now() < deadline {
            match crate::http::get(monitor, "/metrics").await {
                Ok((200, body)) if body.lines().any(|l| l.trim() == "kubeedge_edgehub_connected 1") => return Ok(()),
                Ok((200, _)) => last = "edgecore runs but EdgeHub is not connected".into(),
                Ok((code, _)) => last = format!("http://{monitor}/metrics answered {code}"),
                Err(e) => last = format!("http://{monitor}/metrics: {e}"),
            }
            let now = property("NRestarts").unwrap_or_default();
            let active = property("ActiveState").unwrap_or_default();
            if now != restarts || active == "failed" {
                let status = property("ExecMainStatus").unwrap_or_default();
                return Err(format!("edgecore exited (status {status}; {UNIT} is {active}, NRestarts={now})"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(format!("not connected within {} s ({last})", timeout.as_secs()))
    })
}

/// What a command printed, capped.
pub struct Output {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` (stdin closed), killing it after `timeout`; keeps at most [`MAX_OUTPUT`] of each
/// stream and drains the rest, so a chatty program neither blocks nor fills memory.
pub fn output(cmd: &mut Command, what: &str, timeout: Duration) -> Result<Output, Error> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Failed(format!("running {what}: {e}")))?;
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = (&mut r).take(MAX_OUTPUT).read_to_end(&mut buf);
                let _ = std::io::copy(&mut r, &mut std::io::sink());
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err = reader(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Failed(format!("{what} did not finish within {} s", timeout.as_secs())));
            }
            Err(e) => return Err(Error::Failed(format!("waiting for {what}: {e}"))),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(Output { status, stdout, stderr })
}

/// The version `binary --version` prints, as `vX.Y.Z` (ours prints `edgecore 0.1.0 (…)`,
/// upstream's `KubeEdge v1.23.0`): the first word that is a version by upstream's rule once a
/// missing `v` is added.
pub fn binary_version(binary: &Path) -> Result<String, Error> {
    let what = format!("{} --version", binary.display());
    let out = output(Command::new(binary).arg("--version"), &what, Duration::from_secs(15))?;
    if !out.status.success() {
        return Err(Error::Failed(format!("{what} failed ({}): {}", out.status, out.stderr.trim())));
    }
    parse_version(&out.stdout)
        .ok_or_else(|| Error::Failed(format!("{what} printed no version: {:?}", out.stdout.trim())))
}

fn parse_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .map(|w| if w.starts_with('v') { w.to_owned() } else { format!("v{w}") })
        .find(|w| kubeedge_apis::operations::task::check_version(w).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_ours_and_upstreams_output() {
        assert_eq!(
            parse_version("edgecore 0.1.0 (kubeedge-rs, wire-compatible with KubeEdge v1.23)").unwrap(),
            "v0.1.0"
        );
        assert_eq!(parse_version("KubeEdge v1.23.0\n").unwrap(), "v1.23.0");
        assert_eq!(parse_version("edgecore 1.97.0; rm -rf /"), None);
        assert_eq!(parse_version("nothing"), None);
    }

    #[test]
    fn output_is_bounded_in_time() {
        let e = output(Command::new("sleep").arg("5"), "sleep 5", Duration::from_millis(200)).err().unwrap();
        assert!(e.to_string().contains("sleep 5 did not finish"), "{e}");
        let o = output(Command::new("echo").arg("hi"), "echo", Duration::from_secs(5)).unwrap();
        assert_eq!(o.stdout, "hi\n");
    }
}
