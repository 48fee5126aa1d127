//! Discovery documents: `/version`, `/api`, `/apis`, `/apis/{g}`, the per-version
//! `APIResourceList`, and the aggregated (`apidiscovery.k8s.io` v2/v2beta1) form kubectl
//! 1.32 asks for first — all built from [`ResourceInfo`] descriptions.

use serde_json::{Map, Value, json};

use crate::object::api_version;

/// Everything discovery needs to know about one resource.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceInfo {
    /// API group (`""` for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind, e.g. `Pod`.
    pub kind: String,
    /// Plural resource name, e.g. `pods`.
    pub plural: String,
    /// Singular name, e.g. `pod`.
    pub singular: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names, e.g. `po`.
    pub short_names: Vec<String>,
    /// Verbs, e.g. `get`, `list`, `watch`.
    pub verbs: Vec<String>,
    /// Subresources: `status`, `log`, `exec`, `binding`, `token`, `scale`, …
    pub subresources: Vec<String>,
    /// Categories, e.g. `all`.
    pub categories: Vec<String>,
}

/// The verbs of an ordinary read-write resource, in kube-apiserver's order.
pub const STANDARD_VERBS: [&str; 8] =
    ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl ResourceInfo {
    /// A resource with the [`STANDARD_VERBS`], singular name `kind` lower-cased, and no short
    /// names, subresources or categories.
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        ResourceInfo {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            namespaced,
            verbs: strings(&STANDARD_VERBS),
            ..Default::default()
        }
    }

    /// Sets the short names.
    pub fn with_short_names(mut self, names: &[&str]) -> Self {
        self.short_names = strings(names);
        self
    }

    /// Sets the subresources.
    pub fn with_subresources(mut self, subs: &[&str]) -> Self {
        self.subresources = strings(subs);
        self
    }

    /// Sets the categories.
    pub fn with_categories(mut self, cats: &[&str]) -> Self {
        self.categories = strings(cats);
        self
    }

    /// Sets the verbs.
    pub fn with_verbs(mut self, verbs: &[&str]) -> Self {
        self.verbs = strings(verbs);
        self
    }

    /// `group/version` (`v1` for core).
    pub fn group_version(&self) -> String {
        api_version(&self.group, &self.version)
    }

    /// The `group_resource` string used in error messages: `pods`, `deployments.apps`.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }
}

/// The resources apiserver-lite and MetaServer serve out of the box (core/v1, apps/v1,
/// coordination.k8s.io/v1, discovery.k8s.io/v1, events.k8s.io/v1, apiextensions.k8s.io/v1).
pub fn builtin_resources() -> Vec<ResourceInfo> {
    let core = |kind: &str, plural: &str, ns: bool| ResourceInfo::new("", "v1", kind, plural, ns);
    let apps = |kind: &str, plural: &str| ResourceInfo::new("apps", "v1", kind, plural, true);
    vec![
        core("Pod", "pods", true).with_short_names(&["po"]).with_categories(&["all"]).with_subresources(&[
            "attach",
            "binding",
            "ephemeralcontainers",
            "eviction",
            "exec",
            "log",
            "portforward",
            "proxy",
            "status",
        ]),
        core("Node", "nodes", false).with_short_names(&["no"]).with_subresources(&["proxy", "status"]),
        core("Namespace", "namespaces", false)
            .with_short_names(&["ns"])
            .with_verbs(&["create", "delete", "get", "list", "patch", "update", "watch"])
            .with_subresources(&["finalize", "status"]),
        core("ConfigMap", "configmaps", true).with_short_names(&["cm"]),
        core("Secret", "secrets", true),
        core("Service", "services", true)
            .with_short_names(&["svc"])
            .with_categories(&["all"])
            .with_subresources(&["proxy", "status"]),
        core("Endpoints", "endpoints", true).with_short_names(&["ep"]),
        core("Event", "events", true).with_short_names(&["ev"]),
        core("ServiceAccount", "serviceaccounts", true).with_short_names(&["sa"]).with_subresources(&["token"]),
        core("PersistentVolume", "persistentvolumes", false).with_short_names(&["pv"]).with_subresources(&["status"]),
        core("PersistentVolumeClaim", "persistentvolumeclaims", true)
            .with_short_names(&["pvc"])
            .with_subresources(&["status"]),
        apps("Deployment", "deployments")
            .with_short_names(&["deploy"])
            .with_categories(&["all"])
            .with_subresources(&["scale", "status"]),
        apps("DaemonSet", "daemonsets")
            .with_short_names(&["ds"])
            .with_categories(&["all"])
            .with_subresources(&["status"]),
        apps("ReplicaSet", "replicasets")
            .with_short_names(&["rs"])
            .with_categories(&["all"])
            .with_subresources(&["scale", "status"]),
        apps("StatefulSet", "statefulsets")
            .with_short_names(&["sts"])
            .with_categories(&["all"])
            .with_subresources(&["scale", "status"]),
        ResourceInfo::new("coordination.k8s.io", "v1", "Lease", "leases", true),
        ResourceInfo::new("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true),
        ResourceInfo::new("events.k8s.io", "v1", "Event", "events", true).with_short_names(&["ev"]),
        ResourceInfo::new("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", false)
            .with_short_names(&["crd", "crds"])
            .with_categories(&["api-extensions"])
            .with_subresources(&["status"]),
    ]
}

/// How a subresource is described: its kind, verbs, and group/version when they differ from
/// the parent's.
struct SubInfo {
    kind: String,
    verbs: &'static [&'static str],
    gv: Option<(&'static str, &'static str)>,
}

const GET_PATCH_UPDATE: &[&str] = &["get", "patch", "update"];
const CREATE_GET: &[&str] = &["create", "get"];

fn subresource_info(r: &ResourceInfo, sub: &str) -> SubInfo {
    let own = |verbs| SubInfo { kind: r.kind.clone(), verbs, gv: None };
    let other = |kind: &str, verbs, gv| SubInfo { kind: kind.into(), verbs, gv };
    match sub {
        "log" => other("Pod", &["get"], None),
        "exec" => other("PodExecOptions", CREATE_GET, None),
        "attach" => other("PodAttachOptions", CREATE_GET, None),
        "portforward" => other("PodPortForwardOptions", CREATE_GET, None),
        "proxy" => SubInfo {
            kind: format!("{}ProxyOptions", r.kind),
            verbs: &["create", "delete", "get", "patch", "update"],
            gv: None,
        },
        "binding" => other("Binding", &["create"], None),
        "eviction" => other("Eviction", &["create"], Some(("policy", "v1"))),
        "token" => other("TokenRequest", &["create"], Some(("authentication.k8s.io", "v1"))),
        "scale" => other("Scale", GET_PATCH_UPDATE, Some(("autoscaling", "v1"))),
        "finalize" => own(&["update"]),
        _ => own(GET_PATCH_UPDATE),
    }
}

fn opt_list(m: &mut Map<String, Value>, key: &str, v: &[String]) {
    if !v.is_empty() {
        m.insert(key.into(), json!(v));
    }
}

/// `/api`: the `APIVersions` document.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_body(group: &str, versions: &[String]) -> Map<String, Value> {
    let gvs: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": api_version(group, v), "version": v})).collect();
    let mut m = Map::new();
    m.insert("name".into(), json!(group));
    m.insert("versions".into(), Value::Array(gvs.clone()));
    if let Some(first) = gvs.into_iter().next() {
        m.insert("preferredVersion".into(), first);
    }
    m
}

/// `/apis`: the `APIGroupList`; each group lists its versions, preferred first.
pub fn api_group_list(groups: &[(String, Vec<String>)]) -> Value {
    let groups: Vec<Value> = groups.iter().map(|(g, vs)| Value::Object(group_body(g, vs))).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`: the `APIGroup` document (versions preferred first).
pub fn api_group(group: &str, versions: &[String]) -> Value {
    let mut m = group_body(group, versions);
    m.insert("kind".into(), json!("APIGroup"));
    m.insert("apiVersion".into(), json!("v1"));
    Value::Object(m)
}

/// The non-core groups among `resources` with their versions in order of first appearance
/// (feed for [`api_group_list`]).
pub fn group_versions(resources: &[ResourceInfo]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for r in resources.iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, vs)) => {
                if !vs.contains(&r.version) {
                    vs.push(r.version.clone());
                }
            }
            None => out.push((r.group.clone(), vec![r.version.clone()])),
        }
    }
    out
}

/// `/api/v1` or `/apis/{g}/{v}`: the `APIResourceList` of the resources whose group/version is
/// `group_version` (others are skipped), each followed by its `plural/sub` subresource entries.
pub fn api_resource_list(group_version: &str, resources: &[ResourceInfo]) -> Value {
    let mut list = Vec::new();
    for r in resources.iter().filter(|r| r.group_version() == group_version) {
        let mut m = Map::new();
        m.insert("name".into(), json!(r.plural));
        m.insert("singularName".into(), json!(r.singular));
        m.insert("namespaced".into(), json!(r.namespaced));
        m.insert("kind".into(), json!(r.kind));
        m.insert("verbs".into(), json!(r.verbs));
        opt_list(&mut m, "shortNames", &r.short_names);
        opt_list(&mut m, "categories", &r.categories);
        list.push(Value::Object(m));
        for sub in &r.subresources {
            let info = subresource_info(r, sub);
            let mut m = Map::new();
            m.insert("name".into(), json!(format!("{}/{sub}", r.plural)));
            m.insert("singularName".into(), json!(""));
            m.insert("namespaced".into(), json!(r.namespaced));
            if let Some((g, v)) = info.gv {
                m.insert("group".into(), json!(g));
                m.insert("version".into(), json!(v));
            }
            m.insert("kind".into(), json!(info.kind));
            m.insert("verbs".into(), json!(info.verbs));
            list.push(Value::Object(m));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": list})
}

/// A group's versions, each with its discovery resource entries.
type VersionResources<'a> = Vec<(&'a str, Vec<Value>)>;

fn discovery_resource(r: &ResourceInfo) -> Value {
    let mut m = Map::new();
    m.insert("resource".into(), json!(r.plural));
    m.insert("responseKind".into(), json!({"group": r.group, "version": r.version, "kind": r.kind}));
    m.insert("scope".into(), json!(if r.namespaced { "Namespaced" } else { "Cluster" }));
    m.insert("singularResource".into(), json!(r.singular));
    m.insert("verbs".into(), json!(r.verbs));
    opt_list(&mut m, "shortNames", &r.short_names);
    opt_list(&mut m, "categories", &r.categories);
    let subs: Vec<Value> = r
        .subresources
        .iter()
        .map(|sub| {
            let info = subresource_info(r, sub);
            let (g, v) = info.gv.unwrap_or((r.group.as_str(), r.version.as_str()));
            json!({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": info.kind},
                   "verbs": info.verbs})
        })
        .collect();
    if !subs.is_empty() {
        m.insert("subresources".into(), Value::Array(subs));
    }
    Value::Object(m)
}

/// Aggregated discovery (`Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`):
/// returns `(for /api, for /apis)`, two `APIGroupDiscoveryList`s (`apidiscovery.k8s.io/v2`, or
/// `v2beta1` when `v2` is false). Groups and versions keep their order of first appearance
/// in `resources` (so list the preferred version first); every version is `freshness: Current`.
pub fn aggregated_discovery(resources: &[ResourceInfo], v2: bool) -> (Value, Value) {
    let api_version = if v2 { "apidiscovery.k8s.io/v2" } else { "apidiscovery.k8s.io/v2beta1" };
    let build = |core: bool| {
        // group -> [(version, [resources])], in order of appearance.
        let mut groups: Vec<(&str, VersionResources<'_>)> = Vec::new();
        for r in resources.iter().filter(|r| r.group.is_empty() == core) {
            let gi = match groups.iter().position(|(g, _)| *g == r.group) {
                Some(i) => i,
                None => {
                    groups.push((&r.group, Vec::new()));
                    groups.len() - 1
                }
            };
            let versions = &mut groups[gi].1;
            let vi = match versions.iter().position(|(v, _)| *v == r.version) {
                Some(i) => i,
                None => {
                    versions.push((&r.version, Vec::new()));
                    versions.len() - 1
                }
            };
            versions[vi].1.push(discovery_resource(r));
        }
        let items: Vec<Value> = groups
            .into_iter()
            .map(|(g, versions)| {
                let metadata = if g.is_empty() {
                    json!({"creationTimestamp": null})
                } else {
                    json!({"name": g, "creationTimestamp": null})
                };
                let versions: Vec<Value> = versions
                    .into_iter()
                    .map(|(v, res)| json!({"version": v, "resources": res, "freshness": "Current"}))
                    .collect();
                json!({"metadata": metadata, "versions": versions})
            })
            .collect();
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items})
    };
    (build(true), build(false))
}

/// The Kubernetes version this server claims (`/version`).
pub const KUBE_VERSION: &str = "v1.32.0-kubeedge-rs";

/// `/version`: a `version.Info` claiming Kubernetes 1.32.
pub fn version_info() -> Value {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": KUBE_VERSION,
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "none (Rust)",
        "compiler": "rustc",
        "platform": format!("{}/{arch}", std::env::consts::OS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(list: &'a Value, name: &str) -> &'a Value {
        list["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["name"] == name))
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn legacy_and_group_documents() {
        let v = api_versions("10.0.0.1:6443");
        assert_eq!(v["kind"], "APIVersions");
        assert_eq!(v["versions"], json!(["v1"]));
        assert_eq!(v["serverAddressByClientCIDRs"][0]["serverAddress"], "10.0.0.1:6443");

        let gl = api_group_list(&[("apps".into(), vec!["v1".into()]), ("x.io".into(), vec!["v2".into(), "v1".into()])]);
        assert_eq!(gl["kind"], "APIGroupList");
        assert_eq!(gl["apiVersion"], "v1");
        assert_eq!(gl["groups"][1]["name"], "x.io");
        assert_eq!(gl["groups"][1]["versions"][1], json!({"groupVersion": "x.io/v1", "version": "v1"}));
        assert_eq!(gl["groups"][1]["preferredVersion"], json!({"groupVersion": "x.io/v2", "version": "v2"}));
        assert!(gl["groups"][0].get("kind").is_none());

        let g = api_group("apps", &["v1".into()]);
        assert_eq!(g["kind"], "APIGroup");
        assert_eq!(g["preferredVersion"]["groupVersion"], "apps/v1");

        let gv = group_versions(&builtin_resources());
        assert!(gv.iter().all(|(g, _)| !g.is_empty()));
        assert_eq!(gv[0], ("apps".to_string(), vec!["v1".to_string()]));
        assert!(gv.iter().any(|(g, _)| g == "coordination.k8s.io"));
    }

    #[test]
    fn resource_list_with_subresources() {
        let all = builtin_resources();
        let core = api_resource_list("v1", &all);
        assert_eq!(core["kind"], "APIResourceList");
        assert_eq!(core["groupVersion"], "v1");
        let pods = find(&core, "pods");
        assert_eq!(pods["singularName"], "pod");
        assert_eq!(pods["namespaced"], true);
        assert_eq!(pods["kind"], "Pod");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert_eq!(pods["verbs"], json!(STANDARD_VERBS));
        assert_eq!(find(&core, "pods/status")["kind"], "Pod");
        assert_eq!(find(&core, "pods/status")["verbs"], json!(["get", "patch", "update"]));
        assert_eq!(find(&core, "pods/status")["singularName"], "");
        assert_eq!(find(&core, "pods/log")["verbs"], json!(["get"]));
        assert_eq!(find(&core, "pods/exec")["kind"], "PodExecOptions");
        assert_eq!(find(&core, "pods/binding")["kind"], "Binding");
        assert_eq!(find(&core, "pods/eviction")["group"], "policy");
        assert_eq!(find(&core, "nodes/proxy")["kind"], "NodeProxyOptions");
        assert_eq!(find(&core, "serviceaccounts/token")["group"], "authentication.k8s.io");
        assert_eq!(find(&core, "namespaces/finalize")["verbs"], json!(["update"]));
        assert_eq!(find(&core, "nodes")["namespaced"], false);
        assert!(find(&core, "secrets").get("shortNames").is_none());
        let names: Vec<&str> =
            core["resources"].as_array().into_iter().flatten().filter_map(|r| r["name"].as_str()).collect();
        assert!(!names.contains(&"deployments"), "other groups are excluded");

        let apps = api_resource_list("apps/v1", &all);
        assert_eq!(find(&apps, "deployments/scale")["kind"], "Scale");
        assert_eq!(find(&apps, "deployments/scale")["group"], "autoscaling");
    }

    #[test]
    fn aggregated() {
        let all = builtin_resources();
        let (core, groups) = aggregated_discovery(&all, true);
        assert_eq!(core["kind"], "APIGroupDiscoveryList");
        assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2");
        assert_eq!(core["items"].as_array().map(Vec::len), Some(1));
        assert!(core["items"][0]["metadata"].get("name").is_none());
        let v1 = &core["items"][0]["versions"][0];
        assert_eq!(v1["version"], "v1");
        assert_eq!(v1["freshness"], "Current");
        let pod = v1["resources"].as_array().and_then(|r| r.iter().find(|r| r["resource"] == "pods")).cloned();
        let pod = pod.unwrap_or_default();
        assert_eq!(pod["responseKind"], json!({"group": "", "version": "v1", "kind": "Pod"}));
        assert_eq!(pod["scope"], "Namespaced");
        assert_eq!(pod["singularResource"], "pod");
        let status = pod["subresources"].as_array().and_then(|s| s.iter().find(|s| s["subresource"] == "status"));
        assert_eq!(status.map(|s| s["verbs"].clone()), Some(json!(["get", "patch", "update"])));

        assert_eq!(groups["items"][0]["metadata"]["name"], "apps");
        let crd_group =
            groups["items"].as_array().and_then(|i| i.iter().find(|g| g["metadata"]["name"] == "apiextensions.k8s.io"));
        assert_eq!(crd_group.map(|g| g["versions"][0]["resources"][0]["scope"].clone()), Some(json!("Cluster")));

        let (beta, _) = aggregated_discovery(&all, false);
        assert_eq!(beta["apiVersion"], "apidiscovery.k8s.io/v2beta1");
    }

    #[test]
    fn version_and_helpers() {
        let v = version_info();
        assert_eq!(v["major"], "1");
        assert_eq!(v["minor"], "32");
        assert_eq!(v["gitVersion"], "v1.32.0-kubeedge-rs");
        assert!(v["platform"].as_str().is_some_and(|p| p.contains('/')));
        let r = ResourceInfo::new("apps", "v1", "Deployment", "deployments", true);
        assert_eq!(r.group_version(), "apps/v1");
        assert_eq!(r.group_resource(), "deployments.apps");
        assert_eq!(r.singular, "deployment");
        assert_eq!(ResourceInfo::new("", "v1", "Pod", "pods", true).group_resource(), "pods");
    }
}
