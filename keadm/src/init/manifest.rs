//! `keadm manifest`: prints what `keadm init` would install, as a YAML stream — the same
//! documents `helm template --include-crds` renders from the chart and values (the extra
//! `--manifests` first, as upstream prints them).

use std::process::ExitCode;

use super::options::{ChartArgs, print_stream};

/// `keadm manifest` flags: init's, plus `--skip-crds`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    chart: ChartArgs,
    /// Leave the CustomResourceDefinitions out.
    #[arg(long = "skip-crds")]
    skip_crds: bool,
    /// Accepted for upstream compatibility; manifest never changes anything.
    #[arg(long = "dry-run", short = 'd', hide = true)]
    dry_run: bool,
}

/// Runs `keadm manifest`.
pub fn main(args: &Args) -> ExitCode {
    let rendered = match args.chart.render() {
        Ok(r) => r,
        Err(e) => return super::exit("manifest", &e, e.is_usage()),
    };
    let crds = if args.skip_crds { &[][..] } else { &rendered.crds[..] };
    let docs: Vec<_> = rendered.extra.iter().chain(crds).chain(&rendered.objects).collect();
    print!("{}", print_stream(&docs));
    ExitCode::SUCCESS
}
