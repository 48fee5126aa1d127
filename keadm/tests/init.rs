//! `keadm init` and `keadm reset` against apiserver-lite (in-process, free port): init stores
//! exactly what the chart renders (helm template when helm is installed, else keadm manifest,
//! which chart.rs proves equal), CRDs Established; --dry-run changes nothing; a second init is
//! an error and --force re-applies; reset removes it. And the real helm installs the chart into
//! apiserver-lite, after which keadm init sees the release.

mod common;

use std::time::Instant;

use common::{Cluster, chart_dir, contains, docs, helm, keadm, path_of, run};

const ADV: &str = "cloudCore.modules.cloudHub.advertiseAddress[0]=10.0.0.1";

/// The kinds and names in namespace kubeedge, and the chart's cluster-scoped objects.
fn installed(c: &Cluster) -> Vec<String> {
    let mut out = Vec::new();
    for (prefix, plural) in [
        ("/api/v1", "serviceaccounts"),
        ("/api/v1", "configmaps"),
        ("/api/v1", "services"),
        ("/apis/apps/v1", "deployments"),
        ("/apis/rbac.authorization.k8s.io/v1", "roles"),
        ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    ] {
        let list = c.get(&format!("{prefix}/namespaces/kubeedge/{plural}?labelSelector=kubeedge%3Dcloudcore")).unwrap();
        for item in list["items"].as_array().unwrap() {
            out.push(format!("{plural}/{}", item["metadata"]["name"].as_str().unwrap()));
        }
    }
    for plural in ["clusterroles", "clusterrolebindings"] {
        let list =
            c.get(&format!("/apis/rbac.authorization.k8s.io/v1/{plural}?labelSelector=kubeedge%3Dcloudcore")).unwrap();
        for item in list["items"].as_array().unwrap() {
            out.push(format!("{plural}/{}", item["metadata"]["name"].as_str().unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn init_applies_what_the_chart_renders_and_reset_removes_it() {
    let c = Cluster::start();
    let kc = c.kc();
    let flags = ["--kube-config", kc, "--advertise-address", "10.0.0.1"];
    let with = |cmd: &str, more: &[&str]| {
        let mut a = vec![cmd];
        a.extend_from_slice(&flags);
        a.extend_from_slice(more);
        run(keadm(), &a)
    };

    // --dry-run: the plan, nothing written.
    let (ok, out, err) = with("init", &["--dry-run"]);
    assert!(ok, "{err}");
    assert!(out.contains("[dry-run] would apply Deployment kubeedge/cloudcore"), "{out}");
    assert!(out.contains("would apply CustomResourceDefinition objectsyncs.reliablesyncs.kubeedge.io"), "{out}");
    assert!(c.get("/api/v1/namespaces/kubeedge").is_none(), "dry-run created the namespace");
    assert!(
        c.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/objectsyncs.reliablesyncs.kubeedge.io")
            .is_none()
    );

    let started = Instant::now();
    let (ok, out, err) = with("init", &[]);
    eprintln!("keadm init against apiserver-lite took {:?}", started.elapsed());
    assert!(ok, "{out}{err}");
    assert!(out.contains("keadm gettoken"), "{out}");

    // What is stored is what helm renders (each rendered field, as the server stored it).
    let rendered = match helm("init_applies_what_the_chart_renders (compared with keadm manifest)") {
        Some(helm) => {
            let chart = chart_dir();
            let args =
                ["template", "cloudcore", chart.to_str().unwrap(), "-n", "kubeedge", "--include-crds", "--set", ADV];
            let (ok, out, err) = run(&helm, &args);
            assert!(ok, "{err}");
            out
        }
        None => with("manifest", &[]).1,
    };
    let rendered = docs(&rendered);
    assert_eq!(rendered.len(), 18, "10 CRDs, SA, ConfigMap, 4 RBAC objects, Service, Deployment");
    for want in &rendered {
        let path = path_of(want);
        let have = c.get(&path).unwrap_or_else(|| panic!("{path} was not created"));
        contains(&have, want, &path).unwrap();
    }
    let mut want_names: Vec<String> = rendered
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
        .map(|o| format!("{}/{}", path_of(o).rsplit('/').nth(1).unwrap(), o["metadata"]["name"].as_str().unwrap()))
        .collect();
    want_names.sort();
    assert_eq!(installed(&c), want_names, "init created other chart objects than helm renders");
    for crd in [
        "objectsyncs.reliablesyncs.kubeedge.io",
        "clusterobjectsyncs.reliablesyncs.kubeedge.io",
        "devices.devices.kubeedge.io",
        "devicemodels.devices.kubeedge.io",
        "devicestatuses.devices.kubeedge.io",
        "rules.rules.kubeedge.io",
        "ruleendpoints.rules.kubeedge.io",
        "nodeupgradejobs.operations.kubeedge.io",
        "imageprepulljobs.operations.kubeedge.io",
        "configupdatejobs.operations.kubeedge.io",
    ] {
        let have = c.get(&format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}")).unwrap();
        let conditions = have["status"]["conditions"].as_array().unwrap();
        assert!(conditions.iter().any(|x| x["type"] == "Established" && x["status"] == "True"), "{crd}: {have}");
    }
    let cm = c.get("/api/v1/namespaces/kubeedge/configmaps/cloudcore").unwrap();
    assert_eq!(cm["metadata"]["managedFields"][0]["manager"], "keadm");

    // A second init is refused; --force re-applies.
    let (ok, _, err) = with("init", &[]);
    assert!(!ok && err.contains("cloudcore is already installed (deployment kubeedge/cloudcore exists)"), "{err}");
    assert!(err.contains("--force"), "{err}");
    let (ok, out, err) = with("init", &["--force", "--set", "cloudCore.replicaCount=2"]);
    assert!(ok, "{out}{err}");
    assert_eq!(c.get("/apis/apps/v1/namespaces/kubeedge/deployments/cloudcore").unwrap()["spec"]["replicas"], 2);

    // Reset removes it all but the CRDs (as upstream); a second reset has nothing to do.
    let (ok, out, err) = run(keadm(), &["reset", "--kube-config", kc, "--force"]);
    assert!(ok, "{out}{err}");
    assert!(c.get("/api/v1/namespaces/kubeedge").is_none(), "{out}");
    assert_eq!(installed(&c), Vec::<String>::new());
    assert!(
        c.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/objectsyncs.reliablesyncs.kubeedge.io")
            .is_some()
    );
    let (ok, out, err) = run(keadm(), &["reset", "--kube-config", kc, "--force"]);
    assert!(ok && out.contains("nothing to do"), "{out}{err}");
    // And init works again after a reset.
    let (ok, out, err) = with("init", &[]);
    assert!(ok, "{out}{err}");
}

#[test]
fn init_checks_the_config_and_the_cluster_first() {
    let c = Cluster::start();
    let (ok, _, err) = run(
        keadm(),
        &["init", "--kube-config", c.kc(), "--set", ADV, "--set", "cloudCore.modules.cloudStream.enable=yes"],
    );
    assert!(!ok && err.contains("preflight check cloudcore.yaml failed") && err.contains("cloudStream"), "{err}");
    assert!(c.get("/api/v1/namespaces/kubeedge").is_none());
    let (ok, _, err) = run(keadm(), &["init", "--kube-config", "/nonexistent/kubeconfig", "--set", ADV]);
    assert!(!ok && err.contains("--kube-config /nonexistent/kubeconfig"), "{err}");
}

#[test]
fn helm_installs_the_chart_into_apiserver_lite() {
    let Some(helm) = helm("helm_installs_the_chart_into_apiserver_lite") else { return };
    let c = Cluster::start();
    let chart = chart_dir();
    let home = c.dir.path().join("helm");
    let helm_run = |args: &[&str]| {
        let out = std::process::Command::new(&helm)
            .args(args)
            .args(["--kubeconfig", c.kc()])
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"))
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let (ok, out) = helm_run(&[
        "install",
        "cloudcore",
        chart.to_str().unwrap(),
        "-n",
        "kubeedge",
        "--create-namespace",
        "--set",
        ADV,
    ]);
    assert!(ok, "helm install: {out}");
    let (ok, out) = helm_run(&["list", "-n", "kubeedge"]);
    assert!(ok && out.contains("cloudcore") && out.contains("deployed"), "{out}");
    assert!(c.get("/apis/apps/v1/namespaces/kubeedge/deployments/cloudcore").is_some());
    assert!(
        c.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/objectsyncs.reliablesyncs.kubeedge.io")
            .is_some()
    );

    // keadm sees the installation.
    let (ok, _, err) = run(keadm(), &["init", "--kube-config", c.kc(), "--set", ADV]);
    assert!(!ok && err.contains("already installed"), "{err}");

    let (ok, out) = helm_run(&["uninstall", "cloudcore", "-n", "kubeedge"]);
    assert!(ok, "helm uninstall: {out}");
    assert!(c.get("/apis/apps/v1/namespaces/kubeedge/deployments/cloudcore").is_none());
}
