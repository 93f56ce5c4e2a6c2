//! The session-state store provider: ASP.NET's `SessionStateStoreProviderAsyncBase`
//! operations over the grid, one grid object per session (key = session id, value =
//! [`SessionItems`] encoded, sliding timeout = `timeout`).
//!
//! | ASP.NET                            | here                                  | grid operation        |
//! |------------------------------------|---------------------------------------|-----------------------|
//! | `GetItemAsync`                     | [`SessionStateProvider::get_item`]     | read (slides expiry)  |
//! | `GetItemExclusiveAsync`            | [`SessionStateProvider::get_item_exclusive`] | read-and-lock, queued |
//! | `SetAndReleaseItemExclusiveAsync`  | [`SessionStateProvider::set_and_release_item_exclusive`] | item merge + unlock / create |
//! | `ReleaseItemExclusiveAsync`        | [`SessionStateProvider::release_item_exclusive`] | unlock            |
//! | `RemoveItemAsync`                  | [`SessionStateProvider::remove_item`]  | remove with lock id   |
//! | `ResetItemTimeoutAsync`            | [`SessionStateProvider::reset_item_timeout`] | reset timeout   |
//! | `CreateUninitializedItemAsync`     | [`SessionStateProvider::create_uninitialized_item`] | create, uninitialized |
//! | `SetItemExpireCallback`            | [`SessionStateProvider::set_item_expire_callback`] | event registration |
//! | (`SessionIDManager` + login)       | [`SessionStateProvider::rotate_id`]    | write new id, remove old |
//! | (ScaleOut object tags)             | [`SessionStateProvider::sessions_with_tag`], [`SessionStateProvider::abandon_tagged`] | find / remove by tag |
//!
//! Unlike ASP.NET's module, which polls a locked session every 500 ms, an exclusive
//! request waits in the grid's FIFO queue for the session's lock and gets it the moment
//! it is released; a lock older than `executionTimeout` is taken over.

use std::sync::Arc;
use std::time::Duration;

use grid_proto::sync::lock;

use grid_client::{
    ClientError, GridClient, LockOptions, LockResult, RemoteRead, Timeout, WriteOptions,
};
use grid_proto::WriteBody;
use thiserror::Error;
use tokio::task::JoinHandle;

use crate::items::{ItemsError, SessionItems};
use crate::session_end::{self, EndCause, SessionEndCallback, SessionEnded};
use crate::settings::{ProviderSettings, SettingsError};

/// What the provider tells its caller went wrong.
#[derive(Debug, Error)]
pub enum ProviderError {
    /// The settings are unusable.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The grid refused or could not be reached.
    #[error("session store: {0}")]
    Grid(#[from] ClientError),
    /// The stored session cannot be decoded.
    #[error(transparent)]
    Items(#[from] ItemsError),
    /// The lock id given is not the session's lock (it expired or was taken over): the
    /// write did not happen.
    #[error("the session's lock was lost (taken over after executionTimeout, or expired)")]
    LockLost,
}

/// Extra work ASP.NET asks of the caller with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAction {
    /// Nothing.
    None,
    /// The item was created uninitialized (`create_uninitialized_item`): initialize it.
    InitializeItem,
}

/// A session read from the grid.
#[derive(Debug, Clone)]
pub struct SessionItem {
    /// Its items.
    pub items: SessionItems,
    /// The lock the caller now holds (exclusive reads only).
    pub lock_id: Option<u64>,
    /// What to do with it.
    pub action: SessionAction,
}

/// The answer of `get_item` / `get_item_exclusive`.
#[derive(Debug, Clone)]
pub enum ItemResult {
    /// The session, with the caller's lock for an exclusive read.
    Found(SessionItem),
    /// Another request holds the session's lock.
    Locked {
        /// Its lock id.
        lock_id: u64,
        /// How long it has held it, by the grid's clock.
        lock_age: Duration,
    },
    /// No such session (never created, expired, or removed).
    NotFound,
}

/// A session read, here or pulled from another site.
enum Read {
    Found(grid_client::Object),
    Locked { lock_id: u64, lock_age: Duration },
    Missing,
}

/// The provider: settings, the grid client, and the `Session_End` registration.
pub struct SessionStateProvider {
    client: GridClient,
    settings: ProviderSettings,
    namespace: String,
    session_end: std::sync::Mutex<Option<JoinHandle<()>>>,
    end_callback: std::sync::Mutex<Option<SessionEndCallback>>,
}

impl std::fmt::Debug for SessionStateProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStateProvider")
            .field("namespace", &self.namespace)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Drop for SessionStateProvider {
    fn drop(&mut self) {
        if let Some(task) = self.lock_end().take() {
            task.abort();
        }
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl SessionStateProvider {
    /// Validates the settings and connects to the grid. `app_name` is the namespace when
    /// `namespace` is not set.
    pub async fn connect(
        settings: ProviderSettings,
        app_name: &str,
    ) -> Result<Self, ProviderError> {
        settings.validate()?;
        let client = GridClient::with_config(settings.client_config()?).await?;
        Ok(Self {
            namespace: settings.namespace_or(app_name),
            client,
            settings,
            session_end: std::sync::Mutex::new(None),
            end_callback: std::sync::Mutex::new(None),
        })
    }

    /// The settings in use.
    pub fn settings(&self) -> &ProviderSettings {
        &self.settings
    }

    /// The grid namespace of this application's sessions.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The grid client (near-cache counters, status).
    pub fn client(&self) -> &GridClient {
        &self.client
    }

    fn lock_end(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        lock(&self.session_end)
    }

    fn sliding(&self) -> Timeout {
        Timeout::Sliding {
            ms: millis(self.settings.timeout),
        }
    }

    /// Reads a session without locking it (read-only and concurrent requests); slides its
    /// expiry. A locked session answers `Locked` and no items, as ASP.NET's `GetItem`.
    pub async fn get_item(&self, id: &str) -> Result<ItemResult, ProviderError> {
        let object = match self.read(id).await? {
            Read::Found(object) => object,
            Read::Locked { lock_id, lock_age } => {
                return Ok(ItemResult::Locked { lock_id, lock_age })
            }
            Read::Missing => return Ok(ItemResult::NotFound),
        };
        if let Some(lock_id) = object.info.lock_id {
            return Ok(ItemResult::Locked {
                lock_id,
                lock_age: Duration::from_millis(object.info.lock_age_ms),
            });
        }
        Ok(ItemResult::Found(SessionItem {
            items: SessionItems::decode(&object.value)?,
            lock_id: None,
            action: SessionAction::None,
        }))
    }

    /// Reads a session's items whether or not it is locked (concurrent requests, which
    /// never wait); `None` if it does not exist. A session locked at a remote site stays
    /// there and is reported as unavailable.
    pub async fn peek_item(&self, id: &str) -> Result<Option<SessionItems>, ProviderError> {
        match self.read(id).await? {
            Read::Found(object) => Ok(Some(SessionItems::decode(&object.value)?)),
            Read::Missing => Ok(None),
            Read::Locked { .. } => Err(ProviderError::Grid(ClientError::Unavailable {
                code: grid_proto::Unavailability::Busy,
                reason: "the session is locked at another site".into(),
            })),
        }
    }

    /// Reads a session here, or pulls it from `remoteStores` (in order) when it is not
    /// at this site.
    async fn read(&self, id: &str) -> Result<Read, ProviderError> {
        let stores = &self.settings.remote_stores;
        if stores.is_empty() {
            return Ok(match self.client.get(&self.namespace, id).await? {
                Some(object) => Read::Found(object),
                None => Read::Missing,
            });
        }
        Ok(
            match self.client.get_remote(&self.namespace, id, stores).await? {
                RemoteRead::Found(object) => Read::Found(object),
                RemoteRead::Locked {
                    lock_id,
                    lock_age_ms,
                } => Read::Locked {
                    lock_id,
                    lock_age: Duration::from_millis(lock_age_ms),
                },
                RemoteRead::NotFound { reasons } => {
                    if !reasons.is_empty() {
                        tracing::debug!(session = id, ?reasons, "session not found at any site");
                    }
                    Read::Missing
                }
            },
        )
    }

    /// Locks a session and reads it, waiting in the grid's queue up to `wait` if another
    /// request holds it, and taking over a lock older than `executionTimeout`. The lock
    /// frees itself after `executionTimeout` if never released. Clears the
    /// uninitialized mark and reports it as [`SessionAction::InitializeItem`].
    pub async fn get_item_exclusive(
        &self,
        id: &str,
        wait: Duration,
    ) -> Result<ItemResult, ProviderError> {
        let execution = self.settings.execution_timeout;
        let options = LockOptions {
            wait,
            lease: Some(execution),
            take_over_after: Some(execution),
            cached_version: None,
        };
        let stores = &self.settings.remote_stores;
        match self
            .client
            .lock_from(&self.namespace, id, options, stores)
            .await?
        {
            LockResult::Acquired {
                lock_id,
                value,
                info,
            } => Ok(ItemResult::Found(SessionItem {
                items: match SessionItems::decode(value.as_deref().unwrap_or_default()) {
                    Ok(items) => items.read_at(info.version),
                    Err(e) => {
                        // Unreadable: let the lock go, or every later request waits it out.
                        let _ = self.release_item_exclusive(id, lock_id).await;
                        return Err(e.into());
                    }
                },
                lock_id: Some(lock_id),
                action: if info.uninitialized {
                    SessionAction::InitializeItem
                } else {
                    SessionAction::None
                },
            })),
            LockResult::Locked {
                lock_id,
                lock_age_ms,
            } => Ok(ItemResult::Locked {
                lock_id,
                lock_age: Duration::from_millis(lock_age_ms),
            }),
            LockResult::NotFound => Ok(ItemResult::NotFound),
        }
    }

    /// Writes a session back and releases its lock in one step: only the items that
    /// changed (and the tags, if they did), merged into the stored session on the node.
    /// `new_item` creates it instead (a session first used in this request), with every
    /// item. With `lock_id: None` (concurrent requests) it merges without a lock; a
    /// session removed meanwhile (abandoned, revoked, expired) stays removed.
    pub async fn set_and_release_item_exclusive(
        &self,
        id: &str,
        items: &SessionItems,
        lock_id: Option<u64>,
        new_item: bool,
    ) -> Result<(), ProviderError> {
        let locked = lock_id.is_some() && !new_item;
        // Only a request that changed the tags sends them: one that read them before
        // another request changed them (concurrent mode) does not undo that change.
        let tags = new_item || items.tags_changed();
        // A session stored whole by an earlier release is rewritten whole, as an item map.
        let body = if new_item || items.is_legacy() {
            WriteBody::Whole(items.encode())
        } else {
            WriteBody::Items(items.changes())
        };
        let options = WriteOptions {
            tags: tags.then(|| items.tags()),
            timeout: Some(self.sliding()),
            lock_id: lock_id.filter(|_| locked),
            unlock: locked,
            create: new_item,
            base_version: items.read_version(),
        };
        match self.client.write(&self.namespace, id, body, options).await {
            Ok(_) => Ok(()),
            Err(ClientError::LockLost) => Err(ProviderError::LockLost),
            Err(ClientError::NotFound) => {
                tracing::debug!(
                    session = id,
                    "session gone before its write-back; not recreated"
                );
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Gives a session a new id (against session fixation, e.g. at login), keeping its
    /// items and tags: the session is written under `new_id` first, then the old id is
    /// removed with the caller's lock, so at no point is the session lost, and a request
    /// still holding the old id waits for that lock and then finds no session. If the
    /// old session was removed meanwhile (abandoned, revoked, expired), the new one is
    /// removed too and this returns `false`: a revoked session is not brought back.
    pub async fn rotate_id(
        &self,
        old_id: &str,
        new_id: &str,
        items: &SessionItems,
        lock_id: Option<u64>,
    ) -> Result<bool, ProviderError> {
        self.set_and_release_item_exclusive(new_id, items, None, true)
            .await?;
        let moved = match self.client.remove(&self.namespace, old_id, lock_id).await {
            Ok(moved) => Ok(moved),
            Err(ClientError::LockLost) => Err(ProviderError::LockLost),
            // The outcome is unknown (a failover mid-way, say): the old id decides. Gone,
            // the rotation happened; still there (or unknowable), it did not, and the old
            // session stays as it was rather than two ids naming one session.
            Err(e) => match self.client.get(&self.namespace, old_id).await {
                Ok(None) => Ok(true),
                _ => Err(e.into()),
            },
        };
        if !matches!(moved, Ok(true)) {
            if let Err(e) = self.client.remove(&self.namespace, new_id, None).await {
                tracing::warn!(session = new_id, error = %e, "cannot undo a failed id rotation");
            }
        }
        moved
    }

    /// The ids of this application's sessions tagged `tag` (e.g. `user:42`), sorted; each
    /// partition answers as of a linearizable point.
    pub async fn sessions_with_tag(&self, tag: &str) -> Result<Vec<String>, ProviderError> {
        let keys = self.client.find_by_tag(&self.namespace, tag).await?;
        Ok(keys
            .into_iter()
            .filter_map(|k| String::from_utf8(k).ok())
            .collect())
    }

    /// Abandons every session tagged `tag` ("log out everywhere"), locked or not: each
    /// is removed in one step that checks the tag, and a request in flight on one of
    /// them finds its lock lost and saves nothing. Each removal is an event of the grid,
    /// like an expiry: with `handleSessionEnd`, `Session_End` runs for each session once,
    /// on one web server of the farm, with its final items and
    /// [`EndCause::Revoked`] (even when this call lost the answer to a removal).
    /// Returns the ids this call removed; a session whose removal failed (logged) is
    /// not among them.
    pub async fn abandon_tagged(&self, tag: &str) -> Result<Vec<String>, ProviderError> {
        let mut ended = Vec::new();
        for id in self.sessions_with_tag(tag).await? {
            match self.client.remove_tagged(&self.namespace, &id, tag).await {
                Ok(true) => ended.push(id),
                Ok(false) => {}
                // The others are still revoked; the grid reports this one's end if the
                // removal happened.
                Err(e) => tracing::warn!(session = %id, error = %e, "cannot revoke a session"),
            }
        }
        Ok(ended)
    }

    /// Releases a session's lock without writing; only the holder's lock id does.
    pub async fn release_item_exclusive(
        &self,
        id: &str,
        lock_id: u64,
    ) -> Result<(), ProviderError> {
        match self.client.unlock(&self.namespace, id, lock_id).await {
            Ok(()) | Err(ClientError::NotFound) => Ok(()),
            Err(ClientError::LockLost) => Err(ProviderError::LockLost),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a session (`Session.Abandon`), with the caller's lock id if it holds one;
    /// `false` if it was gone already (removed by another server, revoked, expired).
    pub async fn remove_item(&self, id: &str, lock_id: Option<u64>) -> Result<bool, ProviderError> {
        match self.client.remove(&self.namespace, id, lock_id).await {
            Ok(removed) => Ok(removed),
            Err(ClientError::LockLost) => Err(ProviderError::LockLost),
            Err(e) => Err(e.into()),
        }
    }

    /// A session was abandoned on this server (and removed): with `handleSessionEnd`,
    /// `Session_End` runs here, once, with its final items.
    pub fn abandoned(&self, id: &str, items: SessionItems) {
        let callback = lock(&self.end_callback).clone();
        if let Some(callback) = callback {
            callback(SessionEnded {
                id: id.to_string(),
                items,
                cause: EndCause::Abandoned,
            });
        }
    }

    /// Restarts a session's expiry (a request that does not use the session keeps it
    /// alive).
    pub async fn reset_item_timeout(&self, id: &str) -> Result<(), ProviderError> {
        self.client.reset_timeout(&self.namespace, id, None).await?;
        Ok(())
    }

    /// Creates an empty session marked uninitialized (cookieless sessions), expiring
    /// after `timeout` idle; an existing session is left alone.
    pub async fn create_uninitialized_item(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<(), ProviderError> {
        let timeout = Timeout::Sliding {
            ms: millis(timeout),
        };
        self.client
            .create(&self.namespace, id, Vec::new(), timeout, true)
            .await?;
        Ok(())
    }

    /// Registers `callback` as `Session_End`. With `handleSessionEnd=true`, this provider
    /// registers for the namespace's expirations (and revocations by tag); the grid hands
    /// each ended session to one registered web server, which calls `callback` with its
    /// id and final items.
    /// Without it, the callback runs only for sessions abandoned on this server.
    /// Returns whether expirations are handled.
    pub async fn set_item_expire_callback(
        &self,
        callback: SessionEndCallback,
    ) -> Result<bool, ProviderError> {
        if !self.settings.handle_session_end {
            return Ok(false);
        }
        *lock(&self.end_callback) = Some(Arc::clone(&callback));
        let subscription = self.client.subscribe(&self.namespace).await?;
        let task = tokio::spawn(session_end::pump(subscription, Arc::clone(&callback)));
        if let Some(old) = self.lock_end().replace(task) {
            old.abort();
        }
        Ok(true)
    }
}
