//! What moves an object's primary copy between sites (geo replication), and how a node
//! reports its remote stores.

use rkyv::{Archive, Deserialize, Serialize};
use serde::{Deserialize as SerdeDeserialize, Serialize as SerdeSerialize};

use crate::msg::{ObjKey, Timeout};

/// The steps of moving an object's primary copy from one site (the source) to another
/// (the destination). Two steps, so a crash at any point leaves exactly one primary:
/// the source marks the object as migrating under a transfer id and hands out its data
/// (`Export`); the destination makes it primary (`Import`) and tells the source
/// (`Commit`), which keeps a read-only proxy pointing at the destination. A source left
/// migrating asks the destination (`Resolve`) whether the import happened; the question
/// itself fences a late import out.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, SerdeSerialize, SerdeDeserialize,
)]
pub enum GeoOp {
    /// Source: mark `obj` migrating to `to_site` under `transfer` and return its data
    /// (`GeoExported`), or `Locked`, `NotFound`, `Moved`.
    Export {
        /// The object.
        obj: ObjKey,
        /// Names this hand-over.
        transfer: u64,
        /// The destination site.
        to_site: String,
    },
    /// Destination: make `obj` primary here with this data, unless `transfer` was
    /// resolved as aborted. Replies `Added`.
    Import {
        /// The object.
        obj: ObjKey,
        /// Its bytes.
        value: Vec<u8>,
        /// Its version at the source.
        version: u64,
        /// Its expiry.
        timeout: Timeout,
        /// Its uninitialized mark (ASP.NET `CreateUninitializedItem`), carried over.
        uninitialized: bool,
        /// The hand-over.
        transfer: u64,
        /// Its tags, carried over.
        tags: Vec<String>,
    },
    /// Source: the destination holds the primary now; keep a proxy. Replies `Updated`.
    Commit {
        /// The object.
        obj: ObjKey,
        /// The hand-over.
        transfer: u64,
    },
    /// Source: the hand-over did not happen; the object is primary here again.
    Abort {
        /// The object.
        obj: ObjKey,
        /// The hand-over.
        transfer: u64,
    },
    /// Destination: did the import of `transfer` happen? If not, it never will.
    /// Replies `Transfer`.
    Resolve {
        /// The object (it names the partition).
        obj: ObjKey,
        /// The hand-over.
        transfer: u64,
    },
}

impl GeoOp {
    /// The object this step addresses.
    pub fn obj(&self) -> &ObjKey {
        match self {
            GeoOp::Export { obj, .. }
            | GeoOp::Import { obj, .. }
            | GeoOp::Commit { obj, .. }
            | GeoOp::Abort { obj, .. }
            | GeoOp::Resolve { obj, .. } => obj,
        }
    }
}

/// A remote site as a node sees it, for `gridctl status`.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Debug,
    Clone,
    PartialEq,
    Eq,
    Default,
    SerdeSerialize,
    SerdeDeserialize,
)]
pub struct RemoteStoreStatus {
    /// Its name.
    pub name: String,
    /// Its geo addresses.
    pub addrs: Vec<String>,
    /// Whether the last probe reached it.
    pub reachable: bool,
    /// What the last probe saw.
    pub detail: String,
}
