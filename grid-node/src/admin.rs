//! The admin HTTP endpoint: `/metrics` (Prometheus text) and `/health`.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::conn::ConnContext;

/// Serves the admin endpoint until shutdown.
pub async fn serve(listener: TcpListener, ctx: ConnContext) {
    let shutdown = ctx.shutdown.clone();
    let mut app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }));
    if ctx.node.config().fault_injection {
        app = app.route("/faults/block", axum::routing::post(block_peers));
    }
    let app = app.with_state(ctx);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(err) = served {
        tracing::error!(error = %err, "admin endpoint failed");
    }
}

/// Fault injection (only with `--fault-injection`): the body lists peer addresses,
/// comma-separated, that this node stops sending to; an empty body heals.
async fn block_peers(State(ctx): State<ConnContext>, body: String) -> &'static str {
    let addrs = body
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    ctx.node.cluster().block_peers(addrs);
    "ok\n"
}

async fn metrics(State(ctx): State<ConnContext>) -> String {
    let status = ctx.node.status(ctx.listen.clone());
    ctx.node.metrics.render(&status)
}
