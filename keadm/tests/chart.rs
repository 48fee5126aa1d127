//! The cloudcore chart and `keadm manifest`: helm lints the chart strictly, and keadm's own
//! rendering equals `helm template` of the same chart and values, document by document, for the
//! defaults, `--set`s, profiles and the flags that imply values. Tests that need helm print
//! SKIPPED when it is missing (hack/install-deps.sh installs it; CI has it).

mod common;

use common::{chart_dir, docs, helm, keadm, repo, run};

const ADV: &str = "cloudCore.modules.cloudHub.advertiseAddress[0]=10.0.0.1";

fn helm_template(helm: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let chart = chart_dir();
    let mut all = vec!["template", "cloudcore", chart.to_str().unwrap(), "--namespace", "kubeedge"];
    all.extend_from_slice(args);
    run(helm, &all)
}

/// Renders with keadm and with helm and compares the parsed documents, in order.
fn same(keadm_args: &[&str], helm_args: &[&str]) {
    let helm = helm("manifest_equals_helm_template").expect("checked by the caller");
    let (ok, want, err) = helm_template(&helm, helm_args);
    assert!(ok, "helm template {helm_args:?}: {err}");
    let mut args = vec!["manifest"];
    args.extend_from_slice(keadm_args);
    let (ok, have, err) = run(keadm(), &args);
    assert!(ok, "keadm {args:?}: {err}");
    let (have, want) = (docs(&have), docs(&want));
    let kinds = |d: &[serde_json::Value]| {
        d.iter().map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"])).collect::<Vec<_>>()
    };
    assert_eq!(kinds(&have), kinds(&want), "keadm {keadm_args:?} vs helm {helm_args:?}");
    for (h, w) in have.iter().zip(&want) {
        assert_eq!(h, w, "keadm {keadm_args:?} vs helm {helm_args:?}");
    }
}

#[test]
fn helm_lint_strict_passes() {
    let Some(helm) = helm("helm_lint_strict_passes") else { return };
    let (ok, out, err) = run(&helm, &["lint", "--strict", chart_dir().to_str().unwrap(), "--set", ADV]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(&helm, &["lint", "--strict", chart_dir().to_str().unwrap()]);
    assert!(ok, "lint with the default values: {out}{err}");
}

#[test]
fn manifest_equals_helm_template() {
    if helm("manifest_equals_helm_template").is_none() {
        return;
    }
    // Defaults (plus the one required value), CRDs included.
    same(&["--advertise-address", "10.0.0.1"], &["--include-crds", "--set", ADV]);
    // Many --sets (repeated, comma-joined, lists, integers that print as floats would not).
    let sets = [
        "--set",
        "cloudCore.hostNetWork=false",
        "--set",
        "prometheus.serviceMonitor.enable=true,prometheus.prometheusRule.enable=true",
        "--set",
        "cloudCore.modules.dynamicController.enable=true",
        "--set",
        "cloudCore.modules.cloudHub.dnsNames[0]=cloudcore.example.com",
        "--set",
        "cloudCore.nodeSelector.zone=a",
        "--set",
        "cloudCore.modules.cloudHub.nodeLimit=1000000",
        "--set",
        "cloudCore.tolerations[0].key=x,cloudCore.tolerations[0].operator=Exists",
        "--set",
        "cloudCore.resources=null",
        "--set",
        "cloudCore.service.annotations.a\\.b/c=d",
    ];
    let mut k = vec!["--skip-crds", "--advertise-address", "10.0.0.1,10.0.0.2"];
    k.extend_from_slice(&sets);
    let mut h = sets.to_vec();
    h.extend_from_slice(&["--set", ADV, "--set", "cloudCore.modules.cloudHub.advertiseAddress[1]=10.0.0.2"]);
    same(&k, &h);
    // The built-in profile, the flags that imply values, and a values file as --profile.
    let profile = repo().join("manifests/profiles/version.yaml");
    same(
        &["--profile", "version=1.2.3", "--advertise-address", "10.0.0.1"],
        &["--include-crds", "-f", profile.to_str().unwrap(), "--set", "cloudCore.image.tag=v1.2.3", "--set", ADV],
    );
    same(
        &["--skip-crds", "--image-repository", "registry.local/ke/", "--kubeedge-version", "v9.0.0", "--set", ADV],
        &["--set", "cloudCore.image.repository=registry.local/ke/cloudcore,cloudCore.image.tag=v9.0.0", "--set", ADV],
    );
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, "cloudCore:\n  replicaCount: 3\n  modules:\n    cloudHub:\n      advertiseAddress: [192.0.2.7]\n      nodeLimit: 1500000\n").unwrap();
    same(&["--skip-crds", "--profile", values.to_str().unwrap()], &["-f", values.to_str().unwrap()]);
}

#[test]
fn a_missing_advertise_address_fails_in_both_with_the_same_message() {
    let want = "cloudCore.modules.cloudHub.advertiseAddress: set at least one IP address";
    let (ok, _, err) = run(keadm(), &["manifest"]);
    assert!(!ok && err.contains(want), "{err}");
    let Some(helm) = helm("a_missing_advertise_address_fails_in_both_with_the_same_message") else { return };
    let (ok, _, err) = helm_template(&helm, &[]);
    assert!(!ok && err.contains(want), "{err}");
}

#[test]
fn bad_flags_are_named() {
    for (args, flag) in [
        (vec!["manifest", "--advertise-address", "cloud.example.com"], "--advertise-address"),
        (vec!["manifest", "--profile", "edgemesh=1"], "--profile"),
        (vec!["manifest", "--profile", "/nonexistent/values.yaml"], "--profile"),
        (vec!["manifest", "--set", "noequals"], "--set"),
        (vec!["manifest", "--set", ADV, "--manifests", "/nonexistent.yaml"], "--manifests"),
    ] {
        let (ok, _, err) = run(keadm(), &args);
        assert!(!ok && err.contains(flag), "{args:?}: {err}");
    }
}

/// One source for the CRDs: the chart's copies are the generated manifests/crds files.
#[test]
fn chart_crds_are_the_generated_ones() {
    let files = [
        ("reliablesyncs", "objectsync_v1alpha1.yaml"),
        ("reliablesyncs", "cluster_objectsync_v1alpha1.yaml"),
        ("devices", "devices_v1beta1_device.yaml"),
        ("devices", "devices_v1beta1_devicemodel.yaml"),
        ("devices", "devices_v1beta1_devicestatus.yaml"),
        ("router", "router_v1_rule.yaml"),
        ("router", "router_v1_ruleEndpoint.yaml"),
        ("operations", "operations_v1alpha2_nodeupgradejob.yaml"),
        ("operations", "operations_v1alpha2_imageprepulljob.yaml"),
        ("operations", "operations_v1alpha2_configupdatejob.yaml"),
    ];
    for (dir, name) in files {
        let generated = std::fs::read_to_string(repo().join("manifests/crds").join(dir).join(name)).unwrap();
        let chart = std::fs::read_to_string(chart_dir().join("crds").join(name)).unwrap();
        assert!(
            generated == chart,
            "manifests/charts/cloudcore/crds/{name} differs from manifests/crds/{dir}/{name}; \
             regenerate both with UPDATE_CRDS=1 cargo test -p kubeedge-apis --test crds"
        );
    }
    let count = std::fs::read_dir(chart_dir().join("crds")).unwrap().count();
    assert_eq!(count, files.len(), "the chart has CRDs that manifests/crds does not");
}

/// The manifest stream holds the extra --manifests first, then CRDs, then the chart.
#[test]
fn extra_manifests_come_first() {
    let dir = tempfile::tempdir().unwrap();
    let extra = dir.path().join("extra.yaml");
    std::fs::write(&extra, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n  namespace: kubeedge\n")
        .unwrap();
    let (ok, out, err) = run(keadm(), &["manifest", "--set", ADV, "-f", extra.to_str().unwrap()]);
    assert!(ok, "{err}");
    let d = docs(&out);
    assert_eq!(d[0]["metadata"]["name"], "extra");
    assert_eq!(d[1]["kind"], "CustomResourceDefinition");
    assert_eq!(d.last().unwrap()["kind"], "Deployment");
}
