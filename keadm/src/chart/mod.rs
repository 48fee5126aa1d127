//! The cloudcore Helm chart (`manifests/charts/cloudcore`), embedded in keadm and rendered
//! here without helm: values as Helm composes them ([`values`]), templates with Go's
//! text/template and Helm's functions ([`template`]), the output split into documents and
//! ordered as Helm installs them. `keadm manifest` prints the result; `keadm init` applies it.

pub mod template;
pub mod value;
pub mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use value::Value;

/// The chart's files, relative to its root, compiled into keadm. A test checks that this list
/// is exactly the chart directory.
const EMBEDDED: &[(&str, &str)] = &[
    ("Chart.yaml", include_str!("../../../manifests/charts/cloudcore/Chart.yaml")),
    ("values.yaml", include_str!("../../../manifests/charts/cloudcore/values.yaml")),
    (
        "crds/cluster_objectsync_v1alpha1.yaml",
        include_str!("../../../manifests/charts/cloudcore/crds/cluster_objectsync_v1alpha1.yaml"),
    ),
    (
        "crds/devices_v1beta1_device.yaml",
        include_str!("../../../manifests/charts/cloudcore/crds/devices_v1beta1_device.yaml"),
    ),
    (
        "crds/devices_v1beta1_devicemodel.yaml",
        include_str!("../../../manifests/charts/cloudcore/crds/devices_v1beta1_devicemodel.yaml"),
    ),
    (
        "crds/devices_v1beta1_devicestatus.yaml",
        include_str!("../../../manifests/charts/cloudcore/crds/devices_v1beta1_devicestatus.yaml"),
    ),
    (
        "crds/objectsync_v1alpha1.yaml",
        include_str!("../../../manifests/charts/cloudcore/crds/objectsync_v1alpha1.yaml"),
    ),
    (
        "crds/operations_v1alpha2_configupdatejob.yaml",
        include_str!("../../../manifests/charts/cloudcore/crds/operations_v1alpha2_configupdatejob.yaml"),
    ),
    (
        "crds/operations_v1alpha2_imageprepulljob.yaml",
        include_str!("../../../manifests/charts/cloudcore/crds/operations_v1alpha2_imageprepulljob.yaml"),
    ),
    (
        "crds/operations_v1alpha2_nodeupgradejob.yaml",
        include_str!("../../../manifests/charts/cloudcore/crds/operations_v1alpha2_nodeupgradejob.yaml"),
    ),
    ("crds/router_v1_rule.yaml", include_str!("../../../manifests/charts/cloudcore/crds/router_v1_rule.yaml")),
    (
        "crds/router_v1_ruleEndpoint.yaml",
        include_str!("../../../manifests/charts/cloudcore/crds/router_v1_ruleEndpoint.yaml"),
    ),
    ("templates/_helpers.tpl", include_str!("../../../manifests/charts/cloudcore/templates/_helpers.tpl")),
    (
        "templates/configmap_cloudcore.yaml",
        include_str!("../../../manifests/charts/cloudcore/templates/configmap_cloudcore.yaml"),
    ),
    (
        "templates/deployment_cloudcore.yaml",
        include_str!("../../../manifests/charts/cloudcore/templates/deployment_cloudcore.yaml"),
    ),
    ("templates/prometheus.yaml", include_str!("../../../manifests/charts/cloudcore/templates/prometheus.yaml")),
    (
        "templates/rbac_cloudcore.yaml",
        include_str!("../../../manifests/charts/cloudcore/templates/rbac_cloudcore.yaml"),
    ),
    (
        "templates/service_cloudcore.yaml",
        include_str!("../../../manifests/charts/cloudcore/templates/service_cloudcore.yaml"),
    ),
    (
        "templates/serviceaccount_cloudcore.yaml",
        include_str!("../../../manifests/charts/cloudcore/templates/serviceaccount_cloudcore.yaml"),
    ),
];

/// Built-in profiles (`--profile NAME=…`), as upstream's `manifests/profiles/`.
pub const PROFILES: &[(&str, &str)] = &[("version", include_str!("../../../manifests/profiles/version.yaml"))];

/// The release name and namespace (`helm template cloudcore --namespace kubeedge`).
pub const RELEASE: &str = "cloudcore";

/// Why the chart could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of an external chart cannot be read.
    #[error("reading the chart at {path}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The chart lacks a file.
    #[error("the chart has no {0}")]
    Missing(&'static str),
    /// A YAML file of the chart does not parse.
    #[error("the chart's {file} is not valid YAML")]
    Yaml {
        /// Which file.
        file: String,
        /// Why.
        #[source]
        source: value::YamlError,
    },
    /// A template failed.
    #[error(transparent)]
    Template(#[from] template::Error),
}

/// One YAML document of the output and the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    /// `cloudcore/templates/x.yaml` or `cloudcore/crds/x.yaml`.
    pub source: String,
    /// The document, without `---`.
    pub text: String,
}

/// A chart's files.
pub struct Chart {
    files: Vec<(String, String)>,
}

impl Chart {
    /// The chart compiled into keadm.
    pub fn embedded() -> Self {
        Chart { files: EMBEDDED.iter().map(|(p, t)| ((*p).to_owned(), (*t).to_owned())).collect() }
    }

    /// A chart directory (`--external-helm-root DIR` reads `DIR/charts/cloudcore`).
    pub fn from_dir(root: &Path) -> Result<Self, Error> {
        let mut files = Vec::new();
        for sub in ["", "templates", "crds"] {
            let dir = root.join(sub);
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !sub.is_empty() => continue,
                Err(source) => return Err(Error::Read { path: dir, source }),
            };
            for entry in entries {
                let path = entry.map_err(|source| Error::Read { path: dir.clone(), source })?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
                let wanted = if sub.is_empty() {
                    name == "Chart.yaml" || name == "values.yaml"
                } else {
                    name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".tpl")
                };
                if wanted && path.is_file() {
                    let text =
                        std::fs::read_to_string(&path).map_err(|source| Error::Read { path: path.clone(), source })?;
                    files.push((if sub.is_empty() { name } else { format!("{sub}/{name}") }, text));
                }
            }
        }
        files.sort();
        Ok(Chart { files })
    }

    /// The relative paths of the chart's files.
    #[cfg(test)]
    fn paths(&self) -> Vec<&str> {
        self.files.iter().map(|(p, _)| p.as_str()).collect()
    }

    fn file(&self, path: &'static str) -> Result<&str, Error> {
        self.files.iter().find(|(p, _)| p == path).map(|(_, t)| t.as_str()).ok_or(Error::Missing(path))
    }

    fn yaml(&self, path: &'static str) -> Result<Value, Error> {
        Value::from_yaml(self.file(path)?).map_err(|source| Error::Yaml { file: path.to_owned(), source })
    }

    /// The chart's `values.yaml`.
    pub fn default_values(&self) -> Result<Value, Error> {
        self.yaml("values.yaml")
    }

    /// The CRD files (`crds/`), whole, as `helm template --include-crds` prints them.
    pub fn crds(&self) -> Vec<Doc> {
        let files = self.files.iter().filter(|(p, _)| p.starts_with("crds/"));
        files.map(|(path, text)| Doc { source: format!("{RELEASE}/{path}"), text: text.clone() }).collect()
    }

    /// Renders the templates with `user` values coalesced over the chart's, for release
    /// `cloudcore` in `namespace`: the documents in Helm's install order.
    pub fn render(&self, user: Value, namespace: &str) -> Result<Vec<Doc>, Error> {
        let values = values::coalesce(user, &self.default_values()?);
        let chart = self.yaml("Chart.yaml")?;
        let field = |k: &str| match &chart {
            Value::Map(m) => m.get(k).cloned().unwrap_or(Value::Nil),
            _ => Value::Nil,
        };
        let s = |v: &str| Value::Str(v.to_owned());
        let dot = Value::Map(BTreeMap::from([
            ("Values".to_owned(), values),
            (
                "Release".to_owned(),
                Value::Map(BTreeMap::from([
                    ("Name".to_owned(), s(RELEASE)),
                    ("Namespace".to_owned(), s(namespace)),
                    ("Service".to_owned(), s("Helm")),
                    ("IsInstall".to_owned(), Value::Bool(true)),
                    ("IsUpgrade".to_owned(), Value::Bool(false)),
                    ("Revision".to_owned(), Value::Int(1)),
                ])),
            ),
            (
                "Chart".to_owned(),
                Value::Map(BTreeMap::from([
                    ("Name".to_owned(), field("name")),
                    ("Version".to_owned(), field("version")),
                    ("AppVersion".to_owned(), field("appVersion")),
                ])),
            ),
        ]));
        let templates = template::Templates::parse(
            self.files.iter().filter(|(p, _)| p.starts_with("templates/")).map(|(p, t)| (p.as_str(), t.as_str())),
        )?;
        let mut docs = Vec::new();
        for (path, text) in templates.render(&dot)? {
            for doc in split_documents(&text) {
                docs.push(Doc { source: format!("{RELEASE}/{path}"), text: doc });
            }
        }
        // Helm sorts by kind: its install order, then unknown kinds by name; stable within a kind.
        docs.sort_by_cached_key(|d| {
            let kind = kind_of(&d.text);
            (install_rank(&kind), kind)
        });
        Ok(docs)
    }
}

/// Helm's `SplitManifests`: documents separated by `---` lines, blank ones dropped.
pub fn split_documents(text: &str) -> Vec<String> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            docs.push(std::mem::take(&mut cur));
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    docs.push(cur);
    docs.into_iter().map(|d| d.trim().to_owned()).filter(|d| !d.is_empty()).collect()
}

/// The `kind:` of a document (empty when it has none).
pub fn kind_of(doc: &str) -> String {
    doc.lines().find_map(|l| l.strip_prefix("kind:")).map(|k| k.trim().trim_matches('"').to_owned()).unwrap_or_default()
}

/// Helm's `InstallOrder` (kinds not listed go last, ordered by name by the caller).
pub fn install_rank(kind: &str) -> usize {
    const ORDER: &[&str] = &[
        "PriorityClass",
        "Namespace",
        "NetworkPolicy",
        "ResourceQuota",
        "LimitRange",
        "PodSecurityPolicy",
        "PodDisruptionBudget",
        "ServiceAccount",
        "Secret",
        "SecretList",
        "ConfigMap",
        "StorageClass",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleList",
        "ClusterRoleBinding",
        "ClusterRoleBindingList",
        "Role",
        "RoleList",
        "RoleBinding",
        "RoleBindingList",
        "Service",
        "DaemonSet",
        "Pod",
        "ReplicationController",
        "ReplicaSet",
        "Deployment",
        "HorizontalPodAutoscaler",
        "StatefulSet",
        "Job",
        "CronJob",
        "IngressClass",
        "Ingress",
        "APIService",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ];
    ORDER.iter().position(|k| *k == kind).unwrap_or(ORDER.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded list is the chart directory: a new template cannot be forgotten.
    #[test]
    fn embedded_files_are_the_chart_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/charts/cloudcore");
        let on_disk = Chart::from_dir(&dir).unwrap();
        let mut embedded = Chart::embedded();
        embedded.files.sort();
        assert_eq!(embedded.paths(), on_disk.paths(), "add new chart files to EMBEDDED");
        assert!(embedded.files == on_disk.files, "embedded files differ from the chart directory");
    }

    #[test]
    fn documents_split_as_helm() {
        assert_eq!(split_documents("---\na: 1\n---\n\n--- \n# c\nb: 2\n"), vec!["a: 1", "# c\nb: 2"]);
    }
}
