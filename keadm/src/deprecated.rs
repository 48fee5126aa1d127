//! `keadm deprecated init` and `keadm deprecated reset`: cloudcore on this host as the systemd
//! service `cloudcore.service` (`build/cloudcore.service`), as upstream's deprecated commands
//! did, instead of in the cluster (`keadm init`).
//!
//! init checks first (root, not installed, the cloudcore binary — from `--tarballpath` or next
//! to keadm, never downloaded —, the kubeconfig, the config, free ports), then writes
//! `/etc/kubeedge/config/cloudcore.yaml` (cloudcore's `--defaultconfig`, the advertise address,
//! the kubeconfig, `--set`), installs `/usr/local/bin/cloudcore` and the unit, starts it and
//! waits for its `/readyz`. A failed run leaves nothing behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kubeedge_config::cloudcore::CloudCoreConfig;
use yaml_serde::Value;

use crate::install::Tx;
use crate::join::config;
use crate::paths::{self, Root};
use crate::reset::{self, Common};
use crate::systemd::{self, Systemctl};

/// How long to wait for cloudcore's /readyz.
const READY_WAIT: Duration = Duration::from_secs(60);

/// `keadm deprecated` commands.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Installs cloudcore on this host as cloudcore.service.
    Init(InitArgs),
    /// Removes cloudcore.service and its files from this host.
    Reset(Common),
}

/// `keadm deprecated init` flags.
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// The address edges reach CloudHub at (goes into the certificate's SANs).
    #[arg(long = "advertise-address", required = true)]
    advertise_address: String,
    /// The kubeconfig cloudcore uses.
    #[arg(long = "kube-config", default_value = "/root/.kube/config")]
    kube_config: PathBuf,
    /// A directory holding the cloudcore binary (default: the one next to keadm).
    #[arg(long = "tarballpath")]
    tarballpath: Option<PathBuf>,
    /// A cloudcore.yaml value by dotted key path, key=value (repeatable).
    #[arg(long = "set")]
    set: Vec<String>,
    /// Install into this directory as the root file system; nothing is started.
    #[arg(long = "root")]
    root: Option<PathBuf>,
}

/// Runs `keadm deprecated …`.
pub fn main(args: &Args) -> ExitCode {
    match &args.command {
        Command::Init(a) => init(a),
        Command::Reset(c) => reset(c, &Root::new(c.root.as_deref())),
    }
}

/// Whether `keadm deprecated init` left anything on this root.
pub fn cloud_installed(root: &Root) -> bool {
    [root.at(paths::CLOUDCORE_YAML), root.unit("cloudcore.service"), root.bin("cloudcore")].iter().any(|p| p.exists())
}

/// Removes the host cloudcore.
pub fn reset(common: &Common, root: &Root) -> ExitCode {
    if !reset::confirm(common, "cloudcore.service (its unit, binary and config)") {
        eprintln!("keadm reset: aborted.");
        return ExitCode::FAILURE;
    }
    if let Err(e) = crate::hooks::run("--pre-run", common.pre_run.as_deref()) {
        eprintln!("keadm reset: {e}");
        return ExitCode::FAILURE;
    }
    // The cluster it ran against: `--kube-config`, else its config's kubeAPIConfig.kubeConfig.
    let kube_config = common.kube_config.clone().or_else(|| {
        kubeedge_config::load_file::<kubeedge_config::cloudcore::CloudCoreConfig>(root.at(paths::CLOUDCORE_YAML))
            .ok()
            .map(|l| l.config.kube_api_config.kube_config)
            .filter(|k| !k.is_empty())
            .map(|k| if root.is_host() { PathBuf::from(k) } else { root.at(k) })
    });
    reset::remove_service(root, "cloudcore.service", "cloudcore");
    // As upstream's teardown: the namespace `kubeedge` goes, and with it the CA, the serving
    // certificate and the join token cloudcore kept there, so old tokens stop working.
    let mut cluster_left = None;
    match &kube_config {
        Some(kc) => {
            let done = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| rt.block_on(crate::reset_cloud::reset(kc)).map_err(|e| e.to_string()));
            if let Err(e) = done {
                cluster_left = Some(format!(
                    "could not delete namespace kubeedge through {}: {e}; its Secrets (CA, join token) stay: \
                     kubectl delete namespace kubeedge",
                    kc.display()
                ));
            }
        }
        None => {
            cluster_left = Some(
                "no kubeconfig known (cloudcore.yaml names none; pass --kube-config): the namespace kubeedge and its \
                 Secrets (CA, join token) stay in the cluster: kubectl delete namespace kubeedge"
                    .to_owned(),
            );
        }
    }
    reset::remove(&root.at(paths::CLOUDCORE_YAML));
    // The rest of /etc/kubeedge goes too, unless an edge shares this host.
    if !reset::edge_installed(root) {
        reset::remove(&root.at(paths::KUBEEDGE_DIR));
    }
    if let Err(e) = crate::hooks::run("--post-run", common.post_run.as_deref()) {
        eprintln!("keadm reset: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(why) = cluster_left {
        eprintln!("keadm reset: cloudcore is removed from this host, but {why}");
        return ExitCode::FAILURE;
    }
    println!("[reset] cloudcore is removed from this host.");
    ExitCode::SUCCESS
}

fn fail(name: &str, reason: impl std::fmt::Display, fix: &str) -> String {
    format!("[preflight] FAIL  {name:<16} {reason}\n[preflight]       {:<16} fix: {fix}", "")
}

fn binary(dir: Option<&Path>) -> Result<PathBuf, String> {
    let dir = match dir {
        Some(d) => d.to_owned(),
        None => std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_owned)).unwrap_or_default(),
    };
    let path = [dir.join("cloudcore"), dir.join("cloud/cloudcore")]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| format!("no cloudcore in {}", dir.display()))?;
    let out =
        std::process::Command::new(&path).arg("--version").output().map_err(|e| format!("{}: {e}", path.display()))?;
    if !String::from_utf8_lossy(&out.stdout).starts_with("cloudcore ") {
        return Err(format!("{} is not cloudcore", path.display()));
    }
    Ok(path)
}

fn build_config(bin: &Path, a: &InitArgs, kubeconfig: &str) -> Result<(String, CloudCoreConfig), String> {
    let out = std::process::Command::new(bin).arg("--defaultconfig").output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{} --defaultconfig failed ({}): {}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut doc: Value = yaml_serde::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let mut sets = vec![
        ("kubeAPIConfig.kubeConfig".to_owned(), Value::String(kubeconfig.to_owned())),
        (
            "modules.cloudHub.advertiseAddress".to_owned(),
            Value::Sequence(vec![Value::String(a.advertise_address.clone())]),
        ),
    ];
    let parsed = config::parse_sets(&a.set).map_err(|e| e.to_string())?;
    sets.extend(parsed.iter().map(|(k, v)| (k.clone(), config::set_value(v))));
    for (path, value) in sets {
        config::set(&mut doc, &path, value).map_err(|e| e.to_string())?;
    }
    let yaml = yaml_serde::to_string(&doc).map_err(|e| e.to_string())?;
    let loaded = kubeedge_config::load::<CloudCoreConfig>(&yaml).map_err(|e| e.to_string())?;
    if let Some(k) = loaded.unknown_keys.first() {
        return Err(format!("unknown key {k} (check the --set path)"));
    }
    loaded.config.validate().map_err(|e| e.to_string())?;
    Ok((yaml, loaded.config))
}

fn init(a: &InitArgs) -> ExitCode {
    let root = Root::new(a.root.as_deref());
    let mut problems = Vec::new();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")) {
        problems.push(fail("root", "not running as root", "run keadm deprecated init as root"));
    }
    if cloud_installed(&root) {
        problems.push(fail("not-installed", "cloudcore is already installed here", "run keadm deprecated reset first"));
    }
    let kubeconfig = std::path::absolute(&a.kube_config).unwrap_or_else(|_| a.kube_config.clone());
    let kc = kubeconfig.display().to_string();
    if !root.at(&kubeconfig).is_file() {
        problems.push(fail("kubeconfig", format!("{kc} (--kube-config) does not exist"), "pass --kube-config FILE"));
    } else if kc.starts_with("/tmp/") || kc.starts_with("/var/tmp/") {
        problems.push(fail(
            "kubeconfig",
            format!("{kc} is under a temporary directory, which cloudcore.service does not see (PrivateTmp)"),
            "copy it elsewhere, e.g. /root/.kube/config",
        ));
    }
    let bin = binary(a.tarballpath.as_deref());
    let config = match &bin {
        Ok(b) => build_config(b, a, &kc),
        Err(e) => {
            problems.push(fail("cloudcore-binary", e, "put cloudcore next to keadm, or pass --tarballpath DIR"));
            Err(String::new())
        }
    };
    match &config {
        Ok((_, c)) => {
            let h = &c.modules.cloud_hub;
            let mut addrs = vec![c.common_config.monitor_server.bind_address.clone()];
            if h.websocket.enable {
                addrs.push(format!("{}:{}", h.websocket.address, h.websocket.port));
            }
            if h.https.enable {
                addrs.push(format!("{}:{}", h.https.address, h.https.port));
            }
            for addr in addrs {
                if let Ok(sa) = addr.parse::<SocketAddr>()
                    && sa.port() != 0
                    && let Err(e) = std::net::TcpListener::bind(sa)
                {
                    problems.push(fail(
                        "ports",
                        format!("{addr}: {e}"),
                        "stop what listens there, or move it with --set",
                    ));
                }
            }
        }
        Err(e) if !e.is_empty() => problems.push(fail("config", e, "fix the flag or --set named above")),
        Err(_) => {}
    }
    if !problems.is_empty() {
        for p in problems {
            println!("{p}");
        }
        eprintln!("keadm deprecated init: preflight checks failed; nothing was written.");
        return ExitCode::FAILURE;
    }
    let (Ok(bin), Ok((yaml, config))) = (bin, config) else { return ExitCode::FAILURE };
    match install(&root, &bin, &yaml, &config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keadm deprecated init: {e}");
            ExitCode::FAILURE
        }
    }
}

fn install(root: &Root, bin: &Path, yaml: &str, config: &CloudCoreConfig) -> Result<(), String> {
    let mut tx = Tx::new(root);
    println!("[init] 1/4 Writing {}.", paths::CLOUDCORE_YAML);
    tx.write(paths::CLOUDCORE_YAML, yaml.as_bytes(), 0o600).map_err(|e| e.to_string())?;
    println!("[init] 2/4 Installing {}.", root.bin("cloudcore").display());
    tx.copy(bin, format!("{}/cloudcore", paths::BIN_DIR), 0o755).map_err(|e| e.to_string())?;
    println!("[init] 3/4 Installing and starting cloudcore.service.");
    tx.write(format!("{}/cloudcore.service", paths::UNIT_DIR), systemd::CLOUDCORE_UNIT.as_bytes(), 0o644)
        .map_err(|e| e.to_string())?;
    tx.enable("cloudcore.service").map_err(|e| e.to_string())?;
    if Systemctl::new(root).available() {
        let monitor = config.common_config.monitor_server.bind_address.clone();
        println!("[init] 4/4 Waiting for cloudcore's /readyz ({monitor}).");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let t = Instant::now();
        rt.block_on(async {
            let mut last = String::new();
            while t.elapsed() < READY_WAIT {
                match crate::http::get(&monitor, "/readyz").await {
                    Ok((200, _)) => return Ok(()),
                    Ok((code, body)) => last = format!("{code} {}", body.trim()),
                    Err(e) => last = e.to_string(),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(format!("cloudcore was not ready within {READY_WAIT:?} (journalctl -u cloudcore): {last}"))
        })?;
        println!("[init] cloudcore is ready after {:.1} s.", t.elapsed().as_secs_f64());
    } else {
        println!("[init] 4/4 Not started: {}.", if root.is_host() { "systemd is not running" } else { "--root given" });
    }
    tx.commit();
    Ok(())
}
