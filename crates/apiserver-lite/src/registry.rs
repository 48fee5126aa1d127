//! The resource types served: the built-in ones kubectl, kube-rs, cloudcore and edgecore use, and
//! those CustomResourceDefinitions add at run time.

use kubeedge_kube_serve::discovery::ResourceInfo;
use serde_json::Value;

/// One served resource type: its discovery description plus what only this server needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    /// Group, version, kind, names, scope, verbs, subresources, categories.
    pub info: ResourceInfo,
    /// Columns for `kubectl get` from a CRD's `additionalPrinterColumns`.
    pub printer_columns: Vec<Value>,
}

impl std::ops::Deref for ResourceType {
    type Target = ResourceInfo;

    fn deref(&self) -> &ResourceInfo {
        &self.info
    }
}

impl ResourceType {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        self.info.group_version()
    }

    /// Whether `status` is a subresource (then the main resource ignores status writes).
    pub fn has_status(&self) -> bool {
        self.subresources.iter().any(|s| s == "status")
    }

    /// The list kind (`PodList`).
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short: &[&str],
    subs: &[&str],
    all: bool,
) -> ResourceType {
    let info =
        ResourceInfo::new(group, version, kind, plural, namespaced).with_short_names(short).with_subresources(subs);
    let info = if all { info.with_categories(&["all"]) } else { info };
    ResourceType { info, printer_columns: Vec::new() }
}

/// The built-in resource types.
pub fn builtins() -> Vec<ResourceType> {
    vec![
        builtin("", "v1", "Namespace", "namespaces", false, &["ns"], &["status", "finalize"], false),
        builtin("", "v1", "Node", "nodes", false, &["no"], &["status", "proxy"], false),
        builtin("", "v1", "Pod", "pods", true, &["po"], &["status", "binding", "log", "exec", "eviction"], true),
        builtin("", "v1", "ConfigMap", "configmaps", true, &["cm"], &[], false),
        builtin("", "v1", "Secret", "secrets", true, &[], &[], false),
        builtin("", "v1", "Service", "services", true, &["svc"], &["status"], true),
        builtin("", "v1", "Endpoints", "endpoints", true, &["ep"], &[], false),
        builtin("", "v1", "Event", "events", true, &["ev"], &[], false),
        builtin("", "v1", "ServiceAccount", "serviceaccounts", true, &["sa"], &["token"], false),
        builtin("coordination.k8s.io", "v1", "Lease", "leases", true, &[], &[], false),
        builtin("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true, &[], &[], false),
        builtin("events.k8s.io", "v1", "Event", "events", true, &["ev"], &[], false),
        // What installers (keadm init, helm install of the cloudcore chart) create.
        builtin("apps", "v1", "Deployment", "deployments", true, &["deploy"], &["status"], true),
        builtin("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false, &[], &[], false),
        builtin("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false, &[], &[], false),
        builtin("rbac.authorization.k8s.io", "v1", "Role", "roles", true, &[], &[], false),
        builtin("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true, &[], &[], false),
        builtin(
            "certificates.k8s.io",
            "v1",
            "CertificateSigningRequest",
            "certificatesigningrequests",
            false,
            &["csr"],
            &["status", "approval"],
            false,
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            &["crd", "crds"],
            &["status"],
            false,
        ),
    ]
}

/// The resource types a CRD object declares (one per served version), or why it cannot.
pub fn from_crd(crd: &Value) -> Result<Vec<ResourceType>, String> {
    let spec = crd.get("spec").ok_or("spec is required")?;
    let group = spec.get("group").and_then(Value::as_str).ok_or("spec.group is required")?;
    let names = spec.get("names").ok_or("spec.names is required")?;
    let s = |k: &str| names.get(k).and_then(Value::as_str).map(str::to_owned);
    let plural = s("plural").ok_or("spec.names.plural is required")?;
    let kind = s("kind").ok_or("spec.names.kind is required")?;
    let singular = s("singular").unwrap_or_else(|| kind.to_lowercase());
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let namespaced = match spec.get("scope").and_then(Value::as_str) {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => return Err("spec.scope must be Namespaced or Cluster".to_owned()),
    };
    let expected_name = format!("{plural}.{group}");
    let name = crd.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    if name != expected_name {
        return Err(format!("metadata.name must be spec.names.plural+\".\"+spec.group: {expected_name:?}"));
    }
    let versions = spec.get("versions").and_then(Value::as_array).ok_or("spec.versions is required")?;
    let mut out = Vec::new();
    for v in versions {
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let version = v.get("name").and_then(Value::as_str).ok_or("spec.versions[].name is required")?;
        let mut subresources = Vec::new();
        if v.pointer("/subresources/status").is_some() {
            subresources.push("status".to_owned());
        }
        // The scale subresource is not served, so it is not advertised.
        let mut info = ResourceInfo::new(group, version, &kind, &plural, namespaced);
        info.singular = singular.clone();
        info.short_names = strings(names.get("shortNames"));
        info.subresources = subresources;
        info.categories = strings(names.get("categories"));
        out.push(ResourceType {
            info,
            printer_columns: v.get("additionalPrinterColumns").and_then(Value::as_array).cloned().unwrap_or_default(),
        });
    }
    if out.is_empty() {
        return Err("spec.versions must serve at least one version".to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crd_declares_types() {
        let crd = json!({"metadata":{"name":"devices.devices.kubeedge.io"},"spec":{"group":"devices.kubeedge.io","scope":"Namespaced",
            "names":{"plural":"devices","kind":"Device","shortNames":["dev"]},
            "versions":[{"name":"v1beta1","served":true,"storage":true,"subresources":{"status":{}}},{"name":"v1alpha2","served":false}]}});
        let t = from_crd(&crd).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].plural.as_str(), t[0].singular.as_str(), t[0].has_status()), ("devices", "device", true));
        assert_eq!(t[0].api_version(), "devices.kubeedge.io/v1beta1");
        let mut bad = crd.clone();
        bad["metadata"]["name"] = json!("wrong");
        assert!(from_crd(&bad).is_err());
    }
}
