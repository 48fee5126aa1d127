//! A minimal OpenAPI v3 surface: `/openapi/v3` (the index of group-version documents) and one
//! document per group version listing each resource's paths and operations, with the
//! `x-kubernetes-group-version-kind` extension and the query parameters the server honours.
//!
//! kubectl reads it to learn that the server validates fields itself (`fieldValidation` on
//! PATCH operations) before sending objects; without it, `kubectl create/apply` refuses to run
//! unless validation is turned off. Schemas of object bodies are not published: clients fall
//! back to their compiled-in types.

use serde_json::{Map, Value, json};

use crate::discovery::ResourceInfo;

/// `/openapi/v3`: `{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=…"}}}`.
/// `hash` changes whenever the set of resources of that group version changes.
pub fn v3_index(group_versions: &[(String, String)], hashes: &[String]) -> Value {
    let mut paths = Map::new();
    for ((g, v), hash) in group_versions.iter().zip(hashes) {
        let key = gv_path(g, v);
        paths.insert(key.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}));
    }
    json!({ "paths": paths })
}

/// `api/v1` or `apis/{group}/{version}`.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// The OpenAPI v3 document of one group version.
pub fn v3_document(group: &str, version: &str, resources: &[ResourceInfo]) -> Value {
    let mut paths = Map::new();
    let prefix = format!("/{}", gv_path(group, version));
    for r in resources.iter().filter(|r| r.group == group && r.version == version) {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let base = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{prefix}/{}", r.plural)
        };
        let op = |action: &str, params: &[&str]| {
            let mut parameters: Vec<Value> = params
                .iter()
                .map(|p| json!({"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
                .collect();
            if r.namespaced {
                parameters
                    .push(json!({"name": "namespace", "in": "path", "required": true, "schema": {"type": "string"}}));
            }
            json!({
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": parameters,
                "responses": {"200": {"description": "OK"}},
            })
        };
        let write = ["dryRun", "fieldManager", "fieldValidation", "pretty"];
        paths.insert(
            base.clone(),
            json!({
                "get": op("list", &["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch"]),
                "post": op("post", &write),
                "delete": op("deletecollection", &["labelSelector", "fieldSelector", "gracePeriodSeconds"]),
            }),
        );
        paths.insert(
            format!("{base}/{{name}}"),
            json!({
                "get": op("get", &["pretty"]),
                "put": op("put", &write),
                "patch": op("patch", &["dryRun", "fieldManager", "fieldValidation", "force", "pretty"]),
                "delete": op("delete", &["gracePeriodSeconds", "dryRun"]),
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::discovery::KUBE_VERSION},
        "paths": paths,
        "components": {"schemas": {}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_operations_advertise_field_validation() {
        let pods = ResourceInfo::new("", "v1", "Pod", "pods", true);
        let doc = v3_document("", "v1", &[pods]);
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"], json!({"group": "", "version": "v1", "kind": "Pod"}));
        assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"));
        let idx = v3_index(
            &[("".into(), "v1".into()), ("coordination.k8s.io".into(), "v1".into())],
            &["a".into(), "b".into()],
        );
        assert_eq!(
            idx["paths"]["apis/coordination.k8s.io/v1"]["serverRelativeURL"],
            "/openapi/v3/apis/coordination.k8s.io/v1?hash=b"
        );
    }
}
