//! The CRI client against a real, private containerd (root, containerd, runc, CNI plugins and
//! busybox-static from `hack/install-deps.sh`): runtime status, images, a hostNetwork pod and a
//! pod on the bridge network, exec, logs, and errors. Skips loudly where containerd cannot run.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use kubeedge_cri::v1::{self, ContainerState, NamespaceMode, PodSandboxState};
use kubeedge_cri::{Cri, NETWORK_READY, RUNTIME_READY};
use kubeedge_testkit::containerd::{self, PrivateContainerd};

/// Runs `body` against a fresh private containerd, or prints why it cannot.
fn with_containerd(test: &str, body: impl AsyncFnOnce(&PrivateContainerd, Cri)) {
    if let Some(why) = containerd::unavailable() {
        eprintln!("SKIPPED {test}: {why}");
        return;
    }
    let t0 = Instant::now();
    let ctrd = PrivateContainerd::start().unwrap_or_else(|e| panic!("private containerd: {e}"));
    eprintln!("{test}: containerd up, images imported in {:?}", t0.elapsed());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let cri = Cri::connect(ctrd.socket()).await.expect("connect to containerd");
        tokio::time::timeout(Duration::from_secs(300) + kubeedge_testkit::patience(), body(&ctrd, cri))
            .await
            .expect("likely deadlocked");
    });
}

use kubeedge_testkit::until_async as eventually;

fn sandbox_config(ctrd: &PrivateContainerd, name: &str, host_network: bool) -> v1::PodSandboxConfig {
    let uid = format!("uid-{name}");
    let log_dir = ctrd.pod_log_root().join(format!("default_{name}_{uid}"));
    // kubelet creates the pod's log directory before RunPodSandbox.
    std::fs::create_dir_all(&log_dir).expect("pod log dir");
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata { name: name.into(), uid, namespace: "default".into(), attempt: 0 }),
        // A host-network sandbox has no UTS namespace of its own: its hostname must stay empty.
        hostname: if host_network { String::new() } else { name.into() },
        log_directory: log_dir.to_str().expect("utf-8").into(),
        labels: HashMap::from([("io.kubernetes.pod.name".into(), name.into())]),
        linux: Some(v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces(host_network)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The namespaces kubelet gives a pod without shareProcessNamespace or hostPID/hostIPC; it puts
/// them in the sandbox config and again in each container's.
fn namespaces(host_network: bool) -> v1::NamespaceOption {
    v1::NamespaceOption {
        network: if host_network { NamespaceMode::Node } else { NamespaceMode::Pod } as i32,
        // Each container is PID 1 of its own PID namespace (the zero value, POD, would make
        // it share the sandbox's, with pause as PID 1).
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn container_config(image: &str, name: &str, script: &str, host_network: bool) -> v1::ContainerConfig {
    v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(v1::ImageSpec { image: image.into(), ..Default::default() }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("io.kubernetes.container.name".into(), name.into())]),
        linux: Some(v1::LinuxContainerConfig {
            security_context: Some(v1::LinuxContainerSecurityContext {
                namespace_options: Some(namespaces(host_network)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn sh(cmd: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), cmd.into()]
}

#[test]
fn runtime_reports_ready_and_serves_the_imported_images() {
    with_containerd("runtime_reports_ready_and_serves_the_imported_images", async |ctrd, cri| {
        let version = cri.version().await.expect("Version");
        assert_eq!(version.runtime_name, "containerd");
        assert_eq!(version.runtime_api_version, "v1");
        eprintln!("runtime {} {}, CRI {}", version.runtime_name, version.runtime_version, version.runtime_api_version);

        // CRI loads the CNI config asynchronously after start.
        let status = eventually("RuntimeReady and NetworkReady", async || {
            let s = cri.status().await.expect("Status");
            (s.is_ready(RUNTIME_READY) && s.is_ready(NETWORK_READY)).then_some(s)
        })
        .await;
        assert!(status.status.is_some());

        let image = cri.image_status(ctrd.busybox_image()).await.expect("ImageStatus").expect("busybox imported");
        assert!(image.repo_tags.iter().any(|t| t == ctrd.busybox_image()), "{image:?}");
        assert!(image.id.starts_with("sha256:"), "{image:?}");
        assert!(image.size > 0);
        assert!(cri.image_status(containerd::PAUSE_IMAGE).await.expect("ImageStatus").is_some());
        let all = cri.list_images(None).await.expect("ListImages");
        for want in [ctrd.busybox_image(), containerd::PAUSE_IMAGE] {
            assert!(all.iter().any(|i| i.repo_tags.iter().any(|t| t == want)), "{want} not in {all:?}");
        }

        assert_eq!(cri.image_status("localhost/not-here:0").await.expect("ImageStatus"), None);
        // No registry: pulling an unknown image fails with the runtime's reason, not a panic.
        let err = cri.pull_image("localhost/not-here:0", None, None).await.expect_err("nothing to pull");
        eprintln!("pull of a missing image: {err}");
        assert!(matches!(err, kubeedge_cri::Error::Rpc { .. }), "{err:?}");
        assert!(err.to_string().contains("localhost/not-here:0"), "{err}");
    });
}

#[test]
fn host_network_pod_runs_logs_execs_and_is_removed() {
    with_containerd("host_network_pod_runs_logs_execs_and_is_removed", async |ctrd, cri| {
        let pod = sandbox_config(ctrd, "hostnet", true);
        let t0 = Instant::now();
        let sandbox = cri.run_pod_sandbox(&pod, "").await.expect("RunPodSandbox");
        let sandbox_took = t0.elapsed();
        let status = cri.pod_sandbox_status(&sandbox).await.expect("PodSandboxStatus");
        assert_eq!(status.state(), PodSandboxState::SandboxReady);
        assert!(cri.list_pod_sandbox(None).await.expect("ListPodSandbox").iter().any(|s| s.id == sandbox));

        // A container whose image is missing is refused with a clear error.
        let missing = container_config("localhost/not-here:0", "missing", "true", true);
        let err = cri.create_container(&sandbox, missing, &pod).await.expect_err("image not present");
        eprintln!("container with a missing image: {err}");
        assert!(err.to_string().contains("localhost/not-here:0"), "{err}");

        let t1 = Instant::now();
        let config = container_config(ctrd.busybox_image(), "main", "echo started; sleep 3600", true);
        let id = cri.create_container(&sandbox, config, &pod).await.expect("CreateContainer");
        cri.start_container(&id).await.expect("StartContainer");
        let container_took = t1.elapsed();
        let status = cri.container_status(&id).await.expect("ContainerStatus");
        assert_eq!(status.state(), ContainerState::ContainerRunning, "{status:?}");
        eprintln!("hostNetwork sandbox ready in {sandbox_took:?}, container created and started in {container_took:?}");

        let log_path = Path::new(&pod.log_directory).join("main/0.log");
        assert_eq!(Path::new(&status.log_path), log_path);
        let line = eventually("the container's first log line", async || {
            let log = std::fs::read_to_string(&log_path).ok()?;
            log.lines().find(|l| l.ends_with(" stdout F started")).map(str::to_owned)
        })
        .await;
        // "2026-11-25T19:13:16.547Z stdout F started": an RFC 3339 timestamp first.
        assert!(line.split(' ').next().is_some_and(|ts| ts.contains('T') && ts.len() >= 20), "{line}");

        let hi = cri.exec_sync(&id, sh("echo hi"), Duration::from_secs(30)).await.expect("ExecSync");
        assert_eq!((hi.exit_code, hi.stdout.as_slice(), hi.stderr.as_slice()), (0, &b"hi\n"[..], &b""[..]));
        // The host's network namespace, hence the host's name.
        let hostname = cri.exec_sync(&id, sh("cat /etc/hostname"), Duration::from_secs(30)).await.expect("ExecSync");
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
        assert_eq!(String::from_utf8_lossy(&hostname.stdout).trim(), host.trim());
        let failed = cri.exec_sync(&id, sh("echo oops >&2; exit 3"), Duration::from_secs(30)).await.expect("ExecSync");
        assert_eq!((failed.exit_code, failed.stderr.as_slice()), (3, &b"oops\n"[..]));

        let listed = cri.list_containers(None).await.expect("ListContainers");
        assert!(listed.iter().any(|c| c.id == id && c.pod_sandbox_id == sandbox), "{listed:?}");

        // `sh` as PID 1 ignores SIGTERM, so the runtime kills it after the grace period.
        cri.stop_container(&id, Duration::from_secs(1)).await.expect("StopContainer");
        let status = cri.container_status(&id).await.expect("ContainerStatus");
        assert_eq!(status.state(), ContainerState::ContainerExited);
        assert_eq!(status.exit_code, 137, "{status:?}");
        cri.remove_container(&id).await.expect("RemoveContainer");
        let gone = cri.container_status(&id).await.expect_err("removed");
        assert!(gone.is_not_found(), "{gone:?}");

        cri.stop_pod_sandbox(&sandbox).await.expect("StopPodSandbox");
        assert_eq!(
            cri.pod_sandbox_status(&sandbox).await.expect("PodSandboxStatus").state(),
            PodSandboxState::SandboxNotready
        );
        // Stopping is idempotent (kubelet stops a sandbox at least once before removing it).
        cri.stop_pod_sandbox(&sandbox).await.expect("StopPodSandbox again");
        cri.remove_pod_sandbox(&sandbox).await.expect("RemovePodSandbox");
        assert!(!cri.list_pod_sandbox(None).await.expect("ListPodSandbox").iter().any(|s| s.id == sandbox));
        // Once removed, the sandbox is gone: containerd 1.6 says NotFound to a second stop or
        // remove, newer runtimes say nothing. Either way, no other error.
        for again in [cri.stop_pod_sandbox(&sandbox).await, cri.remove_pod_sandbox(&sandbox).await] {
            assert!(again.is_ok() || again.as_ref().is_err_and(|e| e.is_not_found()), "{again:?}");
        }
    });
}

#[test]
fn pod_network_sandbox_gets_an_ip_from_the_bridge() {
    with_containerd("pod_network_sandbox_gets_an_ip_from_the_bridge", async |ctrd, cri| {
        let pod = sandbox_config(ctrd, "podnet", false);
        let t0 = Instant::now();
        let sandbox = cri.run_pod_sandbox(&pod, "").await.expect("RunPodSandbox");
        eprintln!("bridge-network sandbox ready in {:?}", t0.elapsed());
        let status = cri.pod_sandbox_status(&sandbox).await.expect("PodSandboxStatus");
        let ip = status.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
        let ip: std::net::Ipv4Addr = ip.parse().unwrap_or_else(|_| panic!("no pod IP in {status:?}"));
        let prefix = ctrd.pod_cidr().trim_end_matches("0/24");
        assert!(ip.to_string().starts_with(prefix), "{ip} not in {}", ctrd.pod_cidr());
        eprintln!("pod IP {ip} from {}", ctrd.pod_cidr());

        let config = container_config(ctrd.busybox_image(), "main", "sleep 3600", false);
        let id = cri.create_container(&sandbox, config, &pod).await.expect("CreateContainer");
        cri.start_container(&id).await.expect("StartContainer");
        // The container shares the sandbox's network and UTS namespaces.
        let out = cri.exec_sync(&id, sh("cat /etc/hostname; ip -4 addr show eth0"), Duration::from_secs(30)).await;
        let out = out.expect("ExecSync");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.exit_code, 0, "{out:?}");
        assert_eq!(text.lines().next(), Some("podnet"), "{text}");
        assert!(text.contains(&format!("inet {ip}/24")), "{text}");

        // StopPodSandbox stops the containers in it and releases the IP.
        cri.stop_pod_sandbox(&sandbox).await.expect("StopPodSandbox");
        let status = cri.container_status(&id).await.expect("ContainerStatus");
        assert_eq!(status.state(), ContainerState::ContainerExited);
        cri.remove_pod_sandbox(&sandbox).await.expect("RemovePodSandbox");
        let gone = cri.container_status(&id).await.expect_err("removed with its sandbox");
        assert!(gone.is_not_found(), "{gone:?}");
    });
}

/// Live (not zombie) processes whose command line mentions `needle`.
fn live_processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
            .unwrap_or(true);
        if !zombie && cmdline.contains(needle) {
            found.push(cmdline);
        }
    }
    found
}

#[test]
fn dropping_the_fixture_cleans_up_pods_left_running() {
    if let Some(why) = containerd::unavailable() {
        eprintln!("SKIPPED dropping_the_fixture_cleans_up_pods_left_running: {why}");
        return;
    }
    let ctrd = PrivateContainerd::start().unwrap_or_else(|e| panic!("private containerd: {e}"));
    let dir = ctrd.dir().to_owned();
    // containerd's command line names its config, its shims' name its socket: both in `dir`.
    let needle = dir.to_str().expect("utf-8").to_owned();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    // A pod on the bridge network with a running container, as a failed test would leave it.
    let netns = rt.block_on(async {
        let cri = Cri::connect(ctrd.socket()).await.expect("connect");
        let pod = sandbox_config(&ctrd, "leftover", false);
        let sandbox = cri.run_pod_sandbox(&pod, "").await.expect("RunPodSandbox");
        let config = container_config(ctrd.busybox_image(), "main", "sleep 3600", false);
        let id = cri.create_container(&sandbox, config, &pod).await.expect("CreateContainer");
        cri.start_container(&id).await.expect("StartContainer");
        let req = v1::PodSandboxStatusRequest { pod_sandbox_id: sandbox, verbose: true };
        let verbose = cri.runtime.clone().pod_sandbox_status(req).await.expect("PodSandboxStatus").into_inner();
        let info = verbose.info.get("info").cloned().unwrap_or_default();
        info.split('"').find(|p| p.starts_with("/var/run/netns/cni-")).map(str::to_owned).expect("netns in info")
    });
    assert!(Path::new(&netns).exists());
    let before = live_processes_mentioning(&needle);
    assert!(before.iter().any(|p| p.contains("containerd-shim")), "no shims in {before:?}");
    drop(ctrd);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(!Path::new(&netns).exists(), "{netns} left behind");
    assert_eq!(live_processes_mentioning(&needle), Vec::<String>::new(), "processes of the dropped containerd");
}
