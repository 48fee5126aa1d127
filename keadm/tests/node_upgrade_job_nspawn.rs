//! NodeUpgradeJobs end to end on real systemd: three edge nodes, each `keadm join`ed in its own
//! systemd-nspawn machine (edgecore.service with the task manager) against a cloudcore with the
//! TaskManager, sharing a private containerd that holds the images.
//!
//! 1. A job from this build's version to 1.99.0 (an edgecore stamped 1.99.0 in an image) on the
//!    3 nodes with concurrency 1: each node's task runs Check → WaitingConfirmation → BackUp →
//!    Upgrade, never two at once; all end on 1.99.0 (the machines' binaries, the Nodes'
//!    kubeletVersion), each node Successful with `historicVersion` → `currentVersion`, the job
//!    Completed.
//! 2. A job to 1.97.0, whose image holds an edgecore that exits at once, with no failure
//!    tolerated: the first node's upgrade is rolled back to 1.99.0 automatically (it runs and
//!    connects again), that node is Failure with the reason, the job is Failure and the other
//!    two nodes are never started.
//!
//! SKIPPED loudly without root, systemd-nspawn or containerd.

mod nspawn_edge;

use std::path::{Path, PathBuf};
use std::time::Instant;

use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kubeedge_apis::operations::task::TaskType;
use kubeedge_testkit::nspawn::{Bind, Machine};
use kubeedge_testkit::{TempDir, until};
use nspawn_edge::*;
use serde_json::{Value, json};

const NODES: [&str; 3] = ["edge-u1", "edge-u2", "edge-u3"];

fn resource() -> ApiResource {
    let api_version = kubeedge_apis::operations::v1alpha2::API_VERSION;
    ApiResource {
        group: kubeedge_apis::operations::GROUP.into(),
        version: "v1alpha2".into(),
        api_version: api_version.into(),
        kind: TaskType::NodeUpgrade.kind().into(),
        plural: "nodeupgradejobs".into(),
    }
}

fn jobs(cloud: &kubeedge_e2e::CloudSide) -> Api<DynamicObject> {
    Api::all_with(cloud.client(), &resource())
}

fn status(cloud: &kubeedge_e2e::CloudSide, name: &str) -> Value {
    let o = cloud.rt.block_on(jobs(cloud).get(name)).unwrap();
    o.data.get("status").cloned().unwrap_or(Value::Null)
}

fn node_entry<'a>(st: &'a Value, node: &str) -> &'a Value {
    st["nodeStatus"].as_array().unwrap().iter().find(|n| n["nodeName"] == node).unwrap_or_else(|| panic!("{st}"))
}

fn actions(entry: &Value) -> Vec<String> {
    entry["actionFlow"].as_array().map_or_else(Vec::new, |a| {
        a.iter()
            .map(|x| format!("{}={}", x["action"].as_str().unwrap_or(""), x["status"].as_str().unwrap_or("")))
            .collect()
    })
}

/// Creates the job and polls it until it is Completed or Failure; returns its status and the
/// most nodes seen InProgress at once.
fn run_job(cloud: &kubeedge_e2e::CloudSide, name: &str, spec: Value, machines: &[Machine]) -> (Value, usize) {
    let mut o = DynamicObject::new(name, &resource());
    o.data = json!({ "spec": spec });
    cloud.rt.block_on(jobs(cloud).create(&PostParams::default(), &o)).unwrap();
    let mut most = 0;
    let t = Instant::now();
    let st = until(&format!("job {name} done"), || {
        let st = status(cloud, name);
        let running =
            st["nodeStatus"].as_array().map_or(0, |n| n.iter().filter(|n| n["phase"] == "InProgress").count());
        most = most.max(running);
        if t.elapsed().as_secs() > 100 {
            for m in machines {
                eprintln!("journal:\n{}", m.journal("edgecore.service"));
            }
            panic!("job {name} still running: {st}");
        }
        matches!(st["phase"].as_str(), Some("Completed" | "Failure")).then_some(st)
    });
    eprintln!("MEASURED NodeUpgradeJob {name}: {:.2} s to {}", t.elapsed().as_secs_f64(), st["phase"]);
    (st, most)
}

#[test]
fn node_upgrade_jobs_on_three_nodes_under_systemd() {
    if let Some(why) = skip_reason() {
        kubeedge_testkit::skip("node_upgrade_jobs_on_three_nodes_under_systemd", &why);
        return;
    }
    let dir = TempDir::new();
    let original = format!("v{}", kubeedge_model::version::version());
    let art: PathBuf = dir.path().join("artifacts");
    std::fs::create_dir(&art).unwrap();
    let good = stamped("1.99.0", &art.join("scratch"));
    image_tar("localhost/kubeedge/edgecore:v1.99.0", &good, &art.join("good.tar"));
    image_tar("localhost/kubeedge/edgecore:v1.97.0", &broken_edgecore("1.97.0"), &art.join("broken.tar"));
    drop(good);

    let cloud =
        kubeedge_e2e::CloudSide::start_with(dir.path(), &[(&["modules", "taskManager", "enable"], "true".into())]);
    let containerd = kubeedge_testkit::containerd::PrivateContainerd::start().unwrap();
    import(containerd.socket(), &art.join("good.tar"));
    import(containerd.socket(), &art.join("broken.tar"));
    let endpoint = format!("unix://{}", containerd.socket().display());
    let keadm = Path::new(env!("CARGO_BIN_EXE_keadm")).to_str().unwrap();
    let tasks = format!("modules.taskManager.enable=true,modules.taskManager.keadmPath={keadm}");
    let mut machines = Vec::new();
    let mut monitors = Vec::new();
    for node in NODES {
        let usr_local_bin = dir.path().join(format!("usr-local-bin-{node}"));
        std::fs::create_dir(&usr_local_bin).unwrap();
        let m = Machine::boot(&[
            Bind::ro(bin_dir()),
            Bind::rw(containerd.dir(), containerd.dir()),
            Bind::rw(&usr_local_bin, "/usr/local/bin"),
        ])
        .unwrap();
        monitors.push(join(&m, &cloud, &endpoint, node, &tasks));
        machines.push(m);
    }
    for node in NODES {
        until(&format!("{node} on {original}"), || {
            kubelet_version(&cloud, node).filter(|v| v.ends_with(&format!("-kubeedge-{original}"))).map(drop)
        });
    }

    // 1. Everyone to 1.99.0, one at a time.
    let spec = json!({"version": "v1.99.0", "image": "localhost/kubeedge/edgecore", "nodeNames": NODES,
        "concurrency": 1, "timeoutSeconds": 120, "checkItems": ["disk"]});
    let (st, most) = run_job(&cloud, "to-199", spec, &machines);
    assert_eq!(st["phase"], "Completed", "{st}");
    assert_eq!(most, 1, "more than one node upgraded at once: {st}");
    for (node, m) in NODES.iter().zip(&machines) {
        let e = node_entry(&st, node);
        assert_eq!(e["phase"], "Successful", "{st}");
        assert_eq!(
            actions(e),
            ["Check=True", "WaitingConfirmation=True", "BackUp=True", "Upgrade=True"],
            "{node}: {st}"
        );
        assert_eq!(
            (e["historicVersion"].as_str(), e["currentVersion"].as_str()),
            (Some(original.as_str()), Some("v1.99.0"))
        );
        assert!(installed(m).starts_with("edgecore 1.99.0"), "{node}: {}", installed(m));
        wait_kubelet_version(&cloud, node, "v1.99.0");
    }

    // 2. To a version whose edgecore exits at once: the first node rolls back, the rest wait.
    let spec = json!({"version": "v1.97.0", "image": "localhost/kubeedge/edgecore", "nodeNames": NODES,
        "concurrency": 1, "timeoutSeconds": 120, "failureTolerate": "0"});
    let (st, _) = run_job(&cloud, "to-197", spec, &machines);
    assert_eq!(st["phase"], "Failure", "{st}");
    assert_eq!(
        st["reason"], "the number of failed nodes is 1/3, which exceeds the failure tolerance threshold",
        "{st}"
    );
    let first = node_entry(&st, NODES[0]);
    assert_eq!(first["phase"], "Failure", "{st}");
    let flow = actions(first);
    assert_eq!(flow.last().map(String::as_str), Some("RollBack=True"), "{st}");
    assert!(flow.contains(&"Upgrade=False".to_owned()), "{st}");
    let reason = first["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("v1.97.0") && reason.contains("rolled back to v1.99.0"), "{st}");
    for node in &NODES[1..] {
        let e = node_entry(&st, node);
        assert_eq!(e["phase"], "Pending", "{node} was started: {st}");
        assert!(actions(e).is_empty(), "{st}");
    }
    for (m, monitor) in machines.iter().zip(&monitors) {
        assert!(installed(m).starts_with("edgecore 1.99.0"), "{}", installed(m));
        until("edgecore 1.99.0 connected", || connected(m, monitor).then_some(()));
    }
    eprintln!("to-197 first node: {flow:?}, reason {reason:?}");
    for m in machines {
        m.stop();
    }
    cloud.stop();
}
