//! Links between sites ("geo replication"): each site is its own grid cluster; its nodes
//! reach the nodes of other sites over QUIC (quinn, TLS 1.3) to move an object's primary
//! copy to the site that uses it.
//!
//! - [`wire`]: the versioned messages sites exchange, with the shared token.
//! - [`tls`]: certificates: from files (production) or self-signed (development,
//!   loopback only).
//! - [`link`]: [`GeoLink`], one QUIC endpoint per node that both serves other sites and
//!   sends requests to them, one bidirectional stream per request.
//!
//! ```text
//! west node: Pull(read, [east]) ─▶ miss here ─▶ GeoLink.request(east, Export) ─QUIC─▶ east node
//!   ◀─ data ── east leader: Primary ─▶ Migrating (replicated)  ◀── route to partition leader
//!   west leader: Import (replicated, primary here) ─▶ Commit ─QUIC─▶ east: Migrating ─▶ Proxy
//! ```
//!
//! The migration steps themselves are `grid_proto::GeoOp`s run by each site's partition
//! leaders; this crate only carries them.

pub mod link;
pub mod tls;
pub mod wire;

pub use link::{GeoError, GeoHandler, GeoLink};
pub use tls::{GeoTls, TlsFiles};
pub use wire::{GeoRequest, GeoResponse, StepAnswer, GEO_VERSION};
