//! `keadm debug get TYPE [NAME]`: resources straight from edgecore.db's `meta` table, opened
//! read-only, so it works with edgecore stopped (and the cloud gone). Pods are shown with the
//! newest status Edged recorded (`podpatch`/`podstatus` rows), as upstream merges them.

use std::path::PathBuf;

use kubeedge_kube_serve::LabelSelector;
use kubeedge_metastore::ReadOnly;
use serde_json::Value;

use super::{Ctx, Error};
use crate::ctl::print::{self, Output, View};
use crate::paths;

/// `keadm debug get` flags (upstream's).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// pod, node, service, secret, configmap, endpoints, or all.
    pub resource: String,
    /// One object by name.
    pub name: Option<String>,
    /// The namespace.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    pub namespace: String,
    /// Every namespace.
    #[arg(short = 'A', long = "all-namespaces")]
    pub all_namespaces: bool,
    /// A label selector.
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// Output format: wide, json, yaml or name (default: a table).
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<Output>,
    /// edgecore.db (default: `database.dataSource` of edgecore.yaml, else
    /// /var/lib/kubeedge/edgecore.db).
    #[arg(short = 'p', long = "edgedb-path")]
    pub edgedb_path: Option<PathBuf>,
}

/// A type name (any spelling) to the `meta` type and the plural kubectl prints.
pub fn kind(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name.to_ascii_lowercase().as_str() {
        "pod" | "pods" | "po" => ("pod", "pods"),
        "node" | "nodes" | "no" => ("node", "nodes"),
        "service" | "services" | "svc" => ("service", "services"),
        "secret" | "secrets" => ("secret", "secrets"),
        "configmap" | "configmaps" | "cm" => ("configmap", "configmaps"),
        "endpoints" | "endpoint" | "ep" => ("endpoints", "endpoints"),
        _ => return None,
    })
}

/// What `all` lists.
const ALL: [&str; 6] = ["pod", "node", "service", "secret", "configmap", "endpoints"];

/// Which rows of a type are shown.
pub struct Filter {
    /// `None`: every namespace.
    pub namespace: Option<String>,
    /// One object.
    pub name: Option<String>,
    /// Labels.
    pub selector: LabelSelector,
}

impl Filter {
    fn keeps(&self, obj: &Value) -> bool {
        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        // Cluster-scoped objects (nodes) have no namespace and are always in scope.
        self.namespace.as_deref().is_none_or(|want| ns.is_empty() || ns == want)
            && self.name.as_deref().is_none_or(|want| name == want)
            && self.selector.matches(obj.pointer("/metadata/labels").and_then(Value::as_object))
    }
}

/// The objects of `ty` in the database, pods with their newest recorded status.
pub fn objects(db: &ReadOnly, ty: &str, filter: &Filter) -> Result<Vec<Value>, kubeedge_metastore::Error> {
    let mut out = Vec::new();
    for row in db.list_by_type(ty)? {
        let Ok(mut obj) = serde_json::from_str::<Value>(&row.value) else { continue };
        if !filter.keeps(&obj) {
            continue;
        }
        if ty == "pod" {
            merge_status(db, &row.key, &mut obj)?;
        }
        out.push(obj);
    }
    Ok(out)
}

/// Replaces a pod's `status` by the newest one Edged stored (`ns/podpatch/name`, then
/// `ns/podstatus/name`).
fn merge_status(db: &ReadOnly, key: &str, pod: &mut Value) -> Result<(), kubeedge_metastore::Error> {
    let Some((ns, name)) = key.split_once("/pod/") else { return Ok(()) };
    for ty in ["podpatch", "podstatus"] {
        if let Some(row) = db.get(&format!("{ns}/{ty}/{name}"))? {
            let status = serde_json::from_str::<Value>(&row.value).ok().and_then(|v| v.get("status").cloned());
            if let (Some(status), Some(obj)) = (status, pod.as_object_mut()) {
                obj.insert("status".into(), status);
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The database to read: `--edgedb-path`, else edgecore.yaml's, else the default.
pub fn database(ctx: &Ctx, flag: Option<&PathBuf>) -> PathBuf {
    if let Some(p) = flag {
        return p.clone();
    }
    ctx.edge().map_or_else(|_| ctx.at(format!("{}/edgecore.db", paths::STATE_DIR)), |e| e.database())
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<(), Error> {
    let types: Vec<(&str, &str)> = if args.resource.eq_ignore_ascii_case("all") {
        ALL.iter().filter_map(|t| kind(t)).collect()
    } else {
        vec![kind(&args.resource).ok_or_else(|| {
            Error::Usage(format!(
                "keadm debug get: unknown type {:?} (pod, node, service, secret, configmap, endpoints or all)",
                args.resource
            ))
        })?]
    };
    if args.name.is_some() && args.all_namespaces {
        return Err(Error::Usage("a name cannot be combined with -A/--all-namespaces".into()));
    }
    let selector = match &args.selector {
        Some(s) => LabelSelector::parse(s).map_err(|e| Error::Usage(format!("-l {s:?}: {e}")))?,
        None => LabelSelector::everything(),
    };
    let filter =
        Filter { namespace: (!args.all_namespaces).then(|| args.namespace.clone()), name: args.name.clone(), selector };
    let path = database(ctx, args.edgedb_path.as_ref());
    let db = ReadOnly::open(&path).map_err(|source| Error::Db { path: path.clone(), source })?;
    let mut printed = 0;
    let now = kubeedge_kube_serve::time::now_unix();
    for (ty, plural) in types {
        let objects = objects(&db, ty, &filter).map_err(|source| Error::Db { path: path.clone(), source })?;
        if objects.is_empty() {
            continue;
        }
        let view = View {
            resource: plural,
            objects: &objects,
            output: args.output,
            namespace_column: args.all_namespaces,
            single: args.name.is_some(),
        };
        if printed > 0 && args.output.is_none_or(|o| o == Output::Wide) {
            println!();
        }
        printed += objects.len();
        print!("{}", print::render(&view, now));
    }
    if printed == 0 {
        match &args.name {
            Some(n) => {
                eprintln!("Error from edgecore.db: {} {n:?} not found", args.resource);
                return Err(Error::Failed(1));
            }
            None if args.all_namespaces => eprintln!("No resources found"),
            None => eprintln!("No resources found in {} namespace.", args.namespace),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_upstream_fixture_with_merged_status() {
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/metastore/tests/fixtures/upstream-edgecore.db");
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("edgecore.db");
        std::fs::copy(fixture, &db).unwrap();
        let ro = ReadOnly::open(&db).unwrap();
        let all = Filter { namespace: None, name: None, selector: LabelSelector::everything() };
        let pods = objects(&ro, "pod", &all).unwrap();
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0]["metadata"]["name"], "nginx");
        assert_eq!(pods[0]["status"]["phase"], "Running", "status from the podpatch row: {}", pods[0]);
        let nodes = objects(&ro, "node", &Filter { namespace: Some("default".into()), ..all }).unwrap();
        assert_eq!(nodes.len(), 1, "cluster-scoped objects ignore -n");
        let none = Filter { namespace: Some("kube-system".into()), name: None, selector: LabelSelector::everything() };
        assert!(objects(&ro, "pod", &none).unwrap().is_empty());
        assert_eq!(kind("svc"), Some(("service", "services")));
        assert_eq!(kind("CM"), Some(("configmap", "configmaps")));
        assert_eq!(kind("deployment"), None);
    }
}
