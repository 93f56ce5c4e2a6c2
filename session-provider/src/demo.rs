//! The demo site: a per-session counter served by axum with sessions in the grid. Run it
//! with `cargo run -p session-provider --example web -- --listen 127.0.0.1:8080
//! --connection "bootstrapGateways=127.0.0.1:7210"`; start two on different ports to see
//! a session continue across web servers.
//!
//! | route            | session   | does                                                  |
//! |------------------|-----------|-------------------------------------------------------|
//! | `GET /counter`   | exclusive | increments the session's counter and returns it       |
//! | `GET /peek`      | read-only | returns the counter without changing it               |
//! | `GET /work?ms=N` | exclusive | a slow page: holds the session N ms, then increments  |
//! | `POST /abandon`  | exclusive | ends the session (`Session_End` runs)                  |
//! | `GET /ended`     | none      | recently ended sessions: `<id> <counter> <cause>`      |

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grid_proto::sync::lock;

use anyhow::Context;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use clap::Parser;
use serde::Deserialize;

use crate::session_end::SessionEnded;
use crate::{ProviderSettings, Session, SessionLayer, SessionStateProvider};

/// Ended sessions the site remembers for `/ended`.
const ENDED_KEPT: usize = 1000;
/// Longest `/work` page.
const MAX_WORK: Duration = Duration::from_secs(600);

/// The demo site of the session provider: a per-session counter.
#[derive(Debug, Parser)]
#[command(name = "web")]
pub struct DemoArgs {
    /// Address to serve HTTP on (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The grid's connection string, e.g. "bootstrapGateways=127.0.0.1:7210".
    #[arg(long, env = "GRID_CONNECTION")]
    pub connection: String,
    /// A session-state setting as ATTRIBUTE=VALUE, repeatable, e.g. --setting timeout=1
    /// --setting handleSessionEnd=true (ASP.NET attribute names).
    #[arg(long = "setting", value_name = "ATTRIBUTE=VALUE")]
    pub settings: Vec<String>,
}

#[derive(Debug, Clone)]
struct Site {
    ended: Arc<Mutex<VecDeque<String>>>,
}

#[derive(Debug, Deserialize)]
struct Work {
    ms: u64,
}

fn counter_of(session: &Session) -> Result<u64, (StatusCode, String)> {
    session
        .get::<u64>("counter")
        .map(Option::unwrap_or_default)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn increment(session: &Session) -> Result<String, (StatusCode, String)> {
    let n = counter_of(session)? + 1;
    session
        .set("counter", &n)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(n.to_string())
}

async fn counter(session: Session) -> Result<String, (StatusCode, String)> {
    increment(&session)
}

async fn peek(session: Session) -> Result<String, (StatusCode, String)> {
    Ok(counter_of(&session)?.to_string())
}

async fn work(session: Session, Query(work): Query<Work>) -> Result<String, (StatusCode, String)> {
    tokio::time::sleep(Duration::from_millis(work.ms).min(MAX_WORK)).await;
    increment(&session)
}

async fn abandon(session: Session) -> Result<&'static str, (StatusCode, String)> {
    session
        .abandon()
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok("abandoned\n")
}

async fn ended(State(site): State<Site>) -> String {
    let ended = lock(&site.ended);
    ended.iter().map(|line| format!("{line}\n")).collect()
}

/// The site's routes over `provider`, recording ended sessions for `/ended`.
pub async fn router(provider: Arc<SessionStateProvider>) -> anyhow::Result<Router> {
    let site = Site {
        ended: Arc::default(),
    };
    let record = Arc::clone(&site.ended);
    provider
        .set_item_expire_callback(Arc::new(move |end: SessionEnded| {
            let counter = end.items.get::<u64>("counter").ok().flatten().unwrap_or(0);
            let mut ended = lock(&record);
            if ended.len() == ENDED_KEPT {
                ended.pop_front();
            }
            ended.push_back(format!("{} {counter} {:?}", end.id, end.cause));
        }))
        .await
        .context("cannot register for Session_End")?;
    let layer = SessionLayer::new(provider);
    let exclusive = Router::new()
        .route("/counter", get(counter))
        .route("/work", get(work))
        .route("/abandon", post(abandon))
        .route_layer(layer.clone());
    let read_only = Router::new()
        .route("/peek", get(peek))
        .route_layer(layer.read_only());
    let plain = Router::new()
        .route("/ended", get(ended))
        .route_layer(layer.unused())
        .with_state(site);
    Ok(exclusive.merge(read_only).merge(plain))
}

/// Runs the site until Ctrl-C or SIGTERM.
pub async fn serve(args: DemoArgs) -> anyhow::Result<()> {
    let mut settings = ProviderSettings::default();
    settings.set("connectionString", &args.connection)?;
    for setting in &args.settings {
        let (attribute, value) = setting
            .split_once('=')
            .with_context(|| format!("--setting {setting}: expected ATTRIBUTE=VALUE"))?;
        settings.set(attribute, value)?;
    }
    let provider = Arc::new(SessionStateProvider::connect(settings, "web-demo").await?);
    let app = router(Arc::clone(&provider)).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // The first line of output: scripts and tests read the address from it.
    println!(
        "web demo listening on http://{addr} (namespace {})",
        provider.namespace()
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(stop_signal())
        .await
        .context("HTTP server failed")
}

async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Entry point of the example and of test binaries.
pub fn main() -> anyhow::Result<()> {
    let args = DemoArgs::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(args))
}
