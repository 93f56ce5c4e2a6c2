//! The per-request algorithm of ASP.NET's `SessionStateModuleAsync`, as a tower layer:
//!
//! ```text
//! cookie ─▶ acquire ─────────────────────────▶ handler(Session) ─▶ release ─▶ response
//!   exclusive:  lock (queued; take over past executionTimeout)
//!   read-only:  read (waits for a lock)
//!   concurrent: read, never waits
//!   unknown or expired id: a new session
//!
//! release:
//!   abandoned:       remove + Session_End
//!   rotated id:      write under the new id, remove the old, Set-Cookie
//!   changed:         write back the changed items (+ unlock), one step
//!   new and changed: create with every item + Set-Cookie
//!   unchanged:       unlock
//! ```
//!
//! Three modes, as ASP.NET's handler interfaces: [`SessionLayer::new`] (exclusive,
//! `IRequiresSessionState`), [`SessionLayer::read_only`] (`IReadOnlySessionState`), and
//! [`SessionLayer::unused`] for routes without session state, which only keep a session
//! alive (unless `skipKeepAliveWhenUnused`). With `allowConcurrentRequestsPerSession`
//! nothing is locked: each request writes back only the items it changed, merged per
//! item on the node, so concurrent requests changing different items all land; of two
//! changing the same item, the one whose write-back reaches the partition's log last
//! wins (removals included).
//!
//! A request whose client goes away still runs to its release. A request still holding a
//! lock when its server dies (or its handler panics) leaves the lock to its lease
//! (`executionTimeout`); the next request takes it over at that age.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use grid_proto::sync::lock;

use axum::response::{IntoResponse, Response};
use cookie::Cookie;
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::id::{is_valid, new_id};
use crate::items::SessionItems;
use crate::provider::{ItemResult, ProviderError, SessionStateProvider};
use crate::session::Session;

/// What a route does with session state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMode {
    /// Reads and writes; requests of one session run one at a time.
    Exclusive,
    /// Reads only; waits for a writer to finish, never blocks others.
    ReadOnly,
    /// No session state; a session cookie only keeps the session alive.
    Unused,
}

#[derive(Debug)]
struct Shared {
    provider: Arc<SessionStateProvider>,
    /// Requests of each session waiting for its lock on this server.
    queued: Mutex<HashMap<String, u32>>,
}

/// The session layer; clone it per mode with [`SessionLayer::read_only`] /
/// [`SessionLayer::unused`].
#[derive(Debug, Clone)]
pub struct SessionLayer {
    shared: Arc<Shared>,
    mode: SessionMode,
}

impl SessionLayer {
    /// An exclusive session layer over `provider`.
    pub fn new(provider: Arc<SessionStateProvider>) -> Self {
        Self {
            shared: Arc::new(Shared {
                provider,
                queued: Mutex::new(HashMap::new()),
            }),
            mode: SessionMode::Exclusive,
        }
    }

    /// The same layer for read-only routes.
    pub fn read_only(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            mode: SessionMode::ReadOnly,
        }
    }

    /// The same layer for routes without session state (keep-alive only).
    pub fn unused(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            mode: SessionMode::Unused,
        }
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            shared: Arc::clone(&self.shared),
            mode: self.mode,
        }
    }
}

/// The service [`SessionLayer`] wraps around a route.
#[derive(Debug, Clone)]
pub struct SessionService<S> {
    inner: S,
    shared: Arc<Shared>,
    mode: SessionMode,
}

impl<S, B> Service<Request<B>> for SessionService<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone that was polled ready serves this request (tower's usual swap).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (shared, mode) = (Arc::clone(&self.shared), self.mode);
        Box::pin(async move {
            // Run to the end even if the caller goes away (the client disconnected): the
            // session's lock is then released (or its changes written) at once instead
            // of being left to its lease. The task ends with the request's own work.
            match tokio::spawn(handle(shared, mode, req, inner)).await {
                Ok(result) => result,
                Err(e) => Ok(failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the request failed: {e}"),
                )
                .into_response()),
            }
        })
    }
}

/// A request the layer answers itself: the session is busy, its queue is full, or the
/// grid failed.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        tracing::warn!(status = %self.status, message = %self.message, "session state");
        (self.status, self.message).into_response()
    }
}

fn failure(status: StatusCode, message: String) -> Refusal {
    Refusal { status, message }
}

fn grid_failure(e: ProviderError) -> Refusal {
    failure(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// The session id the request's cookie names, if it has the form of one.
fn cookie_id(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
        .filter(|id| is_valid(id))
}

/// A session acquired for a request.
struct Acquired {
    id: String,
    is_new: bool,
    items: SessionItems,
    lock_id: Option<u64>,
}

impl Acquired {
    fn fresh(sent: Option<String>, regenerate: bool) -> Self {
        let id = match sent {
            Some(id) if !regenerate => id,
            _ => new_id(),
        };
        Acquired {
            id,
            is_new: true,
            items: SessionItems::default(),
            lock_id: None,
        }
    }
}

/// Counts a request waiting for its session's lock on this server.
struct QueueSlot<'a> {
    shared: &'a Shared,
    id: String,
}

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        let mut queued = lock(&self.shared.queued);
        if let Some(n) = queued.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                queued.remove(&self.id);
            }
        }
    }
}

fn queue_slot<'a>(shared: &'a Shared, id: &str) -> Result<QueueSlot<'a>, Refusal> {
    let limit = shared.provider.settings().request_queue_limit;
    let mut queued = lock(&shared.queued);
    let n = queued.entry(id.to_string()).or_default();
    if *n >= limit {
        return Err(failure(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many requests for this session are waiting (requestQueueLimitPerSession={limit})"),
        ));
    }
    *n += 1;
    Ok(QueueSlot {
        shared,
        id: id.to_string(),
    })
}

async fn acquire(
    shared: &Shared,
    mode: SessionMode,
    sent: Option<String>,
) -> Result<Acquired, Refusal> {
    let provider = &shared.provider;
    let settings = provider.settings();
    let regenerate = settings.regenerate_expired_session_id;
    let Some(id) = sent else {
        return Ok(Acquired::fresh(None, regenerate));
    };
    let existing = |items, lock_id| Acquired {
        id: id.clone(),
        is_new: false,
        items,
        lock_id,
    };
    if settings.allow_concurrent_requests {
        return match provider.peek_item(&id).await.map_err(grid_failure)? {
            Some(items) => Ok(existing(items, None)),
            None => Ok(Acquired::fresh(Some(id.clone()), regenerate)),
        };
    }
    if mode == SessionMode::ReadOnly {
        match provider.get_item(&id).await.map_err(grid_failure)? {
            ItemResult::Found(item) => return Ok(existing(item.items, None)),
            ItemResult::NotFound => return Ok(Acquired::fresh(Some(id.clone()), regenerate)),
            // A writer holds it: wait for it like an exclusive request, then let go.
            ItemResult::Locked { .. } => {}
        }
    }
    let slot = queue_slot(shared, &id)?;
    let result = provider
        .get_item_exclusive(&id, settings.execution_timeout)
        .await
        .map_err(grid_failure)?;
    drop(slot);
    match result {
        ItemResult::Found(item) if mode == SessionMode::ReadOnly => {
            if let Some(lock_id) = item.lock_id {
                provider
                    .release_item_exclusive(&id, lock_id)
                    .await
                    .map_err(grid_failure)?;
            }
            Ok(existing(item.items, None))
        }
        ItemResult::Found(item) => Ok(existing(item.items, item.lock_id)),
        ItemResult::NotFound => Ok(Acquired::fresh(Some(id.clone()), regenerate)),
        ItemResult::Locked { lock_age, .. } => Err(failure(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the session is busy: another request has held it for {lock_age:?}"),
        )),
    }
}

/// Writes back, releases, moves or removes the session; returns the id the client needs
/// a cookie for, if any.
async fn release(
    provider: &SessionStateProvider,
    session: &Session,
    lock_id: Option<u64>,
) -> Result<Option<String>, ProviderError> {
    let (items, abandoned, new_id) = {
        let state = session.state();
        (state.items.clone(), state.abandoned, state.new_id.clone())
    };
    let id = session.id();
    if abandoned {
        // Only the server that removed it reports its end (another may have revoked it,
        // or it expired, meanwhile).
        if session.is_new() || provider.remove_item(id, lock_id).await? {
            provider.abandoned(id, items);
        }
        return Ok(None);
    }
    if let Some(new_id) = new_id {
        let moved = if session.is_new() {
            provider
                .set_and_release_item_exclusive(&new_id, &items, None, true)
                .await?;
            true
        } else {
            provider.rotate_id(id, &new_id, &items, lock_id).await?
        };
        return Ok(moved.then_some(new_id));
    }
    if items.is_dirty() {
        provider
            .set_and_release_item_exclusive(id, &items, lock_id, session.is_new())
            .await?;
        return Ok(session.is_new().then(|| id.to_string()));
    }
    if let Some(lock_id) = lock_id {
        provider.release_item_exclusive(id, lock_id).await?;
    }
    Ok(None)
}

fn session_cookie(provider: &SessionStateProvider, id: &str) -> Option<HeaderValue> {
    let settings = provider.settings();
    let cookie = Cookie::build((settings.cookie_name.clone(), id.to_string()))
        .path("/")
        .http_only(true)
        .secure(settings.cookie_secure)
        .same_site(settings.cookie_same_site)
        .build();
    HeaderValue::from_str(&cookie.to_string()).ok()
}

async fn handle<S, B>(
    shared: Arc<Shared>,
    mode: SessionMode,
    mut req: Request<B>,
    mut inner: S,
) -> Result<Response, S::Error>
where
    S: Service<Request<B>, Response = Response>,
{
    let provider = Arc::clone(&shared.provider);
    let sent = cookie_id(req.headers(), &provider.settings().cookie_name);
    if mode == SessionMode::Unused {
        if let Some(id) = sent.filter(|_| !provider.settings().skip_keep_alive_when_unused) {
            if let Err(e) = provider.reset_item_timeout(&id).await {
                tracing::debug!(error = %e, "session keep-alive failed");
            }
        }
        return inner.call(req).await;
    }
    let acquired = match acquire(&shared, mode, sent).await {
        Ok(a) => a,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    let session = Session::new(
        acquired.id,
        acquired.is_new,
        mode == SessionMode::ReadOnly,
        acquired.items,
    );
    req.extensions_mut().insert(session.clone());
    let mut response = inner.call(req).await?;
    match release(&provider, &session, acquired.lock_id).await {
        Ok(Some(id)) => {
            if let Some(cookie) = session_cookie(&provider, &id) {
                response.headers_mut().append(SET_COOKIE, cookie);
            }
            Ok(response)
        }
        Ok(None) => Ok(response),
        Err(e @ ProviderError::LockLost) => Ok(failure(
            StatusCode::CONFLICT,
            format!("the session's changes were not saved: {e}"),
        )
        .into_response()),
        Err(e) => Ok(grid_failure(e).into_response()),
    }
}
