//! The four PATCH flavours kube-apiserver accepts: JSON Patch (RFC 6902), JSON Merge Patch
//! (RFC 7386), strategic merge patch, and a simplified server-side apply.
//!
//! Strategic merge needs to know each list's patch strategy, which upstream reads from Go
//! struct tags. Here a built-in table keyed by **field name, with a little context** (the
//! enclosing field and the object kind) stands in for it; see [`list_strategy`]. Lists the
//! table does not know, or whose elements lack the merge key, are replaced, as upstream does
//! for lists without a `patchStrategy`.

use serde_json::{Map, Value, json};

use crate::status::ApiError;

mod apply;
mod json;
mod strategic;

pub use apply::*;
pub use json::*;
pub use strategic::*;

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document itself is malformed (maps to 400 BadRequest).
    #[error("{0}")]
    Malformed(String),
    /// A JSON Pointer is syntactically invalid (400).
    #[error("invalid JSON pointer {0:?}")]
    InvalidPointer(String),
    /// A JSON Patch operation addressed a path that does not exist (422).
    #[error("{op} operation does not apply: doc is missing path: {path:?}")]
    PathNotFound {
        /// The operation name.
        op: String,
        /// The pointer.
        path: String,
    },
    /// A JSON Patch `test` operation failed (422).
    #[error("testing value {path:?} failed: test failed")]
    TestFailed {
        /// The pointer that was tested.
        path: String,
    },
    /// The patch is well-formed but cannot be applied to this object (422).
    #[error("{0}")]
    Invalid(String),
}

impl PatchError {
    /// The API error kube-apiserver would answer with: malformed patches are 400 BadRequest,
    /// patches that fail to apply 422 Invalid.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            PatchError::Malformed(_) | PatchError::InvalidPointer(_) => ApiError::bad_request(self.to_string()),
            _ => ApiError::new(422, "Invalid", self.to_string()),
        }
    }
}

impl From<PatchError> for ApiError {
    fn from(e: PatchError) -> Self {
        e.to_api_error()
    }
}

/// A PATCH request's content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902)
    Json,
    /// `application/merge-patch+json` (RFC 7386)
    Merge,
    /// `application/strategic-merge-patch+json`
    StrategicMerge,
    /// `application/apply-patch+yaml` (or `+json`): server-side apply
    Apply,
}

impl PatchType {
    /// Recognises a `Content-Type` header value (parameters such as `charset` are ignored).
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match media.as_str() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(PatchType::Apply),
            _ => None,
        }
    }

    /// The canonical content type.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }
}

// RFC 7386 JSON Merge Patch

/// Applies an RFC 7386 JSON Merge Patch: objects merge recursively, `null` deletes, anything
/// else (including arrays) replaces.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
            out.insert(k.clone(), merged);
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jp(target: Value, patch: Value) -> Result<Value, PatchError> {
        json_patch(&target, &patch)
    }

    #[test]
    fn content_types() {
        assert_eq!(PatchType::from_content_type("application/json-patch+json"), Some(PatchType::Json));
        assert_eq!(PatchType::from_content_type("application/merge-patch+json; charset=utf-8"), Some(PatchType::Merge));
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json"),
            Some(PatchType::StrategicMerge)
        );
        assert_eq!(PatchType::from_content_type("application/apply-patch+yaml"), Some(PatchType::Apply));
        assert_eq!(PatchType::from_content_type("application/apply-patch+json"), Some(PatchType::Apply));
        assert_eq!(PatchType::from_content_type("application/json"), None);
        assert_eq!(PatchType::Merge.content_type(), "application/merge-patch+json");
    }

    #[test]
    fn pointers() {
        assert_eq!(parse_pointer("").expect("root"), Vec::<String>::new());
        assert_eq!(parse_pointer("/a~1b/c~0d/").expect("p"), vec!["a/b", "c~d", ""]);
        assert!(matches!(parse_pointer("a"), Err(PatchError::InvalidPointer(_))));
        assert!(matches!(parse_pointer("/a~2"), Err(PatchError::InvalidPointer(_))));
        assert!(matches!(parse_pointer("/a~"), Err(PatchError::InvalidPointer(_))));
    }

    #[test]
    fn json_patch_add_remove_replace() {
        let doc = json!({"metadata": {"labels": {"a": "1"}}, "list": [1, 2]});
        let out = jp(
            doc.clone(),
            json!([
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "add", "path": "/list/-", "value": 3},
                {"op": "add", "path": "/list/0", "value": 0},
                {"op": "remove", "path": "/metadata/labels/a"},
                {"op": "replace", "path": "/list/1", "value": 10},
                {"op": "add", "path": "/metadata/annotations", "value": {"x~/y": "z"}},
            ]),
        )
        .expect("applies");
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"b": "2"}, "annotations": {"x~/y": "z"}}, "list": [0, 10, 2, 3]})
        );
        assert_eq!(doc["list"], json!([1, 2]), "target is untouched");
        let out = jp(
            json!({"a": {"x/y": 1, "m~n": 2}}),
            json!([{"op": "remove", "path": "/a/x~1y"},
            {"op": "replace", "path": "/a/m~0n", "value": 3}]),
        )
        .expect("escaped");
        assert_eq!(out, json!({"a": {"m~n": 3}}));
        assert_eq!(
            jp(json!({"a": 1}), json!([{"op": "replace", "path": "", "value": [1]}])).expect("root"),
            json!([1])
        );
    }

    #[test]
    fn json_patch_move_copy_test() {
        let out = jp(
            json!({"a": {"b": 1}, "c": [1, 2]}),
            json!([
                {"op": "move", "from": "/a/b", "path": "/d"},
                {"op": "copy", "from": "/c", "path": "/e"},
                {"op": "test", "path": "/d", "value": 1.0},
                {"op": "test", "path": "/e", "value": [1, 2]},
                {"op": "move", "from": "/c/0", "path": "/c/-"},
            ]),
        )
        .expect("applies");
        assert_eq!(out, json!({"a": {}, "d": 1, "c": [2, 1], "e": [1, 2]}));
    }

    #[test]
    fn json_patch_errors() {
        let doc = json!({"a": {"b": [1]}});
        assert!(matches!(
            jp(doc.clone(), json!([{"op": "test", "path": "/a/b/0", "value": 2}])),
            Err(PatchError::TestFailed { .. })
        ));
        assert!(matches!(
            jp(doc.clone(), json!([{"op": "remove", "path": "/a/nope"}])),
            Err(PatchError::PathNotFound { .. })
        ));
        assert!(matches!(
            jp(doc.clone(), json!([{"op": "replace", "path": "/x", "value": 1}])),
            Err(PatchError::PathNotFound { .. })
        ));
        assert!(matches!(
            jp(doc.clone(), json!([{"op": "add", "path": "/x/y", "value": 1}])),
            Err(PatchError::PathNotFound { .. })
        ));
        assert!(jp(doc.clone(), json!([{"op": "add", "path": "/a/b/5", "value": 1}])).is_err());
        assert!(jp(doc.clone(), json!([{"op": "add", "path": "/a/b/01", "value": 1}])).is_err());
        assert!(matches!(jp(doc.clone(), json!([{"op": "add", "path": "/a"}])), Err(PatchError::Malformed(_))));
        assert!(matches!(
            jp(doc.clone(), json!([{"op": "add", "path": "a", "value": 1}])),
            Err(PatchError::InvalidPointer(_))
        ));
        assert!(matches!(jp(doc.clone(), json!([{"op": "frob", "path": "/a"}])), Err(PatchError::Malformed(_))));
        assert!(matches!(jp(doc.clone(), json!({"op": "add"})), Err(PatchError::Malformed(_))));
        assert!(jp(doc.clone(), json!([{"op": "move", "from": "/a", "path": "/a/b/c"}])).is_err());
        assert_eq!(
            jp(doc.clone(), json!([{"op": "test", "path": "/a/b/0", "value": 1}, {"op": "remove", "path": "/q"}]))
                .map_err(|e| e.to_api_error().code),
            Err(422)
        );
        assert_eq!(PatchError::Malformed("x".into()).to_api_error().code, 400);
        let api: ApiError = PatchError::TestFailed { path: "/a".into() }.into();
        assert_eq!(api.reason, "Invalid");
    }

    #[test]
    fn merge_patch_rfc7386_appendix() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "b"}), json!({"b": "c"}), json!({"a": "b", "b": "c"})),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (json!({"a": "b", "b": "c"}), json!({"a": null}), json!({"b": "c"})),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (json!({"a": {"b": "c"}}), json!({"a": {"b": "d", "c": null}}), json!({"a": {"b": "d"}})),
            (json!({"a": [{"b": "c"}]}), json!({"a": [1]}), json!({"a": [1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (json!({"e": null}), json!({"a": 1}), json!({"e": null, "a": 1})),
            (json!([1, 2]), json!({"a": "b", "c": null}), json!({"a": "b"})),
            (json!({}), json!({"a": {"bb": {"ccc": null}}}), json!({"a": {"bb": {}}})),
        ];
        for (target, patch, want) in cases {
            assert_eq!(merge_patch(&target, &patch), want, "{target} + {patch}");
        }
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "web", "tier": "fe"}, "finalizers": ["a", "b"],
                         "ownerReferences": [{"uid": "u1", "name": "rs"}]},
            "spec": {
                "containers": [
                    {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                     "ports": [{"containerPort": 80}], "args": ["x", "y"]},
                    {"name": "sidecar", "image": "side:1"}
                ],
                "tolerations": [{"key": "t1", "operator": "Exists"}]
            },
            "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}]}
        })
    }

    fn smp(patch: Value) -> Value {
        strategic_merge_patch(&pod(), &patch, "Pod").expect("patch applies")
    }

    #[test]
    fn smp_merges_containers_and_env_by_name() {
        let out = smp(json!({"spec": {"containers": [
            {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}]},
            {"name": "new", "image": "new:1"}
        ]}}));
        let cs = out["spec"]["containers"].as_array().expect("list");
        assert_eq!(cs.len(), 3);
        assert_eq!(cs[0]["image"], "app:2");
        assert_eq!(cs[0]["ports"], json!([{"containerPort": 80}]), "untouched fields survive");
        assert_eq!(
            cs[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "20"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(cs[1]["name"], "sidecar");
        assert_eq!(cs[2]["name"], "new");
    }

    #[test]
    fn smp_delete_and_replace_directives() {
        let out = smp(json!({"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}));
        assert_eq!(out["spec"]["containers"].as_array().map(Vec::len), Some(1));
        assert_eq!(out["spec"]["containers"][0]["name"], "app");

        let out = smp(json!({"spec": {"containers": [{"name": "only", "image": "o"}, {"$patch": "replace"}]}}));
        assert_eq!(out["spec"]["containers"], json!([{"name": "only", "image": "o"}]));

        let out = smp(json!({"metadata": {"labels": {"$patch": "replace", "new": "1"}}}));
        assert_eq!(out["metadata"]["labels"], json!({"new": "1"}));

        let out = smp(json!({"status": {"$patch": "delete"}}));
        assert!(out.get("status").is_none());

        let out = smp(json!({"spec": {"containers": [{"name": "app", "env": [{"name": "A", "$patch": "delete"}]}]}}));
        assert_eq!(out["spec"]["containers"][0]["env"], json!([{"name": "B", "value": "2"}]));
    }

    #[test]
    fn smp_conditions_by_type_and_lists_without_keys() {
        let out = smp(json!({"status": {"conditions": [{"type": "Ready", "status": "True"},
                                                       {"type": "PodScheduled", "status": "True"}]}}));
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"},
                   {"type": "PodScheduled", "status": "True"}])
        );
        let out = smp(json!({"spec": {"containers": [{"name": "app", "args": ["z"]}],
                                      "tolerations": [{"key": "t2", "operator": "Exists"}]}}));
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["z"]), "primitive lists are replaced");
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "t2", "operator": "Exists"}]), "tolerations replace");
    }

    #[test]
    fn smp_finalizers_owner_refs_and_nulls() {
        let out = smp(json!({"metadata": {"finalizers": ["b", "c"], "labels": {"tier": null},
                                          "ownerReferences": [{"uid": "u2", "name": "other"}]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(out["metadata"]["ownerReferences"].as_array().map(Vec::len), Some(2));

        let out = smp(json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));

        let out = smp(json!({"spec": null}));
        assert!(out.get("spec").is_none());
    }

    #[test]
    fn smp_set_element_order_and_retain_keys() {
        let out = smp(json!({"spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
            "containers": [{"name": "app", "image": "app:3"}]
        }}));
        let names: Vec<&str> =
            out["spec"]["containers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(names, vec!["sidecar", "app"]);
        assert_eq!(out["spec"]["containers"][1]["image"], "app:3");
        assert!(out["spec"].get("$setElementOrder/containers").is_none());

        let out = strategic_merge_patch(
            &json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
            &json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
            "Deployment",
        )
        .expect("applies");
        assert_eq!(out, json!({"spec": {"strategy": {"type": "Recreate"}}}));
    }

    #[test]
    fn smp_new_fields_are_cleaned_and_ports_keyed_by_kind() {
        let out =
            smp(json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}, {"name": "gone", "$patch": "delete"}]}}));
        assert_eq!(out["spec"]["volumes"], json!([{"name": "v", "emptyDir": {}}]));

        let svc = json!({"kind": "Service", "spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}]}});
        let out =
            strategic_merge_patch(&svc, &json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}), "Service")
                .expect("applies");
        assert_eq!(out["spec"]["ports"], json!([{"port": 80, "name": "http", "targetPort": 8080}, {"port": 443}]));

        let out = smp(json!({"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 81}]}]}}));
        assert_eq!(out["spec"]["containers"][0]["ports"], json!([{"containerPort": 80}, {"containerPort": 81}]));

        let node =
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "1"}], "images": [{"names": ["a"]}]}});
        let out = strategic_merge_patch(
            &node,
            &json!({"status": {"addresses": [{"type": "Hostname", "address": "h"}], "images": [{"names": ["b"]}]}}),
            "Node",
        )
        .expect("applies");
        assert_eq!(out["status"]["addresses"].as_array().map(Vec::len), Some(2));
        assert_eq!(out["status"]["images"], json!([{"names": ["b"]}]));
    }

    #[test]
    fn smp_errors() {
        assert!(matches!(strategic_merge_patch(&pod(), &json!([1]), "Pod"), Err(PatchError::Malformed(_))));
        assert!(strategic_merge_patch(&pod(), &json!({"metadata": {"$patch": "explode"}}), "Pod").is_err());
        assert!(strategic_merge_patch(&pod(), &json!({"spec": {"$retainKeys": "x"}}), "Pod").is_err());
    }

    #[test]
    fn apply_creates_with_managed_fields() {
        let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "c", "namespace": "d", "labels": {"a": "1"}},
                         "data": {"k": "v"}});
        let out = apply(None, &cfg, "ConfigMap", "kubectl", "2024-01-01T00:00:00Z").expect("creates");
        assert_eq!(out["data"], json!({"k": "v"}));
        let mf = &out["metadata"]["managedFields"];
        assert_eq!(mf.as_array().map(Vec::len), Some(1));
        assert_eq!(mf[0]["manager"], "kubectl");
        assert_eq!(mf[0]["operation"], "Apply");
        assert_eq!(mf[0]["apiVersion"], "v1");
        assert_eq!(mf[0]["time"], "2024-01-01T00:00:00Z");
        assert_eq!(mf[0]["fieldsType"], "FieldsV1");
        assert_eq!(mf[0]["fieldsV1"], json!({"f:data": {"f:k": {}}, "f:metadata": {"f:labels": {"f:a": {}}}}));
    }

    #[test]
    fn apply_updates_and_refreshes_entry() {
        let existing = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "resourceVersion": "7", "finalizers": ["x"], "managedFields": [
                {"manager": "kubectl", "operation": "Apply", "time": "old"},
                {"manager": "kube-controller-manager", "operation": "Update", "time": "t"}]},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i:1"}]}}},
            "status": {"replicas": 1}});
        let cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "resourceVersion": "1", "finalizers": ["y"]},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "c", "image": "i:2"}]}}}});
        let out = apply(Some(&existing), &cfg, "Deployment", "kubectl", "now").expect("updates");
        assert_eq!(out["spec"]["replicas"], 3);
        assert_eq!(out["spec"]["template"]["spec"]["containers"], json!([{"name": "c", "image": "i:2"}]));
        assert_eq!(out["status"]["replicas"], 1, "fields not applied survive");
        assert_eq!(out["metadata"]["resourceVersion"], "7");
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
        let mf = out["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
        assert_eq!(mf.len(), 2);
        assert_eq!(mf[0]["manager"], "kube-controller-manager");
        assert_eq!(mf[1]["time"], "now");
        assert_eq!(
            mf[1]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"],
            json!({r#"k:{"name":"c"}"#: {".": {}, "f:image": {}, "f:name": {}}})
        );
        assert_eq!(mf[1]["fieldsV1"]["f:metadata"], json!({"f:finalizers": {r#"v:"y""#: {}}}));
    }

    #[test]
    fn apply_removes_fields_no_longer_applied() {
        let v1 = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "1", "b": "2"}, "finalizers": ["x", "y"]},
            "spec": {"containers": [{"name": "c1", "image": "i", "args": ["q"]}, {"name": "c2", "image": "j"}]}});
        let mut obj = apply(None, &v1, "Pod", "mgr", "t1").expect("create");
        // Someone else adds a label without managed fields, and another manager owns label b too.
        obj["metadata"]["labels"]["z"] = json!("other");
        if let Some(Value::Array(mf)) = obj.pointer_mut("/metadata/managedFields") {
            mf.push(json!({"manager": "helper", "operation": "Apply",
                           "fieldsV1": {"f:metadata": {"f:labels": {"f:b": {}}}}}));
        }
        let v2 = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "1"}, "finalizers": ["x"]},
            "spec": {"containers": [{"name": "c1", "image": "i2"}]}});
        let out = apply(Some(&obj), &v2, "Pod", "mgr", "t2").expect("update");
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "b": "2", "z": "other"}));
        assert_eq!(out["metadata"]["finalizers"], json!(["x"]));
        assert_eq!(out["spec"]["containers"], json!([{"name": "c1", "image": "i2"}]));
        let managers: Vec<&str> = out["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["manager"].as_str())
            .collect();
        assert_eq!(managers, vec!["helper", "mgr"]);
    }

    #[test]
    fn apply_rejects_bad_input() {
        assert!(apply(None, &json!([]), "Pod", "m", "t").is_err());
        assert!(apply(None, &json!({"kind": "Pod"}), "Pod", "m", "t").is_err());
        assert!(apply(None, &json!({"apiVersion": "v1", "kind": "Pod"}), "Pod", "", "t").is_err());
    }
}
