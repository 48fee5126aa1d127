//! The whole `main` of a mapper binary: flags, logging, config, run, signals, exit code.
//!
//! Flags are upstream's (`--config-file`, default `./config.yaml`; `-v` klog level, 0-5) plus
//! `--version`. `RUST_LOG`, when set, overrides `-v`. Exit codes: 0 after a clean stop, 64 for
//! a config error, 1 for a failure at run time.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::{Config, Error, Protocol, start};

#[derive(Debug, Parser)]
#[command(version)]
struct Flags {
    /// The mapper's config file.
    #[arg(long = "config-file", default_value = "./config.yaml")]
    config_file: PathBuf,
    /// Log verbosity as klog levels: 0-1 info, 2-3 debug, 4+ trace.
    #[arg(short = 'v', default_value_t = 1)]
    v: u8,
}

/// Runs a mapper for `protocol`: call it from the binary's `main`.
pub fn main<P: Protocol>(protocol: P) -> ExitCode {
    let flags = Flags::parse();
    let level = match flags.v {
        0 | 1 => "info",
        2 | 3 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let mut filter = tracing_subscriber::EnvFilter::new(level);
        if flags.v < 4 {
            for target in P::QUIET_TARGETS {
                if let Ok(directive) = format!("{target}=off").parse() {
                    filter = filter.add_directive(directive);
                }
            }
        }
        filter
    });
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();

    let config = match Config::load(&flags.config_file) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("{e}");
            return ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config, protocol))
}

async fn run<P: Protocol>(config: Config, protocol: P) -> ExitCode {
    // Handlers first, so a signal during startup is not fatal.
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        eprintln!("installing signal handlers failed");
        return ExitCode::FAILURE;
    };
    let stop = CancellationToken::new();
    tracing::info!(name = %config.common.name, protocol = %config.common.protocol, "Starting the mapper.");
    let started = match start(config, protocol, stop.clone()).await {
        Ok(s) => s,
        Err(e) => {
            let code = if matches!(e, Error::InvalidConfig { .. }) { 64 } else { 1 };
            tracing::error!(error = %DisplayChain(&e), "The mapper could not start.");
            return ExitCode::from(code);
        }
    };
    let s = stop.clone();
    let signals = tokio::spawn(async move {
        let name =
            tokio::select! { _ = term.recv() => "SIGTERM", _ = int.recv() => "SIGINT", () = s.cancelled() => return };
        tracing::info!(signal = name, "Stopping the mapper.");
        s.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("Second signal; exiting now.");
        std::process::exit(1);
    });
    let clean = started.wait().await;
    signals.abort();
    if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// An error and its sources, `a: b: c`.
struct DisplayChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
