//! `keadm reset edge`: undoes `keadm join` (see [`crate::reset`] for the list). The order
//! matters: edgecore stops first (so nothing restarts pods), then the pods go through CRI, then
//! what is mounted under the pods' directories is unmounted, and only then are files removed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use kubeedge_config::edgecore::EdgeCoreConfig;

use crate::paths::{self, Root};
use crate::reset::{Common, confirm, remove, remove_service};
use crate::{deprecated, hooks, join};

/// What edgecore.yaml says about where the edge keeps things.
struct Layout {
    /// Files named by the config (certificate, key, database), removed only if regular files.
    files: Vec<PathBuf>,
    /// `{edged.rootDirectory}/pods`.
    pods_dir: PathBuf,
    /// The CRI endpoint.
    endpoint: String,
}

fn layout(common: &Common, root: &Root) -> Layout {
    let config = kubeedge_config::load_file::<EdgeCoreConfig>(root.at(paths::EDGECORE_YAML)).ok().map(|l| l.config);
    let files = config.as_ref().map_or_else(Vec::new, |c| {
        let db = c.database.data_source.clone();
        let hub = &c.modules.edge_hub;
        [
            hub.tls_ca_file.clone(),
            hub.tls_cert_file.clone(),
            hub.tls_private_key_file.clone(),
            db.clone(),
            format!("{db}-wal"),
            format!("{db}-shm"),
        ]
        .into_iter()
        .filter(|p| p.starts_with('/'))
        .map(|p| root.at(p))
        .collect()
    });
    let rootdir = config.as_ref().map_or("/var/lib/kubelet", |c| c.modules.edged.root_directory.as_str());
    let pods_dir = root.at(format!("{}/pods", rootdir.trim_end_matches('/')));
    let endpoint = common
        .remote_runtime_endpoint
        .clone()
        .or_else(|| config.as_ref().map(|c| c.modules.edged.tailored_kubelet_config.container_runtime_endpoint.clone()))
        .unwrap_or_else(|| join::DEFAULT_ENDPOINT.to_owned());
    Layout { files, pods_dir, endpoint }
}

/// Runs the edge reset.
pub fn edge(common: &Common, root: &Root) -> ExitCode {
    if !confirm(common, "edgecore (its service, pods, config, certificates and database)") {
        eprintln!("keadm reset: aborted.");
        return ExitCode::FAILURE;
    }
    if let Err(e) = hooks::run("--pre-run", common.pre_run.as_deref()) {
        eprintln!("keadm reset: {e}");
        return ExitCode::FAILURE;
    }
    let layout = layout(common, root);
    remove_service(root, "edgecore.service", "edgecore");
    if root.is_host() {
        remove_pods(&layout.endpoint);
        unmount_under(&layout.pods_dir);
    }
    remove(&layout.pods_dir);
    // Only files: a config edited to name a directory or a shared file elsewhere does not
    // make reset delete a tree.
    for p in &layout.files {
        remove_file_only(p);
    }
    if deprecated::cloud_installed(root) {
        // A host cloudcore shares /etc/kubeedge: keep its config, remove the edge's part.
        remove_edge_part_of_kubeedge_dir(root);
    } else {
        remove(&root.at(paths::KUBEEDGE_DIR));
    }
    for dir in [paths::STATE_DIR, "/var/log/kubeedge"] {
        remove(&root.at(dir));
    }
    if let Err(e) = hooks::run("--post-run", common.post_run.as_deref()) {
        eprintln!("keadm reset: {e}");
        return ExitCode::FAILURE;
    }
    println!("[reset] edgecore is removed from this host.");
    ExitCode::SUCCESS
}

/// Removes `path` if it is a regular file (or a symlink: the link, not its target).
fn remove_file_only(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Err(_) => {}
        Ok(m) if m.is_dir() => {
            println!("[reset] Left {} alone: edgecore.yaml names it, but it is a directory.", path.display())
        }
        Ok(_) => remove(path),
    }
}

/// Everything in /etc/kubeedge except `config/cloudcore.yaml`.
fn remove_edge_part_of_kubeedge_dir(root: &Root) {
    let dir = root.at(paths::KUBEEDGE_DIR);
    let keep = root.at(paths::CLOUDCORE_YAML);
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    for e in entries.filter_map(Result::ok) {
        let path = e.path();
        if keep.starts_with(&path) && path != keep {
            // The config dir: all but cloudcore.yaml.
            for f in std::fs::read_dir(&path).into_iter().flatten().filter_map(Result::ok) {
                if f.path() != keep {
                    remove(&f.path());
                }
            }
        } else if path != keep {
            remove(&path);
        }
    }
    println!("[reset] Kept {}: cloudcore is installed on this host too.", keep.display());
}

/// Stops and removes every pod sandbox on the runtime that a kubelet made (as upstream's
/// `crictl stopp` + `crictl rmp`), with their containers. A runtime that does not answer is
/// reported and skipped: the reset goes on.
fn remove_pods(endpoint: &str) {
    let Some(socket) = endpoint.strip_prefix("unix://") else {
        eprintln!("[reset] {endpoint} is not unix:///path; pods were not removed (-p/--remote-runtime-endpoint).");
        return;
    };
    if !Path::new(socket).exists() {
        println!("[reset] No container runtime at {socket}; no pod to remove.");
        return;
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("[reset] Could not remove pods: {e}");
            return;
        }
    };
    rt.block_on(async {
        let opts = kubeedge_cri::Options {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
            ..Default::default()
        };
        let cri = match kubeedge_cri::Cri::connect_with(socket, opts).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("[reset] Could not reach the runtime at {socket}: {e}; pods were not removed.");
                return;
            }
        };
        let sandboxes = match cri.list_pod_sandbox(None).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("[reset] Listing pods at {socket} failed: {e}; pods were not removed.");
                return;
            }
        };
        for sb in sandboxes.iter().filter(|s| s.labels.contains_key("io.kubernetes.pod.uid")) {
            let name = sb.metadata.as_ref().map_or_else(|| sb.id.clone(), |m| format!("{}/{}", m.namespace, m.name));
            let stopped = cri.stop_pod_sandbox(&sb.id).await;
            match stopped.and(cri.remove_pod_sandbox(&sb.id).await) {
                Ok(()) => println!("[reset] Removed pod {name}."),
                Err(e) => eprintln!("[reset] Could not remove pod {name}: {e}"),
            }
        }
    });
}

/// Unmounts what is mounted at or below `dir` (pod volumes: tmpfs, bind mounts), deepest
/// first, so the directory can be removed without reaching into a mounted file system.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for p in points {
        let ok = std::process::Command::new("umount").arg("--lazy").arg(&p).status().is_ok_and(|s| s.success());
        if ok {
            println!("[reset] Unmounted {}.", p.display());
        } else {
            eprintln!("[reset] Could not unmount {}.", p.display());
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(s: &str) -> PathBuf {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/var/lib/kubelet/pods/a\040b"), PathBuf::from("/var/lib/kubelet/pods/a b"));
        assert_eq!(unescape_mount_path(r"/x\134y"), PathBuf::from(r"/x\y"));
        assert_eq!(unescape_mount_path(r"/short\04"), PathBuf::from(r"/short\04"));
    }

    #[test]
    fn a_shared_kubeedge_dir_keeps_cloudcores_config() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(Some(dir.path()));
        for f in [paths::CLOUDCORE_YAML, paths::EDGECORE_YAML, paths::EDGE_CA, "/etc/kubeedge/certs/server.key"] {
            let p = root.at(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "x").unwrap();
        }
        remove_edge_part_of_kubeedge_dir(&root);
        assert!(root.at(paths::CLOUDCORE_YAML).is_file());
        assert!(!root.at(paths::EDGECORE_YAML).exists());
        assert!(!root.at("/etc/kubeedge/ca").exists());
        assert!(!root.at("/etc/kubeedge/certs").exists());
    }

    #[test]
    fn files_named_by_the_config_are_removed_only_when_they_are_files() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("pki");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::write(shared.join("keep.crt"), "x").unwrap();
        remove_file_only(&shared);
        assert!(shared.join("keep.crt").is_file());
        let file = dir.path().join("server.key");
        std::fs::write(&file, "x").unwrap();
        remove_file_only(&file);
        assert!(!file.exists());
    }
}
