//! Web session state over the grid, with ASP.NET's semantics.
//!
//! - [`settings`]: [`ProviderSettings`], the ASP.NET attributes (TOML, environment, code).
//! - [`provider`]: [`SessionStateProvider`], the `SessionStateStoreProviderAsyncBase`
//!   operations (get, get exclusive, set and release, release, remove, reset timeout,
//!   create uninitialized, `Session_End`).
//! - [`layer`]: [`SessionLayer`], the per-request algorithm of `SessionStateModuleAsync`
//!   as a tower layer for axum; [`session`]: the [`Session`] handlers extract.
//! - [`items`]: [`SessionItems`] and their stored form (an item map, written back per
//!   item); [`codec`]: one item's bytes, compressed from 1 KiB.
//! - [`session_end`]: delivery of ended sessions to the `Session_End` callback.
//! - [`store`]: [`GridSessionStore`], a `tower_sessions::SessionStore` over the grid.
//! - [`demo`]: the demo site (`--example web`).
//!
//! ```text
//! request ─▶ SessionLayer ─ cookie id ─▶ provider.get_item_exclusive ─▶ grid: read-and-lock
//!               │                           (waits in the grid's FIFO queue for the lock)
//!               ├─▶ handler(Session: get / set / abandon)
//!               └─▶ changed? set_and_release (changed items merged + unlock, one step)
//!                            : release (unlock)
//! grid expiry ─▶ event to one web server ─▶ Session_End(id, final items) ─▶ ack
//! ```

pub mod codec;
pub mod demo;
pub mod id;
pub mod items;
pub mod layer;
pub mod provider;
pub mod session;
pub mod session_end;
pub mod settings;
pub mod store;

pub use items::SessionItems;
pub use layer::{SessionLayer, SessionMode};
pub use provider::{ItemResult, ProviderError, SessionAction, SessionItem, SessionStateProvider};
pub use session::{Session, SessionError};
pub use session_end::{EndCause, SessionEndCallback, SessionEnded};
pub use settings::{ProviderSettings, SettingsError};
pub use store::GridSessionStore;
