//! A [`tower_sessions::SessionStore`] over the grid, for applications already on
//! tower-sessions: replace the store in `SessionManagerLayer::new(store)` and sessions
//! live in the grid, replicated, with their expiry kept by the grid.
//!
//! Each record is one grid object (key = the record id, value = the record as JSON) with
//! an absolute timeout at the record's expiry date. tower-sessions has no locking, so
//! concurrent requests of one session behave as with its other stores: last write wins.

use async_trait::async_trait;
use grid_client::{ClientError, GridClient, Timeout};
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{Error, Result};
use tower_sessions::SessionStore;

/// Sessions of one namespace in the grid.
#[derive(Debug, Clone)]
pub struct GridSessionStore {
    client: GridClient,
    namespace: String,
}

impl GridSessionStore {
    /// A store over `client`, keeping sessions in `namespace`.
    pub fn new(client: GridClient, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
        }
    }

    fn timeout(record: &Record) -> Timeout {
        let left = record.expiry_date - OffsetDateTime::now_utc();
        // Already past: a millisecond, so the grid expires it at once.
        let ms = u64::try_from(left.whole_milliseconds()).unwrap_or(0).max(1);
        Timeout::Absolute { ms }
    }
}

fn backend(e: ClientError) -> Error {
    Error::Backend(e.to_string())
}

fn encode(record: &Record) -> Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| Error::Encode(e.to_string()))
}

#[async_trait]
impl SessionStore for GridSessionStore {
    async fn create(&self, record: &mut Record) -> Result<()> {
        // Adds only if absent: an id already taken gets a new one.
        loop {
            let added = self
                .client
                .create(
                    &self.namespace,
                    record.id.to_string(),
                    encode(record)?,
                    Self::timeout(record),
                    false,
                )
                .await
                .map_err(backend)?;
            if added.is_some() {
                return Ok(());
            }
            record.id = Id::default();
        }
    }

    async fn save(&self, record: &Record) -> Result<()> {
        self.client
            .put(
                &self.namespace,
                record.id.to_string(),
                encode(record)?,
                Self::timeout(record),
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn load(&self, id: &Id) -> Result<Option<Record>> {
        let Some(object) = self
            .client
            .get(&self.namespace, id.to_string())
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let record: Record =
            serde_json::from_slice(&object.value).map_err(|e| Error::Decode(e.to_string()))?;
        Ok((record.expiry_date > OffsetDateTime::now_utc()).then_some(record))
    }

    async fn delete(&self, id: &Id) -> Result<()> {
        self.client
            .remove(&self.namespace, id.to_string(), None)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
