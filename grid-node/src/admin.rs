//! The admin HTTP endpoint: `/metrics` (Prometheus text) and `/health`.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::conn::ConnContext;

/// Serves the admin endpoint until shutdown.
pub async fn serve(listener: TcpListener, ctx: ConnContext) {
    let shutdown = ctx.shutdown.clone();
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .with_state(ctx);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(err) = served {
        tracing::error!(error = %err, "admin endpoint failed");
    }
}

async fn metrics(State(ctx): State<ConnContext>) -> String {
    let status = ctx.node.status(ctx.listen.clone());
    ctx.node.metrics.render(&status)
}
