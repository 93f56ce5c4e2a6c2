//! The admin HTTP endpoint: `/metrics` (Prometheus text) and `/health`.
//!
//! With `--admin-token`, every route needs `Authorization: Bearer <token>`; without it the
//! endpoint is loopback-only (the config refuses anything else). Fault injection
//! (`/faults/*`) is served only on a loopback address, whatever the token.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use grid_proto::secret::token_matches;
use tokio::net::TcpListener;

use crate::conn::ConnContext;
use crate::workers::Round;

/// Serves the admin endpoint until shutdown.
pub async fn serve(listener: TcpListener, ctx: ConnContext) -> Round {
    let shutdown = ctx.shutdown.clone();
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let mut app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/workers", get(workers));
    if ctx.node.config().fault_injection {
        if loopback {
            app = app.route("/faults/block", axum::routing::post(block_peers));
        } else {
            tracing::warn!("--fault-injection ignored: the admin port is not on loopback");
        }
    }
    let app = app
        .layer(middleware::from_fn_with_state(ctx.clone(), require_token))
        .with_state(ctx);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|e| format!("admin endpoint failed: {e}"))
}

/// The node's background jobs with their status, as JSON (what `gridctl status
/// --workers` shows).
async fn workers(State(ctx): State<ConnContext>) -> Response {
    match serde_json::to_string_pretty(&ctx.node.workers().status()) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body + "\n").into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Fault injection (only with `--fault-injection`): the body lists peer addresses,
/// comma-separated, that this node stops sending to; an empty body heals.
async fn block_peers(State(ctx): State<ConnContext>, body: String) -> &'static str {
    let addrs = body
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string);
    ctx.node.cluster().block_peers(addrs);
    "ok\n"
}

async fn metrics(State(ctx): State<ConnContext>) -> String {
    let status = ctx.node.status(ctx.listen.clone());
    ctx.node.metrics.render(&status)
}

/// Refuses a request without the admin bearer token, when one is configured.
async fn require_token(State(ctx): State<ConnContext>, request: Request, next: Next) -> Response {
    let Some(expected) = ctx.node.config().admin_token.as_deref() else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some() && token_matches(Some(expected), given) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "the admin endpoint needs Authorization: Bearer <--admin-token>\n",
    )
        .into_response()
}
