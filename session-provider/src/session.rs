//! The session as a handler sees it: an axum extractor over the items the layer
//! acquired for this request.

use std::sync::{Arc, Mutex, MutexGuard};

use grid_proto::sync::lock;

use axum::extract::FromRequestParts;
use http::request::Parts;
use http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::items::{ItemsError, SessionItems};

/// A handler's misuse of its session.
#[derive(Debug, Error)]
pub enum SessionError {
    /// The route's session is read-only (`SessionLayer::read_only`).
    #[error("this route's session is read-only; writes need an exclusive session layer")]
    ReadOnly,
    /// An item could not be stored or read as asked.
    #[error(transparent)]
    Items(#[from] ItemsError),
}

#[derive(Debug)]
pub(crate) struct SessionState {
    pub(crate) items: SessionItems,
    pub(crate) abandoned: bool,
    /// The id the session moves to when the request ends ([`Session::rotate_id`]).
    pub(crate) new_id: Option<String>,
}

#[derive(Debug)]
struct Shared {
    id: String,
    is_new: bool,
    read_only: bool,
    state: Mutex<SessionState>,
}

/// This request's session. Cheap to clone; clones share the items. Changes are written
/// back when the request ends, only if something changed.
#[derive(Debug, Clone)]
pub struct Session(Arc<Shared>);

impl Session {
    pub(crate) fn new(id: String, is_new: bool, read_only: bool, items: SessionItems) -> Self {
        Session(Arc::new(Shared {
            id,
            is_new,
            read_only,
            state: Mutex::new(SessionState {
                items,
                abandoned: false,
                new_id: None,
            }),
        }))
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, SessionState> {
        lock(&self.0.state)
    }

    /// The session id the request came with (or was given, for a new session).
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// The id the client holds once this request ends: the new one after
    /// [`Session::rotate_id`].
    pub fn current_id(&self) -> String {
        self.state()
            .new_id
            .clone()
            .unwrap_or_else(|| self.0.id.clone())
    }

    /// True if the session starts with this request.
    pub fn is_new(&self) -> bool {
        self.0.is_new
    }

    /// True on read-only routes.
    pub fn is_read_only(&self) -> bool {
        self.0.read_only
    }

    /// The item `name` as a `T`, if present.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, SessionError> {
        Ok(self.state().items.get(name)?)
    }

    /// Sets the item `name`.
    pub fn set<T: Serialize>(&self, name: &str, value: &T) -> Result<(), SessionError> {
        self.writable()?;
        Ok(self.state().items.set(name, value)?)
    }

    /// Removes the item `name`.
    pub fn remove(&self, name: &str) -> Result<(), SessionError> {
        self.writable()?;
        self.state().items.remove(name);
        Ok(())
    }

    /// Ends the session when the request ends (`Session.Abandon()`): it is removed from
    /// the grid and `Session_End` runs with its final items.
    pub fn abandon(&self) -> Result<(), SessionError> {
        self.writable()?;
        self.state().abandoned = true;
        Ok(())
    }

    /// Tags the session (at most 8 tags of at most 64 bytes), e.g. `user:42`, so that
    /// `SessionStateProvider::sessions_with_tag` finds it and `abandon_tagged` ends it.
    /// Written back with the request's other changes, in the same step.
    pub fn tag(&self, tag: &str) -> Result<(), SessionError> {
        self.writable()?;
        Ok(self.state().items.tag(tag)?)
    }

    /// Removes a tag, if present.
    pub fn untag(&self, tag: &str) -> Result<(), SessionError> {
        self.writable()?;
        self.state().items.untag(tag);
        Ok(())
    }

    /// The session's tags, sorted.
    pub fn tags(&self) -> Vec<String> {
        self.state().items.tags()
    }

    /// Every item as one JSON object.
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.state().items.to_json()
    }

    /// Gives the session a new id when the request ends (do it at login, against session
    /// fixation): its items and tags move to the new id, the old id stops naming any
    /// session, and the response sets the cookie to the new id, which this returns.
    pub fn rotate_id(&self) -> Result<String, SessionError> {
        self.writable()?;
        let mut state = self.state();
        Ok(state.new_id.get_or_insert_with(crate::id::new_id).clone())
    }

    fn writable(&self) -> Result<(), SessionError> {
        if self.0.read_only {
            return Err(SessionError::ReadOnly);
        }
        Ok(())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Session>().cloned().ok_or((
            StatusCode::INTERNAL_SERVER_ERROR,
            "no session on this route: add SessionLayer (exclusive or read_only) to it",
        ))
    }
}
