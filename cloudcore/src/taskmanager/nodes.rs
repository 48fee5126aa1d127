//! Choosing a job's nodes (upstream's `VerifyNodeDefine` and node checks): by name or by
//! label, never both or neither; each must be an edge node (label
//! `node-role.kubernetes.io/edge`) and Ready. A node that fails a check is in the job as
//! Failure with upstream's reason, so the job's status says what was wrong with it.

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kubeedge_apis::operations::v1alpha2::LabelSelector;

use super::job::Params;
use super::status::NodeTask;

/// The label every edge node carries.
pub const EDGE_LABEL: &str = "node-role.kubernetes.io/edge";

/// The job's nodes, each Pending or already Failure with the reason; an error fails the
/// whole job (upstream's messages).
pub async fn choose(client: &kube::Client, p: &Params) -> Result<Vec<NodeTask>, String> {
    let api: Api<Node> = Api::all(client.clone());
    match (&p.node_names.is_empty(), &p.label_selector) {
        (false, Some(_)) => Err("nodeNames and nodeSelector cannot be specified at the same time".into()),
        (true, None) => Err("nodeNames and nodeSelector cannot both be empty".into()),
        (false, None) => {
            let mut out = Vec::with_capacity(p.node_names.len());
            let mut seen = std::collections::BTreeSet::new();
            for name in &p.node_names {
                if !seen.insert(name.as_str()) {
                    continue;
                }
                if !kubeedge_model::valid_node_name(name) {
                    out.push(NodeTask::failed(name, format!("failed to get node, err: invalid node name {name:?}")));
                    continue;
                }
                out.push(match api.get_opt(name).await {
                    Ok(Some(node)) => verify(name, &node),
                    Ok(None) => NodeTask::failed(name, format!("failed to get node, err: nodes \"{name}\" not found")),
                    Err(e) => return Err(format!("failed to get node {name}: {e}")),
                });
            }
            Ok(out)
        }
        (true, Some(sel)) => {
            let selector = selector_string(sel)?;
            let nodes = api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| format!("failed to list nodes with selector {selector:?}: {e}"))?;
            if nodes.items.is_empty() {
                return Err("no nodes were matched with selector".into());
            }
            let mut out: Vec<NodeTask> =
                nodes.items.iter().map(|n| verify(n.metadata.name.as_deref().unwrap_or_default(), n)).collect();
            out.sort_by(|a, b| a.node_name.cmp(&b.node_name));
            Ok(out)
        }
    }
}

/// Pending when `node` is an edge node and Ready, else Failure with upstream's reason.
pub fn verify(name: &str, node: &Node) -> NodeTask {
    let is_edge = node.metadata.labels.as_ref().is_some_and(|l| l.contains_key(EDGE_LABEL));
    if !is_edge {
        return NodeTask::failed(name, "the node is not an edge node");
    }
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if !ready {
        return NodeTask::failed(name, "the node is not ready");
    }
    NodeTask::pending(name)
}

/// A label selector in the API's query syntax.
pub fn selector_string(sel: &LabelSelector) -> Result<String, String> {
    let mut parts: Vec<String> = sel.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for r in &sel.match_expressions {
        let values = r.values.join(",");
        parts.push(match r.operator.as_str() {
            "In" => format!("{} in ({values})", r.key),
            "NotIn" => format!("{} notin ({values})", r.key),
            "Exists" => r.key.clone(),
            "DoesNotExist" => format!("!{}", r.key),
            op => return Err(format!("labelSelector: unknown operator {op:?}")),
        });
    }
    if parts.is_empty() {
        // An empty selector matches every node; only edge nodes pass `verify`.
        return Ok(String::new());
    }
    Ok(parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubeedge_apis::operations::v1alpha2::LabelSelectorRequirement;

    #[test]
    fn selectors_and_checks() {
        let mut sel = LabelSelector::default();
        sel.match_labels.insert(EDGE_LABEL.into(), String::new());
        sel.match_expressions.push(LabelSelectorRequirement {
            key: "zone".into(),
            operator: "In".into(),
            values: vec!["a".into(), "b".into()],
        });
        assert_eq!(selector_string(&sel).unwrap(), "node-role.kubernetes.io/edge=,zone in (a,b)");
        sel.match_expressions[0].operator = "Near".into();
        assert!(selector_string(&sel).is_err());

        let node: Node =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n", "labels": {EDGE_LABEL: ""}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
            .unwrap();
        assert_eq!(verify("n", &node).phase, "Pending");
        let cloud: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": "c"}})).unwrap();
        assert_eq!(verify("c", &cloud).reason, "the node is not an edge node");
        let down: Node =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "d", "labels": {EDGE_LABEL: ""}},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}))
            .unwrap();
        assert_eq!(verify("d", &down).reason, "the node is not ready");
    }
}
