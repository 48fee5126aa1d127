//! NodeRestriction's rules for what a node writes, on plain JSON (objects from the edge are
//! decoded no further than needed): a node creates only mirror pods of its own that reference
//! no other API object, and never sets the labels reserved for the cluster's administrators.

use serde_json::Value;

/// The annotation that makes a pod a mirror pod.
pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";
/// Node labels under this prefix are the administrators' (Kubernetes' NodeRestriction).
pub const RESTRICTED_LABEL_PREFIX: &str = "node-restriction.kubernetes.io/";
/// Node annotations only cloudcore writes (the join API's record of a node's certificate).
pub const PROTECTED_ANNOTATIONS: [&str; 2] =
    ["kubeedge.io/client-certificate-not-after", "kubeedge.io/registered-by-edge"];

/// A write NodeRestriction refuses, with Kubernetes' message (the reason of a 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Restricted(pub String);

impl From<Restricted> for String {
    fn from(r: Restricted) -> Self {
        r.0
    }
}

/// Whether `pod` (a Pod as JSON) is a mirror pod that `node` may create; otherwise Kubernetes'
/// NodeRestriction message.
pub fn check(node: &str, pod: &Value) -> Result<(), Restricted> {
    let has_mirror =
        pod.pointer("/metadata/annotations").and_then(Value::as_object).is_some_and(|a| a.contains_key(CONFIG_MIRROR));
    if !has_mirror {
        return Err(Restricted(format!(
            "pod does not have {CONFIG_MIRROR:?} annotation, node {node:?} can only create mirror pods"
        )));
    }
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    if spec.get("nodeName").and_then(Value::as_str) != Some(node) {
        return Err(Restricted(format!("node {node:?} can only create pods with spec.nodeName set to itself")));
    }
    let non_empty = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    if non_empty(spec.get("serviceAccountName")) || non_empty(spec.get("serviceAccount")) {
        return Err(Restricted(format!("node {node:?} can not create pods that reference a service account")));
    }
    let volumes = spec.get("volumes").and_then(Value::as_array).cloned().unwrap_or_default();
    let projected = |kind: &str| {
        volumes.iter().any(|v| {
            v.pointer("/projected/sources")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(|s| s.get(kind).is_some()))
        })
    };
    let containers = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .collect::<Vec<_>>();
    let env_refs = |key_ref: &str, from_ref: &str| {
        containers.iter().any(|c| {
            c.get("env")
                .and_then(Value::as_array)
                .is_some_and(|e| e.iter().any(|e| e.pointer(&format!("/valueFrom/{key_ref}")).is_some()))
                || c.get("envFrom")
                    .and_then(Value::as_array)
                    .is_some_and(|e| e.iter().any(|e| e.get(from_ref).is_some()))
        })
    };
    let secrets = volumes.iter().any(|v| v.get("secret").is_some())
        || projected("secret")
        || env_refs("secretKeyRef", "secretRef")
        || spec.get("imagePullSecrets").and_then(Value::as_array).is_some_and(|s| !s.is_empty());
    if secrets {
        return Err(Restricted(format!("node {node:?} can not create pods that reference secrets")));
    }
    if volumes.iter().any(|v| v.get("configMap").is_some())
        || projected("configMap")
        || env_refs("configMapKeyRef", "configMapRef")
    {
        return Err(Restricted(format!("node {node:?} can not create pods that reference configmaps")));
    }
    if projected("serviceAccountToken") {
        return Err(Restricted(format!("node {node:?} can not create pods that reference a service account")));
    }
    if volumes.iter().any(|v| v.get("persistentVolumeClaim").is_some() || v.get("ephemeral").is_some()) {
        return Err(Restricted(format!("node {node:?} can not create pods that reference persistentvolumeclaims")));
    }
    let owners = pod.pointer("/metadata/ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
    match owners.as_slice() {
        [] => Ok(()),
        [o] if o.get("kind").and_then(Value::as_str) == Some("Node")
            && o.get("apiVersion").and_then(Value::as_str) == Some("v1")
            && o.get("name").and_then(Value::as_str) == Some(node) =>
        {
            Ok(())
        }
        _ => Err(Restricted(format!("node {node:?} can only create pods with a single owner reference set to itself"))),
    }
}

/// The labels reserved for administrators that `node` (a Node, or a patch of one, as JSON) sets:
/// (key, value; `null` for a removal in a patch).
pub fn restricted_labels(node: &Value) -> Vec<(String, Value)> {
    node.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .filter(|(k, _)| k.starts_with(RESTRICTED_LABEL_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// KubeEdge's own annotations that `node` (a Node, or a patch of one) sets.
pub fn protected_annotations(node: &Value) -> Vec<(String, Value)> {
    node.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .filter(|(k, _)| PROTECTED_ANNOTATIONS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a patch of a Node replaces its spec, labels or annotations wholesale (`null`, or a
/// strategic-merge directive), which a node may not do: what it would remove is not visible.
pub fn replaces_wholesale(patch: &Value) -> bool {
    let directive = |v: &Value| v.as_object().is_some_and(|o| o.keys().any(|k| k.starts_with('$')));
    let at = |p: &str| patch.pointer(p);
    [at("/spec"), at("/metadata/labels"), at("/metadata/annotations"), at("/metadata")]
        .into_iter()
        .flatten()
        .any(|v| v.is_null() || directive(v))
        || at("/spec/taints").is_some_and(directive)
        || patch.get("$patch").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mirror(node: &str, spec: Value) -> Value {
        let mut spec = spec;
        spec["nodeName"] = json!(node);
        json!({"metadata": {"name": "static-web-edge-a", "annotations": {CONFIG_MIRROR: "h"}}, "spec": spec})
    }

    #[test]
    fn only_plain_mirror_pods_of_the_node_itself() {
        let plain = json!({"containers": [{"name": "c", "image": "busybox"}], "hostPID": true, "volumes": [{"name": "root", "hostPath": {"path": "/"}}]});
        assert_eq!(check("edge-a", &mirror("edge-a", plain.clone())), Ok(()));
        assert!(
            check("edge-a", &mirror("edge-b", plain.clone())).unwrap_err().0.contains("spec.nodeName set to itself")
        );
        let mut not_mirror = mirror("edge-a", plain);
        not_mirror["metadata"]["annotations"] = json!({});
        assert!(check("edge-a", &not_mirror).unwrap_err().0.contains("can only create mirror pods"));
        let cases = [
            (json!({"serviceAccountName": "admin", "containers": []}), "service account"),
            (json!({"volumes": [{"name": "s", "secret": {"secretName": "x"}}], "containers": []}), "secrets"),
            (json!({"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "x"}}]}]}), "secrets"),
            (
                json!({"containers": [{"name": "c", "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "x", "key": "k"}}}]}]}),
                "configmaps",
            ),
            (
                json!({"volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}], "containers": []}),
                "service account",
            ),
            (
                json!({"volumes": [{"name": "p", "persistentVolumeClaim": {"claimName": "x"}}], "containers": []}),
                "persistentvolumeclaims",
            ),
            (json!({"imagePullSecrets": [{"name": "x"}], "containers": []}), "secrets"),
        ];
        for (spec, what) in cases {
            let err = check("edge-a", &mirror("edge-a", spec.clone())).unwrap_err();
            assert!(err.0.contains(what), "{spec}: {err}");
        }
        let mut owned = mirror("edge-a", json!({"containers": []}));
        owned["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "v1", "kind": "Node", "name": "edge-a", "uid": "u"}]);
        assert_eq!(check("edge-a", &owned), Ok(()));
        owned["metadata"]["ownerReferences"][0]["name"] = json!("edge-b");
        assert!(check("edge-a", &owned).is_err());
    }

    #[test]
    fn wholesale_replacements_are_seen() {
        assert!(replaces_wholesale(&json!({"spec": null})));
        assert!(replaces_wholesale(&json!({"metadata": {"labels": null}})));
        assert!(replaces_wholesale(&json!({"spec": {"$patch": "replace"}})));
        assert!(replaces_wholesale(&json!({"metadata": {"labels": {"$patch": "replace", "a": "b"}}})));
        assert!(!replaces_wholesale(&json!({"metadata": {"labels": {"a": "b"}}, "spec": {"unschedulable": true}})));
        let n = json!({"metadata": {"annotations": {"kubeedge.io/registered-by-edge": "true", "x": "y"}}});
        assert_eq!(protected_annotations(&n).len(), 1);
    }

    #[test]
    fn restricted_labels_are_found() {
        let n = json!({"metadata": {"labels": {"node-restriction.kubernetes.io/zone": "a", "kubernetes.io/hostname": "h"}}});
        assert_eq!(restricted_labels(&n), vec![("node-restriction.kubernetes.io/zone".to_owned(), json!("a"))]);
        assert!(restricted_labels(&json!({})).is_empty());
    }
}
