//! `keadm ctl get pod [NAME]`: this node's pods from MetaServer, printed as kubectl does.

use kubeedge_kube_serve::LabelSelector;
use serde_json::Value;

use super::client::encode;
use super::edge::Edge;
use super::print::{self, Output, View};
use super::{Error, pod_kind};

/// `keadm ctl get` flags (kubectl's).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The resource type: pod (pods, po); device is not built yet.
    pub resource: String,
    /// One pod by name.
    pub name: Option<String>,
    /// The namespace.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    pub namespace: String,
    /// Pods of every namespace.
    #[arg(short = 'A', long = "all-namespaces")]
    pub all_namespaces: bool,
    /// A label selector (`app=web,tier!=db`).
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// Output format: wide, json, yaml or name (default: a table).
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<Output>,
}

impl Args {
    /// The MetaServer path to read (with the selector as `labelSelector`).
    pub fn path(&self) -> Result<String, Error> {
        pod_kind(&self.resource, "keadm ctl get")?;
        if let Some(sel) = &self.selector {
            LabelSelector::parse(sel).map_err(|e| Error::Usage(format!("-l {sel:?}: {e}")))?;
        }
        match (&self.name, self.all_namespaces) {
            (Some(_), true) => Err(Error::Usage("a pod name cannot be combined with -A/--all-namespaces".into())),
            (Some(_), false) if self.selector.is_some() => {
                Err(Error::Usage("a pod name cannot be combined with -l/--selector".into()))
            }
            (Some(name), false) => Ok(format!("/api/v1/namespaces/{}/pods/{}", encode(&self.namespace), encode(name))),
            (None, all) => {
                let base = if all {
                    "/api/v1/pods".to_owned()
                } else {
                    format!("/api/v1/namespaces/{}/pods", encode(&self.namespace))
                };
                Ok(match &self.selector {
                    Some(sel) => format!("{base}?labelSelector={}", encode(sel)),
                    None => base,
                })
            }
        }
    }
}

pub async fn run(args: &Args, edge: &Edge) -> Result<(), Error> {
    let path = args.path()?;
    let answer = edge.metaserver()?.get_json(&path).await?;
    let single = args.name.is_some();
    let objects: Vec<Value> =
        if single { vec![answer] } else { answer.get("items").and_then(Value::as_array).cloned().unwrap_or_default() };
    if objects.is_empty() && args.output.is_none_or(|o| o == Output::Wide) {
        if args.all_namespaces {
            eprintln!("No resources found");
        } else {
            eprintln!("No resources found in {} namespace.", args.namespace);
        }
        return Ok(());
    }
    let view = View {
        resource: "pods",
        objects: &objects,
        output: args.output,
        namespace_column: args.all_namespaces,
        single,
    };
    super::write_out(&print::render(&view, kubeedge_kube_serve::time::now_unix()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn path(argv: &[&str]) -> Result<String, Error> {
        let cli = Cli::try_parse_from(std::iter::once("get").chain(argv.iter().copied()))
            .map_err(|e| Error::Usage(e.to_string()))?;
        cli.args.path()
    }

    #[test]
    fn flags_become_metaserver_paths() {
        assert_eq!(path(&["pods"]).unwrap(), "/api/v1/namespaces/default/pods");
        assert_eq!(path(&["pod", "web", "-n", "kube-system"]).unwrap(), "/api/v1/namespaces/kube-system/pods/web");
        assert_eq!(path(&["po", "-A"]).unwrap(), "/api/v1/pods");
        assert_eq!(
            path(&["pods", "-l", "app=web,tier!=db"]).unwrap(),
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb%2Ctier%21%3Ddb"
        );
        assert!(matches!(path(&["pods", "web", "-A"]), Err(Error::Usage(_))));
        assert!(matches!(path(&["pods", "-l", "a b c"]), Err(Error::Usage(_))));
        assert!(matches!(path(&["services"]), Err(Error::Usage(_))));
        assert!(matches!(path(&["device"]), Err(Error::Unbuilt(..))));
        assert!(path(&["pods", "-o", "xml"]).is_err());
    }
}
