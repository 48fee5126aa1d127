//! `operations.kubeedge.io/v1alpha2`: [`NodeUpgradeJob`], [`ImagePrePullJob`] and
//! [`ConfigUpdateJob`], cluster-scoped, each with a status subresource, as upstream
//! (`staging/src/github.com/kubeedge/api/apis/operations/v1alpha2`).
//!
//! JSON keys and `omitempty` rules are upstream's, typos included: the upgrade's digest getter
//! is `imageDigestGatter` and is written even when unset (`null`), the prepull secret is
//! `imageSecrets` (one `"{namespace}/{name}"` string), and `failureTolerate` is a ratio in a
//! string (`"0.1"`). Upstream's deprecated v1alpha1-era status fields (`state`, `event`,
//! `action`, `time`, …) are not kept: the CRDs here serve v1alpha2 only.

use std::collections::BTreeMap;

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The version of the group.
pub const VERSION: &str = "v1alpha2";
/// `apiVersion` of the three kinds.
pub const API_VERSION: &str = "operations.kubeedge.io/v1alpha2";

/// Upstream's job phases (`JobPhase`).
pub mod job_phase {
    /// Nodes chosen, nothing started.
    pub const INIT: &str = "Init";
    /// Running on some nodes.
    pub const IN_PROGRESS: &str = "InProgress";
    /// Done everywhere, within the failure tolerance.
    pub const COMPLETED: &str = "Completed";
    /// Failed beyond the tolerance, or could not start.
    pub const FAILURE: &str = "Failure";
}

/// Upstream's per-node phases (`NodeTaskPhase`).
pub mod node_phase {
    /// Not started on the node.
    pub const PENDING: &str = "Pending";
    /// Running on the node.
    pub const IN_PROGRESS: &str = "InProgress";
    /// Done on the node.
    pub const SUCCESSFUL: &str = "Successful";
    /// Failed on the node.
    pub const FAILURE: &str = "Failure";
    /// The node stopped reporting.
    pub const UNKNOWN: &str = "Unknown";
}

/// The pre-checks a job may ask for (`checkItems`).
pub const CHECK_ITEMS: [&str; 3] = ["cpu", "mem", "disk"];

/// Which nodes a job runs on by label (Kubernetes' `metav1.LabelSelector`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels a node must have, with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One set-based requirement of a [`LabelSelector`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// The values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// One step of a node's task, as the node reported it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionStatus {
    /// The action: `Check`, `WaitingConfirmation`, `BackUp`, `Upgrade`, `RollBack` (upgrades),
    /// `Check`, `Pull` (prepulls), `Check`, `BackUp`, `Update`, `RollBack` (config updates).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    /// `True` (done), `False` (failed) or `Unknown`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When it finished (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time: String,
}

// === NodeUpgradeJob ===

/// Upgrades edgecore on the chosen nodes to `version`, a few at a time.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[kube(
    group = "operations.kubeedge.io",
    version = "v1alpha2",
    kind = "NodeUpgradeJob",
    plural = "nodeupgradejobs",
    singular = "nodeupgradejob",
    status = "NodeUpgradeJobStatus",
    derive = "Default",
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "An upgrade of edgecore on a set of edge nodes."
)]
pub struct NodeUpgradeJobSpec {
    /// The version to upgrade to, e.g. `v1.21.0`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// How long one node may take (upstream's default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// The nodes, by name (or `labelSelector`, not both).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_names: Vec<String>,
    /// The nodes, by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// The image holding the new edgecore (upstream: `kubeedge/installation-package`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// Where to check the image's digest (upstream's spelling; written even when unset).
    #[serde(rename = "imageDigestGatter", default)]
    pub image_digest_getter: Option<ImageDigestGetter>,
    /// Nodes upgraded at once (≤ 0 means 1).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub concurrency: i32,
    /// Pre-checks: `cpu`, `mem`, `disk`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub check_items: Vec<String>,
    /// The share of nodes that may fail before the job fails, a ratio in a string (`"0.1"`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failure_tolerate: String,
    /// Hold each node's upgrade until `keadm ctl confirm` on it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_confirmation: bool,
}

/// Expected digests of the upgrade image, or the registry that knows them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageDigestGetter {
    /// The arm64 image's digest.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arm64: String,
    /// The amd64 image's digest.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub amd64: String,
    /// A registry API to ask for them.
    #[serde(rename = "registryAPI", default, skip_serializing_if = "Option::is_none")]
    pub registry_api: Option<RegistryApi>,
}

/// A registry API: host and token.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct RegistryApi {
    /// The registry's host.
    pub host: String,
    /// Its token.
    pub token: String,
}

/// Where an upgrade stands, overall and per node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeUpgradeJobStatus {
    /// [`job_phase`].
    #[serde(default)]
    pub phase: String,
    /// Each node's task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_status: Vec<NodeUpgradeJobNodeTaskStatus>,
    /// Why the job failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// One node's upgrade.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeUpgradeJobNodeTaskStatus {
    /// The steps so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub action_flow: Vec<ActionStatus>,
    /// The version the node runs now.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current_version: String,
    /// The version it ran before.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub historic_version: String,
    /// The node.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    /// [`node_phase`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

// === ImagePrePullJob ===

/// Pulls images into the chosen nodes' container runtimes ahead of need.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[kube(
    group = "operations.kubeedge.io",
    version = "v1alpha2",
    kind = "ImagePrePullJob",
    plural = "imageprepulljobs",
    singular = "imageprepulljob",
    status = "ImagePrePullJobStatus",
    derive = "Default",
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "A pull of images on a set of edge nodes."
)]
pub struct ImagePrePullJobSpec {
    /// What to pull, and where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pre_pull_template: Option<ImagePrePullTemplate>,
}

/// The images, the nodes and how to run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePrePullTemplate {
    /// Image references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// The nodes, by name (or `labelSelector`, not both).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_names: Vec<String>,
    /// The nodes, by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// Pre-checks: `cpu`, `mem`, `disk`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub check_items: Vec<String>,
    /// The share of nodes that may fail, a ratio in a string (`"0.1"`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failure_tolerate: String,
    /// Nodes pulling at once.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub concurrency: i32,
    /// How long one node may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// The pull secret, `"{namespace}/{name}"` (upstream's key, plural in JSON only).
    #[serde(rename = "imageSecrets", default, skip_serializing_if = "String::is_empty")]
    pub image_secret: String,
    /// Pulls retried per image.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retry_times: i32,
}

/// Where a prepull stands, overall and per node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePrePullJobStatus {
    /// [`job_phase`].
    #[serde(default)]
    pub phase: String,
    /// Each node's task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_status: Vec<ImagePrePullNodeTaskStatus>,
    /// Why the job failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// One node's prepull.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePrePullNodeTaskStatus {
    /// The steps so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub action_flow: Vec<ActionStatus>,
    /// Each image's result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_status: Vec<ImageStatus>,
    /// The node.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    /// [`node_phase`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// One image's pull on a node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ImageStatus {
    /// The image.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// `True`, `False` or `Unknown`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

// === ConfigUpdateJob ===

/// Changes fields of edgecore.yaml on the chosen nodes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[kube(
    group = "operations.kubeedge.io",
    version = "v1alpha2",
    kind = "ConfigUpdateJob",
    plural = "configupdatejobs",
    singular = "configupdatejob",
    status = "ConfigUpdateJobStatus",
    derive = "Default",
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "A change of edgecore.yaml on a set of edge nodes."
)]
pub struct ConfigUpdateJobSpec {
    /// The nodes, by name (or `labelSelector`, not both).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_names: Vec<String>,
    /// The nodes, by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// How long one node may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// Nodes updated at once.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub concurrency: i32,
    /// The fields to set: a dotted edgecore.yaml path (`modules.edged.maxPods`) → its value.
    pub update_fields: BTreeMap<String, String>,
    /// The share of nodes that may fail, a ratio in a string (`"0.1"`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failure_tolerate: String,
}

/// Where a config update stands, overall and per node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigUpdateJobStatus {
    /// [`job_phase`].
    #[serde(default)]
    pub phase: String,
    /// Each node's task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_status: Vec<ConfigUpdateJobNodeTaskStatus>,
    /// Why the job failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// One node's config update.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigUpdateJobNodeTaskStatus {
    /// The steps so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub action_flow: Vec<ActionStatus>,
    /// The node.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    /// [`node_phase`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference.
fn is_zero(v: &i32) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use kube_core::{CustomResourceExt, Resource};
    use serde_json::json;

    use super::*;

    #[test]
    fn resource_identity() {
        for (kind, plural, crd) in [
            (NodeUpgradeJob::kind(&()), NodeUpgradeJob::plural(&()), NodeUpgradeJob::crd_name()),
            (ImagePrePullJob::kind(&()), ImagePrePullJob::plural(&()), ImagePrePullJob::crd_name()),
            (ConfigUpdateJob::kind(&()), ConfigUpdateJob::plural(&()), ConfigUpdateJob::crd_name()),
        ] {
            assert_eq!(crd, format!("{plural}.operations.kubeedge.io"), "{kind}");
            assert_eq!(plural, kind.to_lowercase() + "s");
        }
        assert_eq!(NodeUpgradeJob::api_version(&()), API_VERSION);
        assert_eq!(NodeUpgradeJob::group(&()), super::super::GROUP);
        assert!(NodeUpgradeJob::shortnames().is_empty(), "upstream has no short names");
    }

    #[test]
    fn upgrade_spec_keeps_upstreams_keys_and_typo() {
        let spec: NodeUpgradeJobSpec = serde_json::from_value(json!({
            "version": "v1.21.0", "timeoutSeconds": 300, "nodeNames": ["edge-1", "edge-2"],
            "image": "kubeedge/installation-package", "imageDigestGatter": {"amd64": "sha256:aa"},
            "concurrency": 1, "checkItems": ["cpu", "disk"], "failureTolerate": "0.1",
            "requireConfirmation": true
        }))
        .unwrap();
        assert_eq!(spec.timeout_seconds, Some(300));
        assert_eq!(spec.image_digest_getter.as_ref().map(|g| g.amd64.as_str()), Some("sha256:aa"));
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(back["imageDigestGatter"]["amd64"], "sha256:aa");
        assert_eq!(back["failureTolerate"], "0.1");
        // Go writes the unset digest getter as null and leaves the rest out.
        let bare =
            serde_json::to_value(NodeUpgradeJobSpec { version: "v1.21.0".into(), ..Default::default() }).unwrap();
        assert_eq!(bare, json!({"version": "v1.21.0", "imageDigestGatter": null}));
    }

    #[test]
    fn prepull_and_config_update_read_upstreams_samples() {
        let pull: ImagePrePullJobSpec = serde_json::from_value(json!({"imagePrePullTemplate": {
            "images": ["nginx:1.27"], "nodeNames": ["edge-1"], "imageSecrets": "default/regcred",
            "retryTimes": 2, "labelSelector": {"matchLabels": {"zone": "a"}}
        }}))
        .unwrap();
        let t = pull.image_pre_pull_template.unwrap();
        assert_eq!((t.image_secret.as_str(), t.retry_times), ("default/regcred", 2));
        assert_eq!(t.label_selector.unwrap().match_labels["zone"], "a");
        let cfg: ConfigUpdateJobSpec =
            serde_json::from_value(json!({"nodeNames": ["edge-1"], "updateFields": {"modules.edged.maxPods": "50"}}))
                .unwrap();
        assert_eq!(cfg.update_fields["modules.edged.maxPods"], "50");
        assert!(
            serde_json::from_value::<ConfigUpdateJobSpec>(json!({"nodeNames": ["edge-1"]})).is_err(),
            "updateFields is required"
        );
        let status: NodeUpgradeJobStatus = serde_json::from_value(json!({"phase": "InProgress", "nodeStatus": [
            {"nodeName": "edge-1", "phase": "Successful", "currentVersion": "v1.21.0", "historicVersion": "v1.20.0",
             "actionFlow": [{"action": "Check", "status": "True", "time": "2026-12-04T00:00:00Z"}]}]}))
        .unwrap();
        assert_eq!(status.node_status[0].action_flow[0].action, "Check");
        assert_eq!(serde_json::to_value(&status).unwrap()["nodeStatus"][0]["historicVersion"], "v1.20.0");
    }
}
