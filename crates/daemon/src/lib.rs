//! What cloudcore and edgecore share as processes: the command line (`--config`,
//! `--defaultconfig`, `--minconfig`, `--version`), loading and validating the config (exit 64
//! listing every error), refusing modules this build does not have, logging, the monitor server,
//! the module supervisor, and signal-driven shutdown with a deadline.
//!
//! A daemon's `main.rs` names its config type, its built modules and a function that registers
//! them, then calls [`run`].

mod config;
mod host;
mod signal;

use std::process::ExitCode;

use clap::Parser;
use kubeedge_beehive::{Registry, RestartPolicy};
use kubeedge_telemetry::{LogFormat, Metrics};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use config::DaemonConfig;
pub use host::detect_host;

/// Exit code for configuration errors (`EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code for failures at run time (e.g. a port already in use).
pub const EXIT_FAILURE: u8 = 1;

/// The command line both daemons accept.
#[derive(Debug, Parser)]
#[command(disable_version_flag = true)]
pub struct Flags {
    /// The config file to run with.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Print the default config (modules this build lacks shown disabled) and exit.
    #[arg(long = "defaultconfig")]
    pub default_config: bool,
    /// Print a minimal config and exit.
    #[arg(long = "minconfig")]
    pub min_config: bool,
    /// Print the version and exit.
    #[arg(long)]
    pub version: bool,
}

/// What a daemon is: its name, its default config path, and the modules this build has (by
/// their config key under `modules`, e.g. `cloudHub`).
pub struct Daemon {
    /// `cloudcore` or `edgecore`.
    pub name: &'static str,
    /// Where `--config` points by default (upstream: `/etc/kubeedge/config/{name}.yaml`).
    pub default_config_path: &'static str,
    /// Config keys of the modules this build implements.
    pub available_modules: &'static [&'static str],
    /// How failed modules are restarted.
    pub restart_policy: fn() -> RestartPolicy,
}

/// Why a binary's `register` callback could not build its modules: the binary's own error
/// type, boxed (this is the edge of the process, where any error is only printed).
pub type RegisterError = Box<dyn std::error::Error + Send + Sync>;

/// The version string printed by `--version` and exported as `kubeedge_build_info`: the
/// crate's, or what the binary was stamped with ([`kubeedge_model::version`]).
pub fn version() -> &'static str {
    kubeedge_model::version::version()
}

impl Daemon {
    /// Runs the daemon: parses the command line, then either prints and exits or loads the
    /// config and serves until SIGTERM/SIGINT. `register` adds the enabled modules.
    pub fn main<C: DaemonConfig>(
        &self,
        register: impl FnOnce(&C, &mut Registry, &Metrics) -> Result<(), RegisterError>,
    ) -> ExitCode {
        let flags = Flags::parse();
        if flags.version {
            println!("{} {} (kubeedge-rs, wire-compatible with KubeEdge v1.23)", self.name, version());
            return ExitCode::SUCCESS;
        }
        if flags.default_config {
            let mut cfg = C::default_for(&detect_host());
            for (key, _) in cfg.modules() {
                if !self.available_modules.contains(&key) {
                    cfg.set_module_enabled(key, false);
                }
            }
            print!("{}", cfg.to_yaml());
            return ExitCode::SUCCESS;
        }
        if flags.min_config {
            let host = detect_host();
            let unavailable: Vec<&str> = C::default_for(&host)
                .modules()
                .into_iter()
                .map(|(key, _)| key)
                .filter(|key| !self.available_modules.contains(key))
                .collect();
            return match config::disable_in_yaml(&C::minimal_for(&host), &unavailable) {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: rendering the minimal config: {e}", self.name);
                    ExitCode::from(EXIT_FAILURE)
                }
            };
        }
        let path = flags.config.unwrap_or_else(|| self.default_config_path.into());
        let cfg = match self.load::<C>(&path) {
            Ok(cfg) => cfg,
            Err(report) => {
                eprintln!("{}: invalid config {}:\n{report}", self.name, path.display());
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let (level, format) = cfg.config.logging();
        let format = match format.parse::<LogFormat>() {
            Ok(f) => f,
            Err(e) => return config_exit(self.name, &e),
        };
        if let Err(e) = kubeedge_telemetry::init_logging(level, format) {
            return config_exit(self.name, &e);
        }
        if !cfg.unknown_keys.is_empty() {
            warn!(keys = ?cfg.unknown_keys, config = %path.display(), "Ignoring unknown config keys.");
        }
        let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("{}: starting the async runtime: {e}", self.name);
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let code = runtime.block_on(self.serve(cfg.config, register));
        // Tasks that ignored shutdown were already named; do not wait for them again.
        runtime.shutdown_background();
        code
    }

    fn load<C: DaemonConfig>(&self, path: &std::path::Path) -> Result<kubeedge_config::Loaded<C>, ConfigError> {
        let loaded = kubeedge_config::load_file::<C>(path).map_err(ConfigError::Load)?;
        let mut problems: Vec<Problem> = match loaded.config.validate() {
            Ok(()) => Vec::new(),
            Err(errs) => errs.errors().iter().cloned().map(Problem::Field).collect(),
        };
        for (key, enabled) in loaded.config.modules() {
            if enabled && !self.available_modules.contains(&key) {
                problems.push(Problem::Unavailable { key });
            }
        }
        if let (level, _) = loaded.config.logging()
            && let Err(error) = kubeedge_telemetry::parse_filter(level)
        {
            problems.push(Problem::LogLevel { path: loaded.config.logging_path(), error });
        }
        if problems.is_empty() { Ok(loaded) } else { Err(ConfigError::Invalid(problems)) }
    }

    async fn serve<C: DaemonConfig>(
        &self,
        cfg: C,
        register: impl FnOnce(&C, &mut Registry, &Metrics) -> Result<(), RegisterError>,
    ) -> ExitCode {
        raise_open_file_limit();
        let mut signals = signal::Signals::install();
        let metrics = match Metrics::new(self.name, version()) {
            Ok(m) => m,
            Err(e) => return fail(&e),
        };
        let monitor_addr = cfg.monitor_bind_address().to_owned();
        let listener = match tokio::net::TcpListener::bind(&monitor_addr).await {
            Ok(l) => l,
            Err(e) => {
                error!(address = %monitor_addr, error = %e, "Cannot bind the monitor server.");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let mut registry = Registry::new();
        if let Err(e) = register(&cfg, &mut registry, &metrics) {
            error!(error = %e, "Cannot build the modules.");
            return ExitCode::from(EXIT_FAILURE);
        }
        // Listening sockets are taken before anything runs: a port in use is an error now,
        // naming it, not a module restarting over and over.
        if let Err((module, e)) = registry.prepare().await {
            error!(module, error = %e, "Cannot start a module.");
            return ExitCode::from(EXIT_FAILURE);
        }
        let modules = registry.names();
        let supervisor = registry.start((self.restart_policy)());
        if let Err(e) = metrics.watch_bus(supervisor.bus(), supervisor.health()) {
            return fail(&e);
        }
        let stop_monitor = CancellationToken::new();
        let monitor =
            tokio::spawn(kubeedge_telemetry::serve(listener, metrics, Some(supervisor.health()), stop_monitor.clone()));
        info!(daemon = self.name, version = version(), modules = ?modules, "Started.");

        let signal = signals.recv().await;
        info!(signal, "Shutting down.");
        // A second signal while stopping exits at once.
        tokio::spawn(async move {
            let second = signals.recv().await;
            eprintln!("received {second} again while stopping; exiting now");
            std::process::exit(i32::from(EXIT_FAILURE));
        });
        let report = supervisor.shutdown(cfg.grace_period()).await;
        stop_monitor.cancel();
        let _ = monitor.await;
        if report.is_clean() {
            info!("Stopped.");
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Raises the soft limit on open files to the hard one: systemd's default soft limit (1,024)
/// is too few for a cloudcore with hundreds of edges, and running out makes every accept
/// fail. The units set `LimitNOFILE` too.
fn raise_open_file_limit() {
    use rlimit::Resource;
    match Resource::NOFILE.get() {
        Ok((soft, hard)) if soft < hard => match Resource::NOFILE.set(hard, hard) {
            Ok(()) => info!(from = soft, to = hard, "Raised the open-file limit to its hard limit."),
            Err(e) => warn!(soft, hard, error = %e, "Cannot raise the open-file limit."),
        },
        Ok(_) => {}
        Err(e) => warn!(error = %e, "Cannot read the open-file limit."),
    }
}

/// Why a config file cannot be used. Displays one problem per line, each indented by two
/// spaces (the daemon prints it under `invalid config <path>:`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed.
    #[error("  {0}")]
    Load(kubeedge_config::Error),
    /// The file loaded but does not describe a runnable daemon.
    #[error("{}", .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// One reason a loaded config cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// `validate()` rejected a field.
    #[error("{0}")]
    Field(kubeedge_config::FieldError),
    /// An enabled module this build does not have.
    #[error("modules.{key}.enable: module {key} is not available in this build yet; set it to false")]
    Unavailable {
        /// The module's config key.
        key: &'static str,
    },
    /// `logging.level` is not a filter directive.
    #[error("{path}.level: {error}")]
    LogLevel {
        /// Where `logging` lives in the file.
        path: &'static str,
        /// The parse failure.
        error: kubeedge_telemetry::Error,
    },
}

fn config_exit(daemon: &str, e: &dyn std::error::Error) -> ExitCode {
    eprintln!("{daemon}: invalid config: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn fail(e: &dyn std::error::Error) -> ExitCode {
    error!(error = %e, "Startup failed.");
    ExitCode::from(EXIT_FAILURE)
}
