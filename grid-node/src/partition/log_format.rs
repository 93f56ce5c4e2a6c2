//! How the log encodes the client operations and migration steps it carries: in types of
//! its own, not the wire protocol's. In memory a command holds the protocol's [`Op`] and
//! [`GeoOp`] (the store applies them as they are); on the log they go through the
//! mirrors here, so a change to the client protocol is not silently a change to the log.
//! Adding a field to `Op` or `GeoOp` fails to compile here until the log format is
//! decided (and its version bumped, see `crate::format`).
//!
//! Used as `#[serde(with = "log_format::op")]` / `"log_format::geo_op"` on the command
//! fields. The mirrors keep the shape the log had, so existing log bytes read the same.

use grid_proto::items::{Item, ItemChanges};
use grid_proto::{GeoOp, Millis, ObjKey, Op, Timeout, WriteBody};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::{ByteBuf, Bytes};

/// An object's identity on the log.
#[derive(Serialize)]
struct ObjRef<'a> {
    namespace: &'a str,
    #[serde(with = "serde_bytes")]
    key: &'a [u8],
}

#[derive(Deserialize)]
struct ObjOwned {
    namespace: String,
    #[serde(with = "serde_bytes")]
    key: Vec<u8>,
}

fn obj_ref(obj: &ObjKey) -> ObjRef<'_> {
    ObjRef {
        namespace: &obj.namespace,
        key: &obj.key,
    }
}

impl From<ObjOwned> for ObjKey {
    fn from(o: ObjOwned) -> Self {
        ObjKey {
            namespace: o.namespace,
            key: o.key,
        }
    }
}

/// An expiry on the log.
#[derive(Serialize, Deserialize, Clone, Copy)]
enum LogTimeout {
    None,
    Sliding { ms: Millis },
    Absolute { ms: Millis },
}

impl From<Timeout> for LogTimeout {
    fn from(t: Timeout) -> Self {
        match t {
            Timeout::None => LogTimeout::None,
            Timeout::Sliding { ms } => LogTimeout::Sliding { ms },
            Timeout::Absolute { ms } => LogTimeout::Absolute { ms },
        }
    }
}

impl From<LogTimeout> for Timeout {
    fn from(t: LogTimeout) -> Self {
        match t {
            LogTimeout::None => Timeout::None,
            LogTimeout::Sliding { ms } => Timeout::Sliding { ms },
            LogTimeout::Absolute { ms } => Timeout::Absolute { ms },
        }
    }
}

/// What a write does to a value, on the log.
#[derive(Serialize)]
enum LogBodyRef<'a> {
    Keep,
    Whole(&'a Bytes),
    Items {
        clear: bool,
        remove: &'a [String],
        set: Vec<(&'a str, &'a Bytes)>,
    },
}

#[derive(Deserialize)]
enum LogBodyOwned {
    Keep,
    Whole(ByteBuf),
    Items {
        clear: bool,
        remove: Vec<String>,
        set: Vec<(String, ByteBuf)>,
    },
}

fn body_ref(body: &WriteBody) -> LogBodyRef<'_> {
    match body {
        WriteBody::Keep => LogBodyRef::Keep,
        WriteBody::Whole(value) => LogBodyRef::Whole(Bytes::new(value)),
        WriteBody::Items(changes) => LogBodyRef::Items {
            clear: changes.clear,
            remove: &changes.remove,
            set: changes
                .set
                .iter()
                .map(|i| (i.name.as_str(), Bytes::new(&i.value)))
                .collect(),
        },
    }
}

impl From<LogBodyOwned> for WriteBody {
    fn from(body: LogBodyOwned) -> Self {
        match body {
            LogBodyOwned::Keep => WriteBody::Keep,
            LogBodyOwned::Whole(value) => WriteBody::Whole(value.into_vec()),
            LogBodyOwned::Items { clear, remove, set } => WriteBody::Items(ItemChanges {
                clear,
                remove,
                set: set
                    .into_iter()
                    .map(|(name, value)| Item {
                        name,
                        value: value.into_vec(),
                    })
                    .collect(),
            }),
        }
    }
}

/// Declares the borrowed (written) and owned (read) mirrors of an operation enum, with
/// the same variants and fields, each field given as `name: written type / read type`.
macro_rules! mirror {
    ($written:ident, $read:ident { $($variant:ident { $($field:ident: $w:ty, $r:ty),* }),* $(,)? }) => {
        #[derive(Serialize)]
        enum $written<'a> {
            $($variant { $($field: $w),* }),*
        }

        #[derive(Deserialize)]
        enum $read {
            $($variant { $($field: $r),* }),*
        }
    };
}

mirror!(OpRef, OpOwned {
    Create { obj: ObjRef<'a>, ObjOwned, value: &'a Bytes, ByteBuf, timeout: LogTimeout, LogTimeout, uninitialized: bool, bool },
    Put { obj: ObjRef<'a>, ObjOwned, value: &'a Bytes, ByteBuf, timeout: LogTimeout, LogTimeout, lock_id: Option<u64>, Option<u64> },
    Update {
        obj: ObjRef<'a>, ObjOwned,
        value: &'a Bytes, ByteBuf,
        timeout: Option<LogTimeout>, Option<LogTimeout>,
        expected_version: Option<u64>, Option<u64>,
        lock_id: Option<u64>, Option<u64>,
        unlock: bool, bool
    },
    Read { obj: ObjRef<'a>, ObjOwned, cached_version: Option<u64>, Option<u64> },
    ReadAndLock {
        obj: ObjRef<'a>, ObjOwned,
        cached_version: Option<u64>, Option<u64>,
        lease_ms: Option<Millis>, Option<Millis>,
        wait_ms: Millis, Millis,
        take_over_after_ms: Option<Millis>, Option<Millis>
    },
    Unlock { obj: ObjRef<'a>, ObjOwned, lock_id: u64, u64 },
    RefreshLock { obj: ObjRef<'a>, ObjOwned, lock_id: u64, u64 },
    Remove { obj: ObjRef<'a>, ObjOwned, lock_id: Option<u64>, Option<u64> },
    ResetTimeout { obj: ObjRef<'a>, ObjOwned, timeout: Option<LogTimeout>, Option<LogTimeout> },
    Write {
        obj: ObjRef<'a>, ObjOwned,
        body: LogBodyRef<'a>, LogBodyOwned,
        tags: Option<&'a [String]>, Option<Vec<String>>,
        timeout: Option<LogTimeout>, Option<LogTimeout>,
        lock_id: Option<u64>, Option<u64>,
        unlock: bool, bool,
        create: bool, bool,
        max_bytes: u64, u64
    },
    RemoveTagged { obj: ObjRef<'a>, ObjOwned, tag: &'a str, String },
});

mirror!(GeoOpRef, GeoOpOwned {
    Export { obj: ObjRef<'a>, ObjOwned, transfer: u64, u64, to_site: &'a str, String },
    Import {
        obj: ObjRef<'a>, ObjOwned,
        value: &'a Bytes, ByteBuf,
        version: u64, u64,
        timeout: LogTimeout, LogTimeout,
        uninitialized: bool, bool,
        transfer: u64, u64
    },
    Commit { obj: ObjRef<'a>, ObjOwned, transfer: u64, u64 },
    Abort { obj: ObjRef<'a>, ObjOwned, transfer: u64, u64 },
    Resolve { obj: ObjRef<'a>, ObjOwned, transfer: u64, u64 },
    // An import of a tagged object (log entry format 2); untagged ones keep the shape
    // of `Import`, so entries of format 1 read unchanged.
    ImportTagged {
        obj: ObjRef<'a>, ObjOwned,
        value: &'a Bytes, ByteBuf,
        version: u64, u64,
        timeout: LogTimeout, LogTimeout,
        uninitialized: bool, bool,
        transfer: u64, u64,
        tags: &'a [String], Vec<String>
    },
});

fn op_ref(op: &Op) -> OpRef<'_> {
    match op {
        Op::Create {
            obj,
            value,
            timeout,
            uninitialized,
        } => OpRef::Create {
            obj: obj_ref(obj),
            value: Bytes::new(value),
            timeout: (*timeout).into(),
            uninitialized: *uninitialized,
        },
        Op::Put {
            obj,
            value,
            timeout,
            lock_id,
        } => OpRef::Put {
            obj: obj_ref(obj),
            value: Bytes::new(value),
            timeout: (*timeout).into(),
            lock_id: *lock_id,
        },
        Op::Update {
            obj,
            value,
            timeout,
            expected_version,
            lock_id,
            unlock,
        } => OpRef::Update {
            obj: obj_ref(obj),
            value: Bytes::new(value),
            timeout: timeout.map(Into::into),
            expected_version: *expected_version,
            lock_id: *lock_id,
            unlock: *unlock,
        },
        Op::Read {
            obj,
            cached_version,
        } => OpRef::Read {
            obj: obj_ref(obj),
            cached_version: *cached_version,
        },
        Op::ReadAndLock {
            obj,
            cached_version,
            lease_ms,
            wait_ms,
            take_over_after_ms,
        } => OpRef::ReadAndLock {
            obj: obj_ref(obj),
            cached_version: *cached_version,
            lease_ms: *lease_ms,
            wait_ms: *wait_ms,
            take_over_after_ms: *take_over_after_ms,
        },
        Op::Unlock { obj, lock_id } => OpRef::Unlock {
            obj: obj_ref(obj),
            lock_id: *lock_id,
        },
        Op::RefreshLock { obj, lock_id } => OpRef::RefreshLock {
            obj: obj_ref(obj),
            lock_id: *lock_id,
        },
        Op::Remove { obj, lock_id } => OpRef::Remove {
            obj: obj_ref(obj),
            lock_id: *lock_id,
        },
        Op::ResetTimeout { obj, timeout } => OpRef::ResetTimeout {
            obj: obj_ref(obj),
            timeout: timeout.map(Into::into),
        },
        Op::Write {
            obj,
            body,
            tags,
            timeout,
            lock_id,
            unlock,
            create,
            max_bytes,
        } => OpRef::Write {
            obj: obj_ref(obj),
            body: body_ref(body),
            tags: tags.as_deref(),
            timeout: timeout.map(Into::into),
            lock_id: *lock_id,
            unlock: *unlock,
            create: *create,
            max_bytes: *max_bytes,
        },
        Op::RemoveTagged { obj, tag } => OpRef::RemoveTagged {
            obj: obj_ref(obj),
            tag,
        },
    }
}

impl From<OpOwned> for Op {
    fn from(op: OpOwned) -> Self {
        match op {
            OpOwned::Create {
                obj,
                value,
                timeout,
                uninitialized,
            } => Op::Create {
                obj: obj.into(),
                value: value.into_vec(),
                timeout: timeout.into(),
                uninitialized,
            },
            OpOwned::Put {
                obj,
                value,
                timeout,
                lock_id,
            } => Op::Put {
                obj: obj.into(),
                value: value.into_vec(),
                timeout: timeout.into(),
                lock_id,
            },
            OpOwned::Update {
                obj,
                value,
                timeout,
                expected_version,
                lock_id,
                unlock,
            } => Op::Update {
                obj: obj.into(),
                value: value.into_vec(),
                timeout: timeout.map(Into::into),
                expected_version,
                lock_id,
                unlock,
            },
            OpOwned::Read {
                obj,
                cached_version,
            } => Op::Read {
                obj: obj.into(),
                cached_version,
            },
            OpOwned::ReadAndLock {
                obj,
                cached_version,
                lease_ms,
                wait_ms,
                take_over_after_ms,
            } => Op::ReadAndLock {
                obj: obj.into(),
                cached_version,
                lease_ms,
                wait_ms,
                take_over_after_ms,
            },
            OpOwned::Unlock { obj, lock_id } => Op::Unlock {
                obj: obj.into(),
                lock_id,
            },
            OpOwned::RefreshLock { obj, lock_id } => Op::RefreshLock {
                obj: obj.into(),
                lock_id,
            },
            OpOwned::Remove { obj, lock_id } => Op::Remove {
                obj: obj.into(),
                lock_id,
            },
            OpOwned::ResetTimeout { obj, timeout } => Op::ResetTimeout {
                obj: obj.into(),
                timeout: timeout.map(Into::into),
            },
            OpOwned::Write {
                obj,
                body,
                tags,
                timeout,
                lock_id,
                unlock,
                create,
                max_bytes,
            } => Op::Write {
                obj: obj.into(),
                body: body.into(),
                tags,
                timeout: timeout.map(Into::into),
                lock_id,
                unlock,
                create,
                max_bytes,
            },
            OpOwned::RemoveTagged { obj, tag } => Op::RemoveTagged {
                obj: obj.into(),
                tag,
            },
        }
    }
}

fn geo_op_ref(op: &GeoOp) -> GeoOpRef<'_> {
    match op {
        GeoOp::Export {
            obj,
            transfer,
            to_site,
        } => GeoOpRef::Export {
            obj: obj_ref(obj),
            transfer: *transfer,
            to_site,
        },
        GeoOp::Import {
            obj,
            value,
            version,
            timeout,
            uninitialized,
            transfer,
            tags,
        } if !tags.is_empty() => GeoOpRef::ImportTagged {
            obj: obj_ref(obj),
            value: Bytes::new(value),
            version: *version,
            timeout: (*timeout).into(),
            uninitialized: *uninitialized,
            transfer: *transfer,
            tags,
        },
        GeoOp::Import {
            obj,
            value,
            version,
            timeout,
            uninitialized,
            transfer,
            ..
        } => GeoOpRef::Import {
            obj: obj_ref(obj),
            value: Bytes::new(value),
            version: *version,
            timeout: (*timeout).into(),
            uninitialized: *uninitialized,
            transfer: *transfer,
        },
        GeoOp::Commit { obj, transfer } => GeoOpRef::Commit {
            obj: obj_ref(obj),
            transfer: *transfer,
        },
        GeoOp::Abort { obj, transfer } => GeoOpRef::Abort {
            obj: obj_ref(obj),
            transfer: *transfer,
        },
        GeoOp::Resolve { obj, transfer } => GeoOpRef::Resolve {
            obj: obj_ref(obj),
            transfer: *transfer,
        },
    }
}

impl From<GeoOpOwned> for GeoOp {
    fn from(op: GeoOpOwned) -> Self {
        match op {
            GeoOpOwned::Export {
                obj,
                transfer,
                to_site,
            } => GeoOp::Export {
                obj: obj.into(),
                transfer,
                to_site,
            },
            GeoOpOwned::Import {
                obj,
                value,
                version,
                timeout,
                uninitialized,
                transfer,
            } => GeoOp::Import {
                obj: obj.into(),
                value: value.into_vec(),
                version,
                timeout: timeout.into(),
                uninitialized,
                transfer,
                tags: Vec::new(),
            },
            GeoOpOwned::ImportTagged {
                obj,
                value,
                version,
                timeout,
                uninitialized,
                transfer,
                tags,
            } => GeoOp::Import {
                obj: obj.into(),
                value: value.into_vec(),
                version,
                timeout: timeout.into(),
                uninitialized,
                transfer,
                tags,
            },
            GeoOpOwned::Commit { obj, transfer } => GeoOp::Commit {
                obj: obj.into(),
                transfer,
            },
            GeoOpOwned::Abort { obj, transfer } => GeoOp::Abort {
                obj: obj.into(),
                transfer,
            },
            GeoOpOwned::Resolve { obj, transfer } => GeoOp::Resolve {
                obj: obj.into(),
                transfer,
            },
        }
    }
}

/// `#[serde(with)]` for an [`Op`] on the log.
pub(crate) mod op {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(op: &Op, s: S) -> Result<S::Ok, S::Error> {
        op_ref(op).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Op, D::Error> {
        OpOwned::deserialize(d).map(Op::from)
    }
}

/// `#[serde(with)]` for a [`GeoOp`] on the log.
pub(crate) mod geo_op {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(op: &GeoOp, s: S) -> Result<S::Ok, S::Error> {
        geo_op_ref(op).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<GeoOp, D::Error> {
        GeoOpOwned::deserialize(d).map(GeoOp::from)
    }
}

#[cfg(test)]
#[path = "log_format_tests.rs"]
mod tests;
