//! The demo site: a per-session counter, logins and items, served by axum with sessions in the grid. Run it
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
//! | `GET /login?user=U` | exclusive | logs in as U: a new session id (against fixation), item `user`, tag `user:U` |
//! | `GET /devices`   | read-only | the ids of the logged-in user's sessions, one per line |
//! | `POST /logout-everywhere` | read-only | abandons every session of the user; prints how many |
//! | `GET /set?item=NAME&value=V` | exclusive | sets one item (a string)                 |
//! | `GET /items`     | read-only | the session's items as one JSON object                 |

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
    /// The grid's connection string, e.g. "bootstrapGateways=127.0.0.1:7210" (or give
    /// it in --config).
    #[arg(long, env = "GRID_CONNECTION")]
    pub connection: Option<String>,
    /// A settings file (TOML): `[sessionState]` attributes, `[connectionStrings]` and
    /// `[appSettings]`, as ASP.NET's configuration; --connection and --setting apply
    /// over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// A session-state setting as ATTRIBUTE=VALUE, repeatable, e.g. --setting timeout=1
    /// --setting handleSessionEnd=true (ASP.NET attribute names).
    #[arg(long = "setting", value_name = "ATTRIBUTE=VALUE")]
    pub settings: Vec<String>,
}

#[derive(Debug, Clone)]
struct Site {
    ended: Arc<Mutex<VecDeque<String>>>,
    provider: Arc<SessionStateProvider>,
}

#[derive(Debug, Deserialize)]
struct Work {
    ms: u64,
}

#[derive(Debug, Deserialize)]
struct Login {
    user: String,
}

#[derive(Debug, Deserialize)]
struct SetItem {
    item: String,
    value: String,
}

type Page = Result<String, (StatusCode, String)>;

fn internal(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn bad_request(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, format!("{e}\n"))
}

/// The tag of a user's sessions.
fn user_tag(user: &str) -> String {
    format!("user:{user}")
}

/// The tag of the logged-in user of this session.
fn logged_in(session: &Session) -> Result<String, (StatusCode, String)> {
    match session.get::<String>("user").map_err(internal)? {
        Some(user) => Ok(user_tag(&user)),
        None => Err((
            StatusCode::UNAUTHORIZED,
            "not logged in: /login?user=U\n".into(),
        )),
    }
}

async fn login(session: Session, Query(login): Query<Login>) -> Page {
    let tag = user_tag(&login.user);
    session.tag(&tag).map_err(bad_request)?;
    session.set("user", &login.user).map_err(internal)?;
    session.rotate_id().map_err(internal)?;
    Ok(format!("logged in as {}\n", login.user))
}

async fn devices(State(site): State<Site>, session: Session) -> Page {
    let tag = logged_in(&session)?;
    let ids = site
        .provider
        .sessions_with_tag(&tag)
        .await
        .map_err(internal)?;
    Ok(ids.iter().map(|id| format!("{id}\n")).collect())
}

async fn logout_everywhere(State(site): State<Site>, session: Session) -> Page {
    let tag = logged_in(&session)?;
    let ended = site.provider.abandon_tagged(&tag).await.map_err(internal)?;
    Ok(format!("{}\n", ended.len()))
}

async fn set_item(session: Session, Query(set): Query<SetItem>) -> Page {
    session.set(&set.item, &set.value).map_err(bad_request)?;
    Ok(format!("{}={}\n", set.item, set.value))
}

async fn items(session: Session) -> Page {
    Ok(serde_json::Value::Object(session.to_json()).to_string())
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
        provider: Arc::clone(&provider),
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
        .route("/login", get(login))
        .route("/set", get(set_item))
        .route_layer(layer.clone());
    let read_only = Router::new()
        .route("/peek", get(peek))
        .route("/items", get(items))
        .route("/devices", get(devices))
        .route("/logout-everywhere", post(logout_everywhere))
        .route_layer(layer.read_only())
        .with_state(site.clone());
    let plain = Router::new()
        .route("/ended", get(ended))
        .route_layer(layer.unused())
        .with_state(site);
    Ok(exclusive.merge(read_only).merge(plain))
}

/// Runs the site until Ctrl-C or SIGTERM.
pub async fn serve(args: DemoArgs) -> anyhow::Result<()> {
    let mut settings = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            ProviderSettings::from_toml(&text)?
        }
        None => ProviderSettings::default(),
    };
    if let Some(connection) = &args.connection {
        settings.set("connectionString", connection)?;
    }
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
