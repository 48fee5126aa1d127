//! `apiserver-lite --listen 127.0.0.1:0 --kubeconfig-out FILE`: serves until SIGTERM/SIGINT,
//! prints `listening on https://ADDR` and writes a kubeconfig for kubectl and kube-rs.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(version, about = "An in-memory Kubernetes API server for tests and demos")]
struct Flags {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write the kubeconfig.
    #[arg(long, value_name = "FILE")]
    kubeconfig_out: Option<PathBuf>,
    /// Extra subject alternative names for the serving certificate.
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_san: Vec<String>,
    /// Watch events kept per resource type for resuming watches.
    #[arg(long, default_value_t = apiserver_lite::store::DEFAULT_HISTORY)]
    history: usize,
    /// About how many bytes of objects the watch histories keep in all (oldest events go first).
    #[arg(long, value_name = "BYTES", default_value_t = apiserver_lite::store::DEFAULT_HISTORY_BYTES)]
    history_bytes: usize,
    /// Offer HTTP/1.1 only (no `h2` in TLS ALPN), as an API server behind an HTTP/1.1 proxy.
    #[arg(long)]
    http1_only: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let listener =
        tokio::net::TcpListener::bind(flags.listen).await.with_context(|| format!("binding {}", flags.listen))?;
    let opts = apiserver_lite::Options {
        history: flags.history,
        history_bytes: flags.history_bytes,
        extra_sans: flags.tls_san,
        http1_only: flags.http1_only,
    };
    let server = apiserver_lite::ApiServer::start(listener, opts).await?;
    if let Some(path) = &flags.kubeconfig_out {
        std::fs::write(path, server.kubeconfig()).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("listening on {}", server.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    server.shutdown().await;
    Ok(())
}
