//! Applying rendered documents through the Kubernetes API: each one by server-side apply
//! (field manager `keadm`, conflicts forced: keadm owns what it installs), its resource found
//! by discovery as kubectl does, and waiting for CustomResourceDefinitions to be Established.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::Scope;

use crate::chart::Doc;

/// The field manager of keadm's writes.
pub const FIELD_MANAGER: &str = "keadm";

/// Why an object could not be applied or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig cannot be used.
    #[error("--kube-config {path}: {msg}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        msg: String,
    },
    /// A document is not a Kubernetes object.
    #[error("{source_file}: not a Kubernetes object: {msg}")]
    Document {
        /// Where the document came from.
        source_file: String,
        /// What is wrong.
        msg: String,
    },
    /// The cluster does not serve a kind.
    #[error("{what}: the cluster does not serve {api_version} {kind}{hint}")]
    Unknown {
        /// The object.
        what: String,
        /// Its apiVersion.
        api_version: String,
        /// Its kind.
        kind: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// The API refused a request.
    #[error("{action} {what}")]
    Api {
        /// What keadm was doing (`applying`, `deleting`, `reading`).
        action: &'static str,
        /// The object.
        what: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
    /// A CRD did not become Established in time.
    #[error("CustomResourceDefinition {0} was not Established within {1:?}")]
    NotEstablished(String, Duration),
}

/// A kube client from the kubeconfig file `path`.
pub async fn client(path: &Path) -> Result<kube::Client, Error> {
    let err = |msg: String| Error::Kubeconfig { path: path.display().to_string(), msg };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.map_err(|e| err(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| err(e.to_string()))
}

/// One document as an object to apply.
#[derive(Debug, Clone)]
pub struct Object {
    /// The object.
    pub obj: DynamicObject,
    /// Its group, version and kind.
    pub gvk: GroupVersionKind,
}

impl Object {
    /// The objects of documents that may hold several (`---`), skipping those with only
    /// comments.
    pub fn all(docs: &[Doc]) -> Result<Vec<Object>, Error> {
        let mut out = Vec::new();
        for d in docs {
            for text in crate::chart::split_documents(&d.text) {
                if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
                    continue;
                }
                out.push(Object::parse(&Doc { source: d.source.clone(), text })?);
            }
        }
        Ok(out)
    }

    /// Parses a document.
    pub fn parse(doc: &Doc) -> Result<Self, Error> {
        let bad = |msg: String| Error::Document { source_file: doc.source.clone(), msg };
        let obj: DynamicObject = yaml_serde::from_str(&doc.text).map_err(|e| bad(e.to_string()))?;
        let types = obj.types.clone().ok_or_else(|| bad("no apiVersion or kind".into()))?;
        let (group, version) = match types.api_version.split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (String::new(), types.api_version.clone()),
        };
        if obj.metadata.name.as_deref().unwrap_or_default().is_empty() {
            return Err(bad("no metadata.name".into()));
        }
        Ok(Object { gvk: GroupVersionKind { group, version, kind: types.kind }, obj })
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.obj.metadata.name.as_deref().unwrap_or_default()
    }

    /// `Kind namespace/name`, or `Kind name` for cluster-scoped objects.
    pub fn describe(&self) -> String {
        match &self.obj.metadata.namespace {
            Some(ns) => format!("{} {ns}/{}", self.gvk.kind, self.name()),
            None => format!("{} {}", self.gvk.kind, self.name()),
        }
    }
}

/// Resolves kinds to resources by discovery, once per kind.
pub struct Resolver {
    client: kube::Client,
    cache: HashMap<(String, String, String), (ApiResource, bool)>,
}

impl Resolver {
    /// A resolver using `client`.
    pub fn new(client: kube::Client) -> Self {
        Resolver { client, cache: HashMap::new() }
    }

    /// The API for `o` (in `default_ns` when it is namespaced and names none).
    pub async fn api(&mut self, o: &Object, default_ns: &str) -> Result<Api<DynamicObject>, Error> {
        let key = (o.gvk.group.clone(), o.gvk.version.clone(), o.gvk.kind.clone());
        if !self.cache.contains_key(&key) {
            let found = kube::discovery::pinned_kind(&self.client, &o.gvk).await.map_err(|_| Error::Unknown {
                what: o.describe(),
                api_version: o.gvk.api_version(),
                kind: o.gvk.kind.clone(),
                hint: if o.gvk.group == "monitoring.coreos.com" {
                    " (install the Prometheus operator, or leave prometheus.serviceMonitor/prometheusRule disabled)"
                } else {
                    ""
                },
            })?;
            self.cache.insert(key.clone(), (found.0, found.1.scope == Scope::Namespaced));
        }
        let (ar, namespaced) = &self.cache[&key];
        Ok(if *namespaced {
            let ns = o.obj.metadata.namespace.as_deref().unwrap_or(default_ns);
            Api::namespaced_with(self.client.clone(), ns, ar)
        } else {
            Api::all_with(self.client.clone(), ar)
        })
    }

    /// Server-side applies `o`.
    pub async fn apply(&mut self, o: &Object, default_ns: &str) -> Result<(), Error> {
        let api = self.api(o, default_ns).await?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(o.name(), &params, &Patch::Apply(&o.obj)).await.map_err(|source| Error::Api {
            action: "applying",
            what: o.describe(),
            source,
        })?;
        Ok(())
    }

    /// Deletes `o`; returns whether it existed.
    pub async fn delete(&mut self, o: &Object, default_ns: &str) -> Result<bool, Error> {
        let api = self.api(o, default_ns).await?;
        match api.delete(o.name(), &DeleteParams::background()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(source) => Err(Error::Api { action: "deleting", what: o.describe(), source }),
        }
    }
}

/// Waits until every CRD in `names` is Established.
pub async fn wait_established(client: &kube::Client, names: &[String], timeout: Duration) -> Result<(), Error> {
    use kube::runtime::wait::{await_condition, conditions};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in names {
        let wait = await_condition(api.clone(), name, conditions::is_crd_established());
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(Error::Api {
                    action: "waiting for",
                    what: format!("CustomResourceDefinition {name}"),
                    source: kube::Error::Service(Box::new(e)),
                });
            }
            Err(_) => return Err(Error::NotEstablished(name.clone(), timeout)),
        }
    }
    Ok(())
}
