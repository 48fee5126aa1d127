//! `hollow-edge`: a fleet of hollow edge nodes in its own process (see the crate docs), with
//! its counters served as Prometheus text on `--metrics` (logged as "Metrics server
//! listening." with its address). Stops on SIGTERM or Ctrl-C.
//!
//! ```text
//! hollow-edge --server 127.0.0.1:10000 --ca ca.crt --ca-key ca.key --nodes 1000
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kubeedge_hollow::{Config, Fleet, Stats, Timings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::info;

#[derive(Parser)]
#[command(version, about = "A fleet of hollow edge nodes speaking the EdgeHub protocol to CloudHub")]
struct Flags {
    /// CloudHub's WebSocket server, host:port.
    #[arg(long)]
    server: String,
    /// The cluster CA certificate (PEM), as cloudcore's `tlsCAFile`.
    #[arg(long)]
    ca: PathBuf,
    /// The CA's private key (PEM), as cloudcore's `tlsCAKeyFile`: node certificates are signed
    /// with it directly.
    #[arg(long)]
    ca_key: PathBuf,
    /// How many nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// The index of the first node (several processes can share a fleet).
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// Node names are {prefix}{index:05}.
    #[arg(long, default_value = "hollow-")]
    prefix: String,
    /// Handshakes in progress at most.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// Do not register nodes through the link (they exist in the API already).
    #[arg(long)]
    no_register: bool,
    /// EdgeHub heartbeat, seconds.
    #[arg(long, default_value_t = 15)]
    heartbeat: u64,
    /// nodeLeaseDurationSeconds (renewed every quarter of it).
    #[arg(long, default_value_t = 40)]
    lease_duration: u64,
    /// nodeStatusReportFrequency, seconds.
    #[arg(long, default_value_t = 300)]
    status_report: u64,
    /// Where to serve the counters.
    #[arg(long, default_value = "127.0.0.1:0")]
    metrics: std::net::SocketAddr,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Behave like upstream edges: announce no features (the whole Lease at every renewal, a
    /// keepalive with every heartbeat), whatever the cloud supports.
    #[arg(long)]
    upstream_edge: bool,
}

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(flags.workers.max(1))
        .thread_name("hollow")
        .enable_all()
        .build()?;
    rt.block_on(run(flags))
}

async fn run(flags: Flags) -> anyhow::Result<()> {
    let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let ca_der = kubeedge_pki::parse_pem(&read(&flags.ca)?)?.1;
    let key = kubeedge_pki::key_from_pem(&read(&flags.ca_key)?)?;
    let ca = Arc::new(kubeedge_pki::Ca::from_der(&ca_der, &key)?);
    let cfg = Config {
        server: flags.server.clone(),
        prefix: flags.prefix,
        first: flags.first,
        nodes: flags.nodes,
        parallel: flags.parallel,
        register: !flags.no_register,
        timings: Timings {
            keepalive: Duration::from_secs(flags.heartbeat.max(1)),
            lease_duration: Duration::from_secs(flags.lease_duration.max(4)),
            status_report: Duration::from_secs(flags.status_report.max(1)),
            ..Timings::default()
        },
        record_acks: false,
        upstream_edge: flags.upstream_edge,
    };
    let listener = tokio::net::TcpListener::bind(flags.metrics).await.context("binding the metrics address")?;
    let fleet = Fleet::start(ca, cfg);
    info!(address = %listener.local_addr()?, "Metrics server listening.");
    info!(nodes = flags.nodes, server = %flags.server, "Fleet started.");
    let metrics = tokio::spawn(serve_metrics(listener, fleet.stats()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    metrics.abort();
    fleet.stop().await;
    info!("Stopped.");
    Ok(())
}

/// Answers every request on `listener` with the counters (a minimal HTTP/1.1 responder: the
/// bench and curl are its only clients).
async fn serve_metrics(listener: tokio::net::TcpListener, stats: Arc<Stats>) {
    while let Ok((mut s, _)) = listener.accept().await {
        let stats = stats.clone();
        tokio::spawn(async move {
            // Read the whole request head: closing with unread bytes would reset the
            // connection and lose the response.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let body = stats.render();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}
