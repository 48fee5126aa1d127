//! The monitor server: `/healthz`, `/readyz` and `/metrics` over plain HTTP.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use kubeedge_beehive::Health;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::Metrics;

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: Option<Health>,
}

/// Serves the monitor endpoints on an already-bound listener until `shutdown` is cancelled.
///
/// `/healthz` answers 200 while the process serves; `/readyz` answers 200 while every module
/// runs and shutdown has not begun, else 503 listing module states; `/metrics` is the
/// Prometheus text format.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    health: Option<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(AppState { metrics, health });
    info!(address = %listener.local_addr()?, "Monitor server listening.");
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    match &state.health {
        Some(h) if !h.is_ready() => {
            let detail: Vec<String> = h.states().iter().map(|(m, s)| format!("{m}: {s:?}")).collect();
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready\n{}\n", detail.join("\n")))
        }
        _ => (StatusCode::OK, "ok".to_owned()),
    }
}

async fn metrics_handler(State(state): State<AppState>) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let ct = [("content-type", "text/plain; version=0.0.4; charset=utf-8")];
    match tokio::task::spawn_blocking(move || state.metrics.render()).await {
        Ok(body) => (StatusCode::OK, ct, body),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, ct, String::new()),
    }
}
