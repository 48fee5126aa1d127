//! The flags `keadm init` and `keadm manifest` share (upstream's names), and turning them into
//! the chart's values and rendered documents, as upstream keadm does: a `--profile` (a values
//! file, or a built-in `version=vX.Y.Z`), then the `--set`s, then what `--kubeedge-version`,
//! `--image-repository` and `--advertise-address` imply.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::chart::value::Value;
use crate::chart::{self, Chart, Doc, values};

/// The namespace cloudcore is installed into (upstream `constants.SystemNamespace`).
pub const NAMESPACE: &str = "kubeedge";

/// Flags of `keadm init` and `keadm manifest`.
#[derive(clap::Args, Debug, Clone)]
pub struct ChartArgs {
    /// IPs edge nodes reach cloudcore at, comma-separated; they go in cloudcore's certificate
    /// (cloudCore.modules.cloudHub.advertiseAddress).
    #[arg(long = "advertise-address", value_name = "IP[,IP…]")]
    pub advertise_address: Option<String>,
    /// The kubeconfig of the cluster.
    #[arg(long = "kube-config", default_value = "/root/.kube/config")]
    pub kube_config: PathBuf,
    /// The image tag of cloudcore (cloudCore.image.tag), e.g. v0.1.0.
    #[arg(long = "kubeedge-version")]
    pub kubeedge_version: Option<String>,
    /// A registry/prefix for the images: cloudCore.image.repository becomes REPO/cloudcore.
    #[arg(long = "image-repository")]
    pub image_repository: Option<String>,
    /// Set a chart value, as helm --set (repeatable; key1=val1,key2=val2 also works).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// A values file (/path/values.yaml), or a built-in profile: version=vX.Y.Z.
    #[arg(long)]
    pub profile: Option<String>,
    /// More manifests to append (applied after the chart), comma-separated files.
    #[arg(long = "manifests", short = 'f', alias = "files", value_name = "FILE[,FILE…]")]
    pub manifests: Option<String>,
    /// A directory with charts/cloudcore (and profiles/) to use instead of the built-in chart.
    #[arg(long = "external-helm-root")]
    pub external_helm_root: Option<PathBuf>,
}

/// Why the flags cannot be turned into manifests.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag's value is wrong (exit 64).
    #[error("{flag}: {msg}")]
    Flag {
        /// The flag, e.g. `--profile`.
        flag: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// A file named by a flag cannot be read.
    #[error("{flag}: reading {path}")]
    Read {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A values file named by a flag is not YAML.
    #[error("{flag}: {path} is not a values file")]
    Values {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: chart::value::YamlError,
    },
    /// A `--set` does not parse.
    #[error(transparent)]
    Set(#[from] values::SetError),
    /// The chart does not load or render.
    #[error(transparent)]
    Chart(#[from] chart::Error),
}

impl Error {
    /// Whether the user must fix the command line (exit 64) rather than the environment.
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Flag { .. } | Error::Set(_) | Error::Values { .. })
    }
}

/// What keadm installs: CRDs, the chart's objects, and the extra `--manifests`.
pub struct Rendered {
    /// `crds/` of the chart.
    pub crds: Vec<Doc>,
    /// The rendered templates, in Helm's install order.
    pub objects: Vec<Doc>,
    /// The `--manifests` files' documents.
    pub extra: Vec<Doc>,
}

impl ChartArgs {
    /// The chart: built in, or `--external-helm-root`'s.
    fn chart(&self) -> Result<Chart, Error> {
        match &self.external_helm_root {
            Some(root) => Ok(Chart::from_dir(&root.join("charts/cloudcore"))?),
            None => Ok(Chart::embedded()),
        }
    }

    /// The user values: profile, `--set`s, then the values the other flags imply.
    pub fn user_values(&self) -> Result<Value, Error> {
        let mut user = Value::Map(Default::default());
        let mut implied = Vec::new();
        if let Some(profile) = &self.profile {
            match profile.split_once('=') {
                Some(("version", version)) => {
                    user = self.builtin_profile("version")?;
                    implied.push(format!("cloudCore.image.tag={}", with_v(version)));
                }
                Some((name, _)) => {
                    return Err(Error::Flag {
                        flag: "--profile",
                        msg: format!(
                            "unknown profile {name:?}: the built-in profile is version=vX.Y.Z; or give a values file"
                        ),
                    });
                }
                None => {
                    let text = std::fs::read_to_string(profile).map_err(|source| Error::Read {
                        flag: "--profile",
                        path: profile.into(),
                        source,
                    })?;
                    user = Value::from_yaml(&text).map_err(|source| Error::Values {
                        flag: "--profile",
                        path: profile.clone(),
                        source,
                    })?;
                }
            }
        }
        if let Some(version) = &self.kubeedge_version {
            implied.push(format!("cloudCore.image.tag={}", with_v(version)));
        }
        if let Some(repo) = &self.image_repository {
            implied.push(format!("cloudCore.image.repository={}/cloudcore", repo.trim_end_matches('/')));
        }
        // Like upstream: flags fill only what no --set gives; the advertise address always wins.
        let given =
            |s: &str| self.set.iter().any(|set| set.split(',').any(|kv| kv.split('=').next() == s.split('=').next()));
        let mut sets: Vec<String> = self.set.clone();
        sets.extend(implied.into_iter().filter(|s| !given(s)));
        if let Some(addrs) = &self.advertise_address {
            for (i, a) in addrs.split(',').enumerate() {
                a.trim().parse::<IpAddr>().map_err(|_| Error::Flag {
                    flag: "--advertise-address",
                    msg: format!("{a:?} is not an IP address"),
                })?;
                sets.push(format!("cloudCore.modules.cloudHub.advertiseAddress[{i}]={}", a.trim()));
            }
        }
        for s in &sets {
            values::apply_set(&mut user, s)?;
        }
        Ok(user)
    }

    fn builtin_profile(&self, name: &str) -> Result<Value, Error> {
        let text = match &self.external_helm_root {
            Some(root) => {
                let path = root.join(format!("profiles/{name}.yaml"));
                std::fs::read_to_string(&path).map_err(|source| Error::Read { flag: "--profile", path, source })?
            }
            None => chart::PROFILES.iter().find(|(n, _)| *n == name).map(|(_, t)| (*t).to_owned()).unwrap_or_default(),
        };
        Value::from_yaml(&text).map_err(|source| Error::Values { flag: "--profile", path: name.to_owned(), source })
    }

    /// Renders everything keadm installs.
    pub fn render(&self) -> Result<Rendered, Error> {
        let chart = self.chart()?;
        let objects = chart.render(self.user_values()?, NAMESPACE)?;
        let mut extra = Vec::new();
        for file in self.manifests.iter().flat_map(|m| m.split(',')).filter(|f| !f.is_empty()) {
            let text = std::fs::read_to_string(file).map_err(|source| Error::Read {
                flag: "--manifests",
                path: file.into(),
                source,
            })?;
            extra.extend(chart::split_documents(&text).into_iter().map(|text| Doc { source: file.to_owned(), text }));
        }
        Ok(Rendered { crds: chart.crds(), objects, extra })
    }
}

fn with_v(version: &str) -> String {
    if version.starts_with('v') { version.to_owned() } else { format!("v{version}") }
}

/// Prints documents as `helm template` does: `---`, a `# Source:` line, the document.
pub fn print_stream(docs: &[&Doc]) -> String {
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n# Source: ");
        out.push_str(&d.source);
        out.push('\n');
        out.push_str(&d.text);
        out.push('\n');
    }
    out
}
