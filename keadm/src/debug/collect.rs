//! `keadm debug collect`: everything a bug report about this edge node needs, in one
//! `edge_<timestamp>.tar.gz` (upstream's name and flags): system facts, edgecore.yaml, the
//! versions of keadm, edgecore and the runtime, the runtime's CRI info, edgecore.db's
//! integrity, row counts and a dump of its `meta` rows, and edgecore's log. Every text passes
//! through [`redact`](super::redact) first; `*.key` files are never read. A part that cannot be
//! collected is named in `errors.txt` inside the tarball instead of failing the whole.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use kubeedge_metastore::ReadOnly;

use super::redact;
use super::{Ctx, Error, read_capped};
use crate::ctl;

/// The most bytes taken from one file or command.
const MAX_PART: u64 = 16 * 1024 * 1024;
/// The most journal lines taken (`--detail`: more).
const JOURNAL_LINES: u32 = 5_000;
const JOURNAL_LINES_DETAIL: u32 = 50_000;
/// The most database rows dumped.
const MAX_ROWS: usize = 100_000;
/// How long a CRI call may take.
const CRI_TIMEOUT: Duration = Duration::from_secs(5);

/// `keadm debug collect` flags (upstream's).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the tarball goes.
    #[arg(short = 'o', long = "output-path", default_value = ".")]
    pub output_path: PathBuf,
    /// Also collect more logs, the process list, mounts and network settings.
    #[arg(short = 'd', long = "detail")]
    pub detail: bool,
    /// edgecore's log directory, used when journald has no edgecore unit.
    #[arg(short = 'l', long = "log-path", default_value = "/var/log/kubeedge")]
    pub log_path: PathBuf,
    /// edgecore.db (default: `database.dataSource` of edgecore.yaml).
    #[arg(long = "edgedb-path")]
    pub edgedb_path: Option<PathBuf>,
}

/// The files going into the tarball, all under one directory.
struct Bundle {
    dir: String,
    files: Vec<(String, Vec<u8>)>,
    errors: Vec<String>,
}

impl Bundle {
    /// Adds a text, redacted.
    fn text(&mut self, name: &str, text: &str) {
        self.files.push((format!("{}/{name}", self.dir), redact::text(text).into_bytes()));
    }

    /// Adds a file's (capped) text, redacted; `*.key` files are recorded as withheld.
    fn file(&mut self, name: &str, path: &Path) {
        if redact::is_key_file(path) {
            self.text(name, redact::REDACTED);
            return;
        }
        match read_capped(path, MAX_PART, true) {
            Ok(t) => self.text(name, &t),
            Err(e) => self.errors.push(format!("{name}: {}: {e}", path.display())),
        }
    }

    /// Adds a command's output (it not existing is an error entry, not a failure).
    fn command(&mut self, name: &str, argv: &[&str]) {
        match output(argv) {
            Ok(out) => self.text(name, &out),
            Err(e) => self.errors.push(format!("{name}: {}: {e}", argv.join(" "))),
        }
    }
}

/// Runs a command to its end (blocking, outside async) and returns its capped output.
fn output(argv: &[&str]) -> Result<String, String> {
    let (bin, args) = argv.split_first().ok_or("no command")?;
    let out = output_within(Command::new(bin).args(args), COMMAND_DEADLINE)?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut cut = usize::try_from(MAX_PART).unwrap_or(usize::MAX).min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    if !out.status.success() {
        return Err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(text)
}

/// How long one command of the bundle (`df`, `journalctl`, …) may run: a hung NFS mount must
/// not hang the collection.
const COMMAND_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `cmd` (stdin closed) and collects its output, killing it after `deadline`.
pub(crate) fn output_within(cmd: &mut Command, deadline: std::time::Duration) -> Result<std::process::Output, String> {
    let child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| e.to_string())?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(out) => out.map_err(|e| e.to_string()),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            Err(format!("still running after {deadline:?}; killed"))
        }
    }
}

/// `edge_2006_0102_150405` (upstream's layout) for a Unix time, in UTC.
pub fn stamp(unix: i64) -> String {
    let t = kubeedge_kube_serve::time::from_unix(unix);
    format!(
        "edge_{:04}_{:02}{:02}_{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

pub fn run_collect(args: &Args, ctx: &Ctx) -> Result<PathBuf, Error> {
    let dir = stamp(kubeedge_kube_serve::time::now_unix());
    let mut b = Bundle { dir: dir.clone(), files: Vec::new(), errors: Vec::new() };
    system(&mut b, args.detail);
    let edge = ctx.edge();
    let config_path = edge.as_ref().map_or_else(|_| ctx.config_path(), |e| e.path.clone());
    b.file("edgecore/edgecore.yaml", &config_path);
    if let Err(e) = &edge {
        b.errors.push(format!("edgecore.yaml: {}", ctl::chain(e)));
    }
    let edge = edge.ok();
    versions(&mut b, ctx, edge.as_ref());
    let db = args.edgedb_path.clone().or_else(|| edge.as_ref().map(|e| e.database()));
    match db {
        Some(db) => database(&mut b, &db),
        None => b.errors.push("database: no --edgedb-path and no edgecore.yaml".into()),
    }
    logs(&mut b, args);
    if !b.errors.is_empty() {
        let errors = b.errors.join("\n") + "\n";
        b.text("errors.txt", &errors);
    }
    write(&b, &args.output_path.join(format!("{dir}.tar.gz")))
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<(), Error> {
    let path = run_collect(args, ctx)?;
    println!("Collected into {}", path.display());
    Ok(())
}

fn system(b: &mut Bundle, detail: bool) {
    for (name, path) in [
        ("system/os-release", "/etc/os-release"),
        ("system/kernel", "/proc/version"),
        ("system/hostname", "/proc/sys/kernel/hostname"),
        ("system/meminfo", "/proc/meminfo"),
        ("system/cpuinfo", "/proc/cpuinfo"),
        ("system/uptime", "/proc/uptime"),
        ("system/loadavg", "/proc/loadavg"),
    ] {
        b.file(name, Path::new(path));
    }
    b.command("system/df", &["df", "-h"]);
    if detail {
        b.file("system/mounts", Path::new("/proc/mounts"));
        // Command lines may carry tokens (`keadm join --token …`): redacted like every text.
        b.command("system/ps", &["ps", "-eo", "pid,ppid,rss,etime,args"]);
        b.command("system/ip-addr", &["ip", "addr"]);
        b.command("system/ip-route", &["ip", "route"]);
    }
}

fn versions(b: &mut Bundle, ctx: &Ctx, edge: Option<&ctl::edge::Edge>) {
    let mut text = format!("keadm {}\n", env!("CARGO_PKG_VERSION"));
    let bin = ctx.at(crate::paths::BIN_DIR).join("edgecore");
    match output(&[&bin.to_string_lossy(), "--version"]) {
        Ok(v) => text.push_str(&format!("edgecore ({}): {}", bin.display(), v)),
        Err(e) => text.push_str(&format!("edgecore ({}): {e}\n", bin.display())),
    }
    if let Some(socket) = edge.and_then(|e| e.runtime_socket().ok()) {
        match super::runtime().map_err(|e| e.to_string()).and_then(|rt| rt.block_on(cri_info(&socket))) {
            Ok((version, info)) => {
                text.push_str(&format!("runtime ({}): {version}\n", socket.display()));
                b.text("runtime/cri-status.json", &info);
            }
            Err(e) => text.push_str(&format!("runtime ({}): {e}\n", socket.display())),
        }
    }
    b.text("versions.txt", &text);
}

/// The runtime's version line and its verbose CRI status (containerd's config), redacted.
async fn cri_info(socket: &Path) -> Result<(String, String), String> {
    let opts =
        kubeedge_cri::Options { connect_timeout: CRI_TIMEOUT, request_timeout: CRI_TIMEOUT, ..Default::default() };
    let cri = kubeedge_cri::Cri::connect_with(socket, opts).await.map_err(|e| ctl::chain(&e))?;
    let v = cri.version().await.map_err(|e| ctl::chain(&e))?;
    let version = format!("{} {} (CRI {})", v.runtime_name, v.runtime_version, v.runtime_api_version);
    let status = cri.status_verbose().await.map_err(|e| ctl::chain(&e))?;
    let mut info = serde_json::Map::new();
    for (k, raw) in status.info {
        let mut value = serde_json::from_str(&raw).unwrap_or(serde_json::Value::String(raw));
        redact::json(&mut value);
        info.insert(k, value);
    }
    Ok((version, serde_json::to_string_pretty(&info).unwrap_or_default()))
}

fn database(b: &mut Bundle, path: &Path) {
    let ro = match ReadOnly::open(path) {
        Ok(ro) => ro,
        Err(e) => return b.errors.push(format!("database: {}: {}", path.display(), ctl::chain(&e))),
    };
    let mut summary = format!("file: {}\n", path.display());
    match ro.integrity_check() {
        Ok(r) => summary.push_str(&format!("integrity_check: {}\n", r.join("; "))),
        Err(e) => summary.push_str(&format!("integrity_check failed: {}\n", ctl::chain(&e))),
    }
    if let Ok(counts) = ro.row_counts() {
        for (table, n) in counts {
            summary.push_str(&format!("rows {table}: {n}\n"));
        }
    }
    b.text("database/integrity.txt", &summary);
    match ro.all_meta(MAX_ROWS) {
        Ok(rows) => {
            let mut dump = String::new();
            for row in rows {
                let value = redact::stored(&row.ty, &row.value);
                // JSON values stay JSON (readable with jq), anything else a string.
                let value = serde_json::from_str(&value).unwrap_or(serde_json::Value::String(value));
                let line = serde_json::json!({"key": row.key, "type": row.ty, "value": value});
                dump.push_str(&line.to_string());
                dump.push('\n');
            }
            b.text("database/meta.jsonl", &dump);
        }
        Err(e) => b.errors.push(format!("database/meta.jsonl: {}", ctl::chain(&e))),
    }
}

fn logs(b: &mut Bundle, args: &Args) {
    let lines = if args.detail { JOURNAL_LINES_DETAIL } else { JOURNAL_LINES };
    let n = lines.to_string();
    let journal = output(&["journalctl", "-u", "edgecore", "--no-pager", "-o", "short-iso", "-n", &n]);
    match journal {
        Ok(text) if text.lines().any(|l| !l.starts_with("-- ")) => return b.text("logs/edgecore.journal", &text),
        Ok(_) => b.errors.push("logs: journald has no edgecore entries; reading --log-path".into()),
        Err(e) => b.errors.push(format!("logs: journalctl: {e}; reading --log-path")),
    }
    let Ok(entries) = std::fs::read_dir(&args.log_path) else {
        return b.errors.push(format!("logs: {} cannot be read", args.log_path.display()));
    };
    // Regular files only: a symlink in the log dir is not followed.
    let mut files: Vec<PathBuf> =
        entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_file())).map(|e| e.path()).collect();
    files.sort();
    for f in files.into_iter().take(64) {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        b.file(&format!("logs/{name}"), &f);
    }
}

/// Writes the bundle as a gzipped tarball (to a temporary name, renamed when complete).
fn write(b: &Bundle, path: &Path) -> Result<PathBuf, Error> {
    let err = |source| Error::Write { path: path.to_owned(), source };
    let part = path.with_extension("part");
    // Only the caller may read it (configs, logs, the database dump), and a symlink planted at
    // the temporary name is not followed: a stale one is removed, the new file created
    // exclusively.
    if std::fs::symlink_metadata(&part).is_ok() {
        std::fs::remove_file(&part).map_err(err)?;
    }
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&part).map_err(err)?
    };
    let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::default()));
    let mtime = u64::try_from(kubeedge_kube_serve::time::now_unix()).unwrap_or(0);
    for (name, data) in &b.files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        tar.append_data(&mut header, name, data.as_slice()).map_err(err)?;
    }
    let gz = tar.into_inner().map_err(err)?;
    gz.finish().map_err(err)?.sync_all().map_err(err)?;
    std::fs::rename(&part, path).map_err(err)?;
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_upstreams_layout() {
        assert_eq!(stamp(0), "edge_1970_0101_000000");
        assert_eq!(stamp(1_700_000_000), "edge_2023_1114_221320");
    }
}
