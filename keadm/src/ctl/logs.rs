//! `keadm ctl logs POD`: a container's log from Edged's kubelet server
//! (`/containerLogs/{ns}/{pod}/{container}`), streamed to stdout as it arrives.

use std::time::Duration;

use http::Method;

use super::client::encode;
use super::edge::Edge;
use super::{Error, container_of};

/// How long a log that is not followed may pause mid-body before keadm gives up (a followed
/// log waits as long as the container runs).
const IDLE: Duration = Duration::from_secs(30);

/// `keadm ctl logs` flags (kubectl's).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pod.
    pub pod: String,
    /// The container (default: the pod's default container, or its only one).
    #[arg(short = 'c', long = "container")]
    pub container: Option<String>,
    /// The namespace.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    pub namespace: String,
    /// Keep streaming new lines until the container stops.
    #[arg(short = 'f', long = "follow")]
    pub follow: bool,
    /// The last N lines only (-1: all).
    #[arg(long = "tail", default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,
    /// The log of the previous run of the container.
    #[arg(short = 'p', long = "previous")]
    pub previous: bool,
    /// Only lines newer than this many seconds.
    #[arg(long = "since-second", alias = "since-seconds")]
    pub since_seconds: Option<u64>,
    /// Prefix each line with its timestamp.
    #[arg(long = "timestamps")]
    pub timestamps: bool,
}

impl Args {
    /// The query kubelet's `/containerLogs` takes.
    pub fn query(&self) -> String {
        let mut q = Vec::new();
        if self.follow {
            q.push("follow=true".to_owned());
        }
        if self.tail >= 0 {
            q.push(format!("tailLines={}", self.tail));
        }
        if self.previous {
            q.push("previous=true".to_owned());
        }
        if let Some(s) = self.since_seconds {
            q.push(format!("sinceSeconds={s}"));
        }
        if self.timestamps {
            q.push("timestamps=true".to_owned());
        }
        q.join("&")
    }
}

pub async fn run(args: &Args, edge: &Edge) -> Result<(), Error> {
    let kubelet = edge.kubelet()?;
    let container = container_of(edge, &args.namespace, &args.pod, args.container.as_deref()).await?;
    let mut path = format!("/containerLogs/{}/{}/{}", encode(&args.namespace), encode(&args.pod), encode(&container));
    let query = args.query();
    if !query.is_empty() {
        path = format!("{path}?{query}");
    }
    let resp = kubelet.send(Method::GET, &path, None).await?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(resp.into_body(), 64 * 1024))
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(kubelet.status(&path, status, &body));
    }
    let idle = (!args.follow).then_some(IDLE);
    kubelet.stream_to(resp.into_body(), &mut std::io::stdout().lock(), idle).await
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

    #[test]
    fn flags_become_kubelets_query() {
        let q = |argv: &[&str]| {
            Cli::try_parse_from(std::iter::once("logs").chain(argv.iter().copied())).unwrap().args.query()
        };
        assert_eq!(q(&["web"]), "");
        assert_eq!(q(&["web", "-f", "--tail", "5", "-p"]), "follow=true&tailLines=5&previous=true");
        assert_eq!(
            q(&["web", "--tail=0", "--since-second", "60", "--timestamps"]),
            "tailLines=0&sinceSeconds=60&timestamps=true"
        );
        let a = Cli::try_parse_from(["logs", "web", "-c", "side", "-n", "ns"]).unwrap().args;
        assert_eq!((a.container.as_deref(), a.namespace.as_str()), (Some("side"), "ns"));
        assert!(Cli::try_parse_from(["logs"]).is_err());
    }
}
