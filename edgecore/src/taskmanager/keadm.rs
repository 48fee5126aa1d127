//! Running keadm: always as an argv (never through a shell; CVE-2026-62371 and CVE-2026-62182
//! were shell strings built from job specs), either awaited (`keadm backup edge`) or started
//! outside edgecore's cgroup through `systemd-run` for the commands that stop or restart
//! edgecore (`upgrade`, `rollback`, `config-update`), whose result arrives through the report
//! file.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use super::Settings;

/// How long `systemd-run` may take to start a unit.
const SYSTEMD_RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a command's stderr a reason quotes.
const STDERR_QUOTE: usize = 512;

/// The `--connect-timeout` of `keadm upgrade edge` and `keadm config-update`: half the job's `timeoutSeconds` (the rest
/// is for the backup, the swap and a rollback), at least 30 s; 120 s without one.
pub fn connect_timeout(timeout_seconds: Option<u32>) -> u32 {
    timeout_seconds.map_or(120, |t| (t / 2).max(30))
}

/// `keadm upgrade edge --force --toVersion V [--image I] --connect-timeout N --config C`.
pub fn upgrade_args(s: &Settings, version: &str, image: &str, connect_timeout: u32) -> Vec<OsString> {
    let mut args: Vec<OsString> =
        vec!["upgrade".into(), "edge".into(), "--force".into(), "--toVersion".into(), version.into()];
    if !image.is_empty() {
        args.extend(["--image".into(), image.into()]);
    }
    args.extend(["--connect-timeout".into(), connect_timeout.to_string().into()]);
    with_config(s, args)
}

/// `keadm rollback edge --config C`.
pub fn rollback_args(s: &Settings) -> Vec<OsString> {
    with_config(s, vec!["rollback".into(), "edge".into()])
}

/// `keadm config-update --set k=v,… --connect-timeout N --config C`.
pub fn config_update_args(s: &Settings, set: &str, connect_timeout: u32) -> Vec<OsString> {
    let args = vec![
        "config-update".into(),
        "--set".into(),
        set.into(),
        "--connect-timeout".into(),
        connect_timeout.to_string().into(),
    ];
    with_config(s, args)
}

/// `keadm backup edge --config C`.
pub fn backup_args(s: &Settings) -> Vec<OsString> {
    with_config(s, vec!["backup".into(), "edge".into()])
}

fn with_config(s: &Settings, mut args: Vec<OsString>) -> Vec<OsString> {
    args.push("--config".into());
    args.push(s.config_path.clone().into_os_string());
    args
}

/// The argv handed to `systemd-run`: `--unit kubeedge-task-{job} --collect --quiet --
/// {keadm} {args…}`.
pub fn systemd_run_args(s: &Settings, job: &str, keadm_args: Vec<OsString>) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![
        "--unit".into(),
        format!("kubeedge-task-{job}").into(),
        "--collect".into(),
        "--quiet".into(),
        "--".into(),
        s.keadm.clone().into_os_string(),
    ];
    argv.extend(keadm_args);
    argv
}

/// Starts keadm outside edgecore's cgroup and returns once systemd has started it. When the
/// caller is dropped (edgecore stopping) `systemd-run` is left to finish: the unit it starts
/// is meant to outlive edgecore, and a launch half made must not become a launch unknown.
pub async fn launch_detached(s: &Settings, job: &str, keadm_args: Vec<OsString>) -> Result<(), String> {
    let systemd = tokio::fs::metadata(&s.systemd_dir).await.is_ok_and(|m| m.is_dir());
    if !systemd {
        return Err(format!(
            "systemd is not running on this node ({} is missing): keadm must run outside edgecore, as a transient \
             systemd unit, because it stops edgecore",
            s.systemd_dir.display()
        ));
    }
    // One keadm action runs at a time on a node: a report still on disk is stale (one whose
    // task was given up on) and must not be taken for this launch's.
    match tokio::fs::remove_file(&s.report_file).await {
        Ok(()) => {
            tracing::warn!(path = %s.report_file.display(), "Removed a stale keadm report before launching keadm.")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("removing the stale report {}: {e}", s.report_file.display())),
    }
    let mut cmd = tokio::process::Command::new(&s.systemd_run);
    cmd.args(systemd_run_args(s, job, keadm_args));
    let out = run(cmd, SYSTEMD_RUN_TIMEOUT, false).await.map_err(|e| format!("systemd-run: {e}"))?;
    if !out.status.success() {
        return Err(format!("systemd-run failed ({}): {}", out.status, quote(&out.stderr)));
    }
    Ok(())
}

/// Runs `keadm backup edge` and waits for it (at most `s.backup_timeout`); killed when the
/// caller is dropped (the task manager stopping).
pub async fn backup(s: &Settings) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(&s.keadm);
    cmd.args(backup_args(s));
    let out = run(cmd, s.backup_timeout, true).await.map_err(|e| format!("keadm backup failed, err: {e}"))?;
    if !out.status.success() {
        return Err(format!("keadm backup failed, err: {}: {}", out.status, quote(&out.stderr)));
    }
    Ok(())
}

/// Runs `cmd` with no stdin, its output captured. Killed when it outlives `timeout`, and, if
/// `kill_on_drop`, when the returned future is dropped (otherwise it runs on, unwatched).
async fn run(
    mut cmd: tokio::process::Command,
    timeout: Duration,
    kill_on_drop: bool,
) -> Result<std::process::Output, String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(kill_on_drop);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {:?}: {e}", cmd.as_std().get_program()))?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let output = async {
        let (stdout, stderr) = tokio::join!(read_all(stdout), read_all(stderr));
        let status = child.wait().await?;
        Ok::<_, std::io::Error>(std::process::Output { status, stdout: stdout?, stderr: stderr? })
    };
    let finished = tokio::time::timeout(timeout, output).await;
    match finished {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => {
            let _ = child.start_kill();
            Err(format!("did not finish within {}s", timeout.as_secs()))
        }
    }
}

async fn read_all(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(mut pipe) = pipe {
        tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut buf).await?;
    }
    Ok(buf)
}

/// The last line of a command's stderr, shortened.
fn quote(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let mut end = line.len().min(STDERR_QUOTE);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::new("edge-1", "/opt/keadm", "/etc/kubeedge/config/edgecore.yaml", None)
    }

    #[test]
    fn argv_keeps_every_value_one_element() {
        let s = settings();
        let args = upgrade_args(&s, "v1.21.0", "kubeedge/installation-package", connect_timeout(Some(600)));
        let want = [
            "upgrade",
            "edge",
            "--force",
            "--toVersion",
            "v1.21.0",
            "--image",
            "kubeedge/installation-package",
            "--connect-timeout",
            "300",
            "--config",
            "/etc/kubeedge/config/edgecore.yaml",
        ];
        assert_eq!(args, want.map(OsString::from));
        assert!(!upgrade_args(&s, "v1.21.0", "", 120).contains(&OsString::from("--image")));
        let set = "a.b=x; touch /tmp/pwned $(id)";
        assert_eq!(config_update_args(&s, set, 120)[2], OsString::from(set));
        let run = systemd_run_args(&s, "job-1", rollback_args(&s));
        assert_eq!(
            run[..6],
            ["--unit", "kubeedge-task-job-1", "--collect", "--quiet", "--", "/opt/keadm"].map(OsString::from)
        );
        assert_eq!(run[6..8], ["rollback", "edge"].map(OsString::from));
        assert_eq!(connect_timeout(None), 120);
        assert_eq!(connect_timeout(Some(20)), 30);
    }

    #[tokio::test]
    async fn without_systemd_the_launch_fails_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings();
        s.systemd_dir = dir.path().join("no-systemd");
        let e = launch_detached(&s, "j", rollback_args(&s)).await.unwrap_err();
        assert!(e.contains("systemd is not running"), "{e}");
    }

    #[test]
    fn stderr_is_quoted_by_its_last_line() {
        assert_eq!(
            quote(b"warming up\nError: the mutually exclusive command is being executed\n\n"),
            "Error: the mutually exclusive command is being executed"
        );
        assert_eq!(quote("é".repeat(600).as_bytes()).len(), 512);
    }
}
