//! What MetaServer serves: the resources of [`GVRS`], described for discovery and OpenAPI.

use std::hash::{Hash, Hasher};

use kubeedge_kube_serve::discovery::{self, ResourceInfo};
use kubeedge_kube_serve::openapi;
use serde_json::Value;

use crate::metamanager::{GVRS, Gvr};

/// The verbs MetaServer serves on every resource, as upstream (no `deletecollection`).
const VERBS: [&str; 7] = ["create", "delete", "get", "list", "patch", "update", "watch"];

/// The served resources and their discovery descriptions.
pub(crate) struct Catalog {
    entries: Vec<(Gvr, ResourceInfo)>,
    /// `(group, version)` pairs, core first, each once.
    group_versions: Vec<(String, String)>,
}

impl Catalog {
    /// The catalog of [`GVRS`], with kube-apiserver's short names and categories.
    pub(crate) fn new() -> Self {
        let builtin = discovery::builtin_resources();
        let entries: Vec<(Gvr, ResourceInfo)> = GVRS
            .iter()
            .map(|(_, gvr)| {
                let known = builtin
                    .iter()
                    .find(|r| r.group == gvr.group && r.version == gvr.version && r.plural == gvr.plural)
                    .cloned();
                let mut info = known
                    .unwrap_or_else(|| ResourceInfo::new(gvr.group, gvr.version, gvr.kind, gvr.plural, gvr.namespaced));
                info.namespaced = gvr.namespaced;
                info.verbs = VERBS.iter().map(|v| (*v).to_owned()).collect();
                // Only `status` is served among the subresources.
                info.subresources.retain(|s| s == "status");
                (*gvr, info)
            })
            .collect();
        let mut group_versions: Vec<(String, String)> = Vec::new();
        for (gvr, _) in &entries {
            let gv = (gvr.group.to_owned(), gvr.version.to_owned());
            if !group_versions.contains(&gv) {
                group_versions.push(gv);
            }
        }
        group_versions.sort_by_key(|(g, _)| !g.is_empty());
        Self { entries, group_versions }
    }

    /// The resource at `/{group}/{version}/{plural}`.
    pub(crate) fn resolve(&self, group: &str, version: &str, plural: &str) -> Option<(Gvr, &ResourceInfo)> {
        self.entries
            .iter()
            .find(|(g, _)| g.group == group && g.version == version && g.plural == plural)
            .map(|(g, i)| (*g, i))
    }

    /// Every description.
    pub(crate) fn infos(&self) -> Vec<ResourceInfo> {
        self.entries.iter().map(|(_, i)| i.clone()).collect()
    }

    /// The descriptions in one group version.
    pub(crate) fn infos_in(&self, group: &str, version: &str) -> Vec<ResourceInfo> {
        self.entries.iter().filter(|(g, _)| g.group == group && g.version == version).map(|(_, i)| i.clone()).collect()
    }

    /// Non-core groups with their versions (for `/apis`).
    pub(crate) fn groups(&self) -> Vec<(String, Vec<String>)> {
        discovery::group_versions(&self.infos())
    }

    /// `/openapi/v3` (`rest` empty) or one group version's document (`rest` = `api/v1`,
    /// `apis/{group}/{version}`).
    pub(crate) fn openapi_v3(&self, rest: &str) -> Option<Value> {
        if rest.is_empty() {
            let hashes: Vec<String> = self
                .group_versions
                .iter()
                .map(|(g, v)| {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    for (gvr, _) in self.entries.iter().filter(|(gvr, _)| gvr.group == g && gvr.version == v) {
                        (gvr.kind, gvr.plural, gvr.namespaced).hash(&mut h);
                    }
                    format!("{:016X}", h.finish())
                })
                .collect();
            return Some(openapi::v3_index(&self.group_versions, &hashes));
        }
        let (g, v) = self.group_versions.iter().find(|(g, v)| openapi::gv_path(g, v) == rest)?;
        Some(openapi::v3_document(g, v, &self.infos_in(g, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_resource_is_served_with_its_short_names() {
        let c = Catalog::new();
        let (pods, info) = c.resolve("", "v1", "pods").expect("pods");
        assert_eq!(pods.kind, "Pod");
        assert_eq!(info.short_names, vec!["po"]);
        assert_eq!(info.subresources, vec!["status"]);
        assert!(!info.verbs.iter().any(|v| v == "deletecollection"));
        assert!(c.resolve("coordination.k8s.io", "v1", "leases").is_some());
        assert!(c.resolve("apps", "v1", "deployments").is_none());
        assert_eq!(c.groups(), vec![("coordination.k8s.io".to_owned(), vec!["v1".to_owned()])]);
        assert_eq!(c.group_versions[0], (String::new(), "v1".to_owned()));
        let index = c.openapi_v3("").expect("index");
        assert!(index["paths"]["api/v1"]["serverRelativeURL"].as_str().is_some_and(|u| u.contains("hash=")));
        let doc = c.openapi_v3("apis/coordination.k8s.io/v1").expect("leases doc");
        assert!(doc["paths"].get("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}").is_some());
        assert!(c.openapi_v3("apis/apps/v1").is_none());
    }
}
