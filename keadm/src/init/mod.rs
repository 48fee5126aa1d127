//! `keadm init`: installs cloudcore into the cluster from the chart keadm carries, without
//! helm. It renders the chart ([`options`]), checks the cluster (reachable, new enough, no
//! cloudcore installed yet unless `--force`), then applies through the Kubernetes API with
//! server-side apply ([`apply`]): the CRDs first, waiting until they are Established, the
//! `kubeedge` namespace (helm's `--create-namespace`), then the chart's objects in Helm's install
//! order (ServiceAccount, ConfigMap, RBAC, Service, Deployment…) and the extra `--manifests`.
//! `--dry-run` prints the plan and writes nothing.

pub mod apply;
pub mod manifest;
pub mod options;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::ListParams;

use apply::{Object, Resolver};
use options::{ChartArgs, NAMESPACE};

/// How long CRDs may take to be Established.
const CRD_TIMEOUT: Duration = Duration::from_secs(60);

/// `keadm init` flags (upstream's).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    chart: ChartArgs,
    /// Print what would be applied; change nothing.
    #[arg(long = "dry-run", short = 'd')]
    dry_run: bool,
    /// Install even though cloudcore is installed: re-apply every object.
    #[arg(long)]
    force: bool,
    /// Skip the checks of the cluster and of the rendered cloudcore.yaml.
    #[arg(long = "skip-preflight-checks")]
    skip_preflight_checks: bool,
}

/// Why `keadm init` failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Flags, values or the chart.
    #[error(transparent)]
    Render(#[from] options::Error),
    /// Talking to the cluster.
    #[error(transparent)]
    Apply(#[from] apply::Error),
    /// cloudcore is already there.
    #[error("cloudcore is already installed ({0}); run `keadm reset` first, or `keadm init --force` to re-apply it")]
    Installed(String),
    /// A preflight check failed.
    #[error("preflight check {check} failed: {msg} (skip the checks with --skip-preflight-checks)")]
    Preflight {
        /// The check's name.
        check: &'static str,
        /// What is wrong.
        msg: String,
    },
}

/// Prints `keadm {cmd}: {error}` with its causes; exit 64 for usage errors, else 1.
pub fn exit(cmd: &str, e: &dyn std::error::Error, usage: bool) -> ExitCode {
    let mut msg = format!("keadm {cmd}: {e}");
    let mut cause = e.source();
    while let Some(c) = cause {
        msg.push_str(&format!(": {c}"));
        cause = c.source();
    }
    eprintln!("{msg}");
    ExitCode::from(if usage { 64 } else { 1 })
}

/// Runs `keadm init`.
pub fn main(args: &Args) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return exit("init", &e, false),
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let usage = matches!(&e, Error::Render(r) if r.is_usage());
            exit("init", &e, usage)
        }
    }
}

async fn run(args: &Args) -> Result<(), Error> {
    let started = Instant::now();
    let rendered = args.chart.render()?;
    let crds = Object::all(&rendered.crds)?;
    let objects = Object::all(&rendered.objects)?;
    let extra = Object::all(&rendered.extra)?;
    if !args.skip_preflight_checks {
        check_config(&objects)?;
    }

    let client = apply::client(&args.chart.kube_config).await?;
    if !args.skip_preflight_checks {
        check_cluster(&client).await?;
    }
    if let Some(found) = installed(&client).await?
        && !args.force
    {
        return Err(Error::Installed(found));
    }

    let namespace = Object::parse(&crate::chart::Doc {
        source: "keadm".into(),
        text: format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n"),
    })?;
    let mut plan: Vec<&Object> = crds.iter().collect();
    plan.push(&namespace);
    plan.extend(objects.iter().chain(&extra));
    if args.dry_run {
        for o in &plan {
            println!("[dry-run] would apply {}", o.describe());
        }
        println!("[dry-run] nothing was changed");
        return Ok(());
    }

    let mut resolver = Resolver::new(client.clone());
    for o in &crds {
        resolver.apply(o, NAMESPACE).await?;
        println!("applied {}", o.describe());
    }
    let names: Vec<String> = crds.iter().map(|o| o.name().to_owned()).collect();
    apply::wait_established(&client, &names, CRD_TIMEOUT).await?;
    println!("CustomResourceDefinitions established");
    for o in plan.iter().skip(crds.len()) {
        resolver.apply(o, NAMESPACE).await?;
        println!("applied {}", o.describe());
    }
    println!(
        "cloudcore is installed in namespace {NAMESPACE} ({} objects in {:.1?}).\n\
         Watch it start: kubectl -n {NAMESPACE} rollout status deployment/cloudcore\n\
         Then get a join token for edges: keadm gettoken --kube-config {}",
        plan.len(),
        started.elapsed(),
        args.chart.kube_config.display()
    );
    Ok(())
}

/// What shows that cloudcore is installed: its Deployment, or a helm release of the chart
/// (upstream refuses when the release exists).
pub async fn installed(client: &kube::Client) -> Result<Option<String>, apply::Error> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    match deployments.get_opt("cloudcore").await {
        Ok(Some(_)) => return Ok(Some(format!("deployment {NAMESPACE}/cloudcore exists"))),
        Ok(None) => {}
        // A cluster without apps/v1 has no Deployment to find.
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(source) => {
            return Err(apply::Error::Api {
                action: "reading",
                what: format!("deployment {NAMESPACE}/cloudcore"),
                source,
            });
        }
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let releases = ListParams::default().labels(&format!("owner=helm,name={}", crate::chart::RELEASE));
    match secrets.list_metadata(&releases).await {
        Ok(l) if !l.items.is_empty() => Ok(Some(format!("helm release {NAMESPACE}/{}", crate::chart::RELEASE))),
        Ok(_) => Ok(None),
        Err(source) => Err(apply::Error::Api { action: "listing", what: "helm releases".into(), source }),
    }
}

/// The cloudcore.yaml the chart renders must be one cloudcore accepts.
fn check_config(objects: &[Object]) -> Result<(), Error> {
    let config = objects
        .iter()
        .find(|o| o.gvk.kind == "ConfigMap" && o.name() == "cloudcore")
        .and_then(|o| o.obj.data.pointer("/data/cloudcore.yaml")?.as_str().map(str::to_owned));
    let Some(config) = config else { return Ok(()) };
    let fail = |msg: String| Error::Preflight { check: "cloudcore.yaml", msg };
    let loaded = kubeedge_config::load::<kubeedge_config::cloudcore::CloudCoreConfig>(&config)
        .map_err(|e| fail(e.to_string()))?;
    loaded.config.validate().map_err(|e| fail(e.to_string()))
}

/// The cluster answers and is recent enough for the chart (apps/v1, CRDs v1).
async fn check_cluster(client: &kube::Client) -> Result<(), Error> {
    let v = client
        .apiserver_version()
        .await
        .map_err(|e| Error::Preflight { check: "kube-apiserver", msg: format!("the cluster does not answer: {e}") })?;
    let minor: u32 = v.minor.trim_end_matches('+').parse().unwrap_or(0);
    if v.major != "1" || minor < 25 {
        return Err(Error::Preflight {
            check: "kubernetes-version",
            msg: format!("Kubernetes {} is older than the 1.25 this chart needs", v.git_version),
        });
    }
    Ok(())
}
