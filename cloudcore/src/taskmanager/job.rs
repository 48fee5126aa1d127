//! What the TaskManager needs of a job, whatever its kind: which nodes, how many at once, how
//! long each may take, how many may fail, what to send — and whether the spec is safe to send
//! at all (every version, image, secret and config field is checked here, before any node
//! sees it; the edge checks again).

use kube::api::{ApiResource, DynamicObject};
use kubeedge_apis::operations::task::{self, TaskType};
use kubeedge_apis::operations::v1alpha2::{
    ConfigUpdateJobSpec, ImagePrePullJobSpec, LabelSelector, NodeUpgradeJobSpec,
};
use serde_json::Value;

/// The API resource of a kind.
pub fn api_resource(ty: TaskType) -> ApiResource {
    ApiResource {
        group: kubeedge_apis::operations::GROUP.into(),
        version: "v1alpha2".into(),
        api_version: kubeedge_apis::operations::v1alpha2::API_VERSION.into(),
        kind: ty.kind().into(),
        plural: format!("{}s", ty.resource()),
    }
}

/// A job's settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    /// Nodes by name.
    pub node_names: Vec<String>,
    /// Nodes by label.
    pub label_selector: Option<LabelSelector>,
    /// Nodes at once (≤ 0 means 1).
    pub concurrency: usize,
    /// Seconds a node may go without reporting; `None`: no limit.
    pub timeout_secs: Option<u32>,
    /// The failure tolerance (ratio).
    pub tolerance: f64,
    /// What each node is sent: the spec as JSON.
    pub spec: Value,
}

/// Reads a job's settings; an error is a spec that must not run, and says why.
pub fn params(ty: TaskType, obj: &DynamicObject) -> Result<Params, String> {
    let spec = obj.data.get("spec").cloned().unwrap_or(Value::Null);
    let bad = |e: serde_json::Error| format!("invalid spec: {e}");
    let mut p = Params { spec: spec.clone(), ..Params::default() };
    let (concurrency, tolerate) = match ty {
        TaskType::NodeUpgrade => {
            let s: NodeUpgradeJobSpec = serde_json::from_value(spec).map_err(bad)?;
            task::check_version(&s.version).map_err(|e| e.to_string())?;
            if !s.image.is_empty() {
                task::check_upgrade_image(&s.image).map_err(|e| e.to_string())?;
            }
            check_items(&s.check_items)?;
            (p.node_names, p.label_selector, p.timeout_secs) = (s.node_names, s.label_selector, s.timeout_seconds);
            (s.concurrency, s.failure_tolerate)
        }
        TaskType::ImagePrePull => {
            let s: ImagePrePullJobSpec = serde_json::from_value(spec).map_err(bad)?;
            let t = s.image_pre_pull_template.unwrap_or_default();
            if t.images.is_empty() {
                return Err("imagePrePullTemplate.images is empty".into());
            }
            for image in &t.images {
                task::check_image_reference(image).map_err(|e| e.to_string())?;
            }
            if !t.image_secret.is_empty() {
                check_secret_ref(&t.image_secret)?;
            }
            check_items(&t.check_items)?;
            (p.node_names, p.label_selector, p.timeout_secs) = (t.node_names, t.label_selector, t.timeout_seconds);
            (t.concurrency, t.failure_tolerate)
        }
        TaskType::ConfigUpdate => {
            let s: ConfigUpdateJobSpec = serde_json::from_value(spec).map_err(bad)?;
            task::config_set_argument(&s.update_fields).map_err(|e| e.to_string())?;
            (p.node_names, p.label_selector, p.timeout_secs) = (s.node_names, s.label_selector, s.timeout_seconds);
            (s.concurrency, s.failure_tolerate)
        }
    };
    p.concurrency = usize::try_from(concurrency).unwrap_or(0).max(1);
    p.tolerance = super::status::tolerance(&tolerate);
    p.timeout_secs = p.timeout_secs.filter(|t| *t > 0);
    Ok(p)
}

fn check_items(items: &[String]) -> Result<(), String> {
    match items.iter().find(|i| !kubeedge_apis::operations::v1alpha2::CHECK_ITEMS.contains(&i.as_str())) {
        Some(i) => Err(format!("check item {i} not support")),
        None => Ok(()),
    }
}

/// `imageSecrets`: `"{namespace}/{name}"`, both DNS names.
fn check_secret_ref(s: &str) -> Result<(), String> {
    match s.split('/').collect::<Vec<_>>().as_slice() {
        [ns, name] if kubeedge_model::valid_node_name(ns) && kubeedge_model::valid_node_name(name) => Ok(()),
        _ => Err(format!("imageSecrets {s:?} is not \"namespace/name\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(spec: Value) -> DynamicObject {
        let mut o = DynamicObject::new("j", &api_resource(TaskType::NodeUpgrade));
        o.data = serde_json::json!({ "spec": spec });
        o
    }

    #[test]
    fn upgrade_params_and_refusals() {
        let p = params(
            TaskType::NodeUpgrade,
            &obj(serde_json::json!({"version": "v1.99.0", "nodeNames": ["a"], "concurrency": 0,
                "failureTolerate": "0.3", "timeoutSeconds": 0})),
        )
        .unwrap();
        assert_eq!((p.concurrency, p.tolerance, p.timeout_secs), (1, 0.3, None));
        assert_eq!(p.node_names, ["a"]);
        for (spec, why) in [
            (serde_json::json!({"version": "v1.21.0; touch /tmp/pwned"}), "invalid version"),
            (serde_json::json!({"version": "v1.21.0", "image": "../../etc"}), "invalid image"),
            (serde_json::json!({"version": "v1.21.0", "checkItems": ["gpu"]}), "check item gpu not support"),
        ] {
            let e = params(TaskType::NodeUpgrade, &obj(spec)).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn prepull_and_config_refusals() {
        let e = params(
            TaskType::ImagePrePull,
            &obj(serde_json::json!({"imagePrePullTemplate": {"images": ["busybox", "../../x:1"]}})),
        )
        .unwrap_err();
        assert!(e.contains("invalid image"), "{e}");
        let e = params(
            TaskType::ImagePrePull,
            &obj(serde_json::json!({"imagePrePullTemplate": {"images": ["busybox"], "imageSecrets": "a/b/c"}})),
        )
        .unwrap_err();
        assert!(e.contains("namespace/name"), "{e}");
        let ok = params(
            TaskType::ImagePrePull,
            &obj(serde_json::json!({"imagePrePullTemplate": {"images": ["busybox:1.36"], "concurrency": 3}})),
        )
        .unwrap();
        assert_eq!(ok.concurrency, 3);
        let e = params(TaskType::ConfigUpdate, &obj(serde_json::json!({"updateFields": {"a": "1,b=2"}}))).unwrap_err();
        assert!(e.contains("updateFields"), "{e}");
    }
}
