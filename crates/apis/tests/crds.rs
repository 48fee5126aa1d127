//! The CRD manifests under `manifests/crds/` (and their copies in the cloudcore chart's
//! `crds/`, which helm needs inside the chart) are generated from the types, and the CRDs keep
//! upstream's names, group, scope and subresources.
//!
//! To regenerate the manifests after changing a type: `UPDATE_CRDS=1 cargo test -p kubeedge-apis --test crds`.

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kubeedge_apis::{crd_manifests, crds};

const REGENERATE: &str = "UPDATE_CRDS=1 cargo test -p kubeedge-apis --test crds";

fn crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/crds")
}

fn render(crd: &CustomResourceDefinition) -> String {
    let yaml = yaml_serde::to_string(crd).expect("a CRD serializes to YAML");
    format!(
        "# Generated from the Rust types in crates/apis. Do not edit; regenerate with:\n#   {REGENERATE}\n---\n{yaml}"
    )
}

#[test]
fn committed_manifests_match_the_types() {
    let update = std::env::var_os("UPDATE_CRDS").is_some_and(|v| v == "1");
    let dir = crds_dir();
    let mut stale = Vec::new();
    for manifest in crd_manifests() {
        let path = dir.join(manifest.path);
        let want = render(&manifest.crd);
        let file_name = Path::new(manifest.path).file_name().unwrap();
        let chart_copy = dir.join("../charts/cloudcore/crds").join(file_name);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &want).unwrap();
            std::fs::write(&chart_copy, &want).unwrap();
            continue;
        }
        if std::fs::read_to_string(&chart_copy).ok().as_deref() != Some(want.as_str()) {
            stale.push(format!("charts/cloudcore/crds/{} differs from what the types generate", file_name.display()));
        }
        match std::fs::read_to_string(&path) {
            Ok(have) if have == want => {}
            Ok(_) => stale.push(format!("{} differs from what the types generate", manifest.path)),
            Err(e) => stale.push(format!("{} cannot be read: {e}", manifest.path)),
        }
    }
    assert!(stale.is_empty(), "stale CRD manifests:\n  {}\nregenerate them with: {REGENERATE}", stale.join("\n  "));
}

#[test]
fn every_manifest_file_comes_from_a_type() {
    let known: Vec<PathBuf> = crd_manifests().iter().map(|m| crds_dir().join(m.path)).collect();
    let mut pending = vec![crds_dir()];
    let mut orphans = Vec::new();
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") && !known.contains(&path) {
                orphans.push(path.display().to_string());
            }
        }
    }
    assert!(orphans.is_empty(), "manifests with no type in kubeedge_apis::crd_manifests(): {orphans:?}");
}

#[test]
fn manifests_parse_back_to_the_definitions() {
    for manifest in crd_manifests() {
        let parsed: CustomResourceDefinition = yaml_serde::from_str(&render(&manifest.crd)).unwrap();
        assert_eq!(parsed, manifest.crd, "{}", manifest.path);
    }
}

/// Names, group, scope, versions and subresources as in upstream's `build/crds/reliablesyncs/`.
#[test]
fn reliablesyncs_crds_are_named_as_upstream() {
    let all: Vec<_> = crds().into_iter().filter(|c| c.spec.group == "reliablesyncs.kubeedge.io").collect();
    assert_eq!(all.len(), 2);
    for (name, kind, plural, singular, scope) in [
        ("objectsyncs.reliablesyncs.kubeedge.io", "ObjectSync", "objectsyncs", "objectsync", "Namespaced"),
        (
            "clusterobjectsyncs.reliablesyncs.kubeedge.io",
            "ClusterObjectSync",
            "clusterobjectsyncs",
            "clusterobjectsync",
            "Cluster",
        ),
    ] {
        let crd = all.iter().find(|c| c.metadata.name.as_deref() == Some(name)).unwrap_or_else(|| panic!("{name}"));
        let spec = &crd.spec;
        assert_eq!(spec.group, "reliablesyncs.kubeedge.io");
        assert_eq!(spec.scope, scope);
        assert_eq!(spec.names.kind, kind);
        assert_eq!(spec.names.plural, plural);
        assert_eq!(spec.names.singular.as_deref(), Some(singular));
        assert_eq!(spec.names.list_kind, Some(format!("{kind}List")));
        // Upstream declares no short names and no categories.
        assert_eq!(spec.names.short_names, None);
        assert_eq!(spec.names.categories, None);
        assert_eq!(spec.versions.len(), 1);
        let v = &spec.versions[0];
        assert_eq!((v.name.as_str(), v.served, v.storage), ("v1alpha1", true, true));
        let subresources = v.subresources.as_ref().expect("subresources");
        assert!(subresources.status.is_some() && subresources.scale.is_none());

        let schema = serde_json::to_value(v.schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap();
        for key in ["objectAPIVersion", "objectKind", "objectName"] {
            assert_eq!(schema["properties"]["spec"]["properties"][key]["type"], "string", "{name} spec.{key}");
        }
        assert_eq!(schema["properties"]["status"]["properties"]["objectResourceVersion"]["type"], "string");
    }
}

/// Names, group, scope and versions as in upstream's `build/crds/devices/` (v1beta1 only, the
/// stored version), and no status subresource: upstream merge-patches a DeviceStatus's `status`
/// through the main resource.
#[test]
fn device_crds_are_named_as_upstream() {
    let all: Vec<_> = crds().into_iter().filter(|c| c.spec.group == "devices.kubeedge.io").collect();
    assert_eq!(all.len(), 3);
    for (kind, plural, singular) in [
        ("Device", "devices", "device"),
        ("DeviceModel", "devicemodels", "devicemodel"),
        ("DeviceStatus", "devicestatuses", "devicestatus"),
    ] {
        namespaced_one_version(&all, "devices.kubeedge.io", (kind, plural, singular), "v1beta1");
    }
    let status = all.iter().find(|c| c.spec.names.kind == "DeviceStatus").unwrap();
    let schema =
        serde_json::to_value(status.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap())
            .unwrap();
    let twin = &schema["properties"]["status"]["properties"]["twins"]["items"]["properties"];
    for key in ["propertyName", "reported", "observedDesired"] {
        assert!(twin.get(key).is_some(), "status.twins[].{key}: {twin}");
    }
    let device = all.iter().find(|c| c.spec.names.kind == "Device").unwrap();
    let schema =
        serde_json::to_value(device.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap())
            .unwrap();
    let spec = &schema["properties"]["spec"]["properties"];
    for key in ["deviceModelRef", "nodeName", "properties", "protocol", "methods", "stateReport"] {
        assert!(spec.get(key).is_some(), "spec.{key}: {spec}");
    }
    assert_eq!(spec["protocol"]["properties"]["configData"]["x-kubernetes-preserve-unknown-fields"], true);
}

/// Names, group, scope, short names and validation as in upstream's `build/crds/router/`: no
/// subresources, no printer columns, `re` for RuleEndpoints only, the four Rule spec fields and
/// the endpoint type required, the endpoint type limited to upstream's three values.
#[test]
fn rules_crds_are_named_as_upstream() {
    let all: Vec<_> = crds().into_iter().filter(|c| c.spec.group == "rules.kubeedge.io").collect();
    assert_eq!(all.len(), 2);
    let mut schemas = Vec::new();
    for (kind, plural, singular, short_names) in [
        ("Rule", "rules", "rule", None),
        ("RuleEndpoint", "ruleendpoints", "ruleendpoint", Some(vec!["re".to_owned()])),
    ] {
        let crd = namespaced_one_version(&all, "rules.kubeedge.io", (kind, plural, singular), "v1");
        let (spec, name) = (&crd.spec, format!("{plural}.rules.kubeedge.io"));
        assert_eq!(spec.names.short_names, short_names, "{name}");
        assert_eq!(spec.names.categories, None);
        let v = &spec.versions[0];
        assert!(v.additional_printer_columns.is_none(), "{name} has no printer columns upstream");
        schemas.push(serde_json::to_value(v.schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap());
    }

    let rule = &schemas[0]["properties"];
    let spec = &rule["spec"];
    assert_eq!(spec["required"], serde_json::json!(["source", "sourceResource", "target", "targetResource"]));
    for key in ["source", "target"] {
        assert_eq!(spec["properties"][key]["type"], "string", "spec.{key}");
    }
    for key in ["sourceResource", "targetResource"] {
        assert_eq!(spec["properties"][key]["type"], "object", "spec.{key}");
        assert_eq!(spec["properties"][key]["additionalProperties"]["type"], "string", "spec.{key}");
    }
    let status = &rule["status"]["properties"];
    assert_eq!(status["successMessages"]["type"], "integer");
    assert_eq!(status["failMessages"]["type"], "integer");
    assert_eq!(status["errors"]["type"], "array");
    assert_eq!(status["errors"]["items"]["type"], "string");
    assert!(rule["status"].get("required").is_none(), "upstream requires no status field");

    let spec = &schemas[1]["properties"]["spec"];
    assert_eq!(spec["required"], serde_json::json!(["ruleEndpointType"]));
    assert_eq!(spec["properties"]["ruleEndpointType"]["type"], "string");
    assert_eq!(spec["properties"]["ruleEndpointType"]["enum"], serde_json::json!(["rest", "eventbus", "servicebus"]));
    assert_eq!(spec["properties"]["properties"]["type"], "object");
    assert_eq!(spec["properties"]["properties"]["additionalProperties"]["type"], "string");
    assert!(schemas[1]["properties"].get("status").is_none(), "RuleEndpoint has no status");
}

/// The CRD `{plural}.{group}` in `all`, checked to be namespaced with upstream's names, one
/// served and stored `version`, and no subresources (as upstream has none for these kinds).
fn namespaced_one_version<'a>(
    all: &'a [CustomResourceDefinition],
    group: &str,
    (kind, plural, singular): (&str, &str, &str),
    version: &str,
) -> &'a CustomResourceDefinition {
    let name = format!("{plural}.{group}");
    let crd = all.iter().find(|c| c.metadata.name.as_deref() == Some(&*name)).unwrap_or_else(|| panic!("{name}"));
    let spec = &crd.spec;
    assert_eq!(spec.scope, "Namespaced");
    assert_eq!(spec.names.kind, kind);
    assert_eq!(spec.names.plural, plural);
    assert_eq!(spec.names.singular.as_deref(), Some(singular));
    assert_eq!(spec.names.list_kind, Some(format!("{kind}List")));
    assert_eq!(spec.versions.len(), 1);
    let v = &spec.versions[0];
    assert_eq!((v.name.as_str(), v.served, v.storage), (version, true, true));
    assert!(v.subresources.is_none(), "{name} has no subresources upstream");
    crd
}

/// Names, scope and subresources as in upstream's `build/crds/operations/` (v1alpha2): cluster
/// scope, a status subresource, no short names or printer columns, upstream's spec keys
/// (`imageDigestGatter`, `imageSecrets`), `updateFields` required.
#[test]
fn operations_crds_are_named_as_upstream() {
    let all: Vec<_> = crds().into_iter().filter(|c| c.spec.group == "operations.kubeedge.io").collect();
    assert_eq!(all.len(), 3);
    let mut schemas = Vec::new();
    for (kind, plural) in [
        ("NodeUpgradeJob", "nodeupgradejobs"),
        ("ImagePrePullJob", "imageprepulljobs"),
        ("ConfigUpdateJob", "configupdatejobs"),
    ] {
        let name = format!("{plural}.operations.kubeedge.io");
        let crd = all.iter().find(|c| c.metadata.name.as_deref() == Some(name.as_str())).expect("the CRD");
        let spec = &crd.spec;
        assert_eq!(spec.scope, "Cluster", "{name}");
        assert_eq!((spec.names.kind.as_str(), spec.names.plural.as_str()), (kind, plural));
        assert_eq!(spec.names.singular.as_deref(), Some(kind.to_lowercase().as_str()));
        assert_eq!(spec.names.short_names, None, "{name}");
        assert_eq!(spec.versions.len(), 1);
        let v = &spec.versions[0];
        assert_eq!((v.name.as_str(), v.served, v.storage), ("v1alpha2", true, true));
        assert!(v.subresources.as_ref().is_some_and(|s| s.status.is_some()), "{name} has a status subresource");
        assert!(v.additional_printer_columns.is_none(), "{name}");
        schemas.push(serde_json::to_value(v.schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap());
    }
    let upgrade = &schemas[0]["properties"]["spec"]["properties"];
    for key in [
        "version",
        "image",
        "imageDigestGatter",
        "nodeNames",
        "labelSelector",
        "concurrency",
        "timeoutSeconds",
        "checkItems",
        "failureTolerate",
        "requireConfirmation",
    ] {
        assert!(upgrade.get(key).is_some(), "NodeUpgradeJob spec.{key}");
    }
    assert_eq!(upgrade["failureTolerate"]["type"], "string");
    let template = &schemas[1]["properties"]["spec"]["properties"]["imagePrePullTemplate"]["properties"];
    for key in ["images", "imageSecrets", "retryTimes", "nodeNames", "labelSelector", "checkItems"] {
        assert!(template.get(key).is_some(), "ImagePrePullJob spec.imagePrePullTemplate.{key}");
    }
    let update = &schemas[2]["properties"]["spec"];
    assert_eq!(update["required"], serde_json::json!(["updateFields"]));
    for s in &schemas {
        let node = &s["properties"]["status"]["properties"]["nodeStatus"]["items"]["properties"];
        for key in ["nodeName", "phase", "reason", "actionFlow"] {
            assert!(node.get(key).is_some(), "status.nodeStatus[].{key}");
        }
    }
}
