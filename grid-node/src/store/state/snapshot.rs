//! Snapshots of a partition's store: what a new or lagging replica installs instead of
//! replaying the whole log, in the versioned [`STORE_SNAPSHOT`] format. The deadline
//! and tag indexes are rebuilt on restore, not shipped. Version 4 added the objects'
//! tags after the fields of version 3, which is still read (as objects without tags).

use serde::{Deserialize, Serialize};

use super::{Entry, Store, StoreConfig, Transfers};
use crate::format::{Format, FormatError, STORE_SNAPSHOT};
use grid_proto::ObjKey;

/// The store snapshot before tags.
const STORE_SNAPSHOT_V3: Format = Format {
    version: 3,
    ..STORE_SNAPSHOT
};

#[derive(Serialize)]
struct SnapshotRef<'a> {
    seq: u64,
    objects: Vec<(&'a ObjKey, &'a Entry)>,
    transfers: &'a Transfers,
    tags: Vec<(&'a ObjKey, &'a Vec<String>)>,
}

#[derive(Deserialize)]
struct SnapshotOwned {
    seq: u64,
    objects: Vec<(ObjKey, Entry)>,
    transfers: Transfers,
    tags: Vec<(ObjKey, Vec<String>)>,
}

#[derive(Deserialize)]
struct SnapshotV3 {
    seq: u64,
    objects: Vec<(ObjKey, Entry)>,
    transfers: Transfers,
}

impl Store {
    /// Serializes every object, lock and the version counter.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut objects: Vec<_> = self.objects.iter().collect();
        // Sorted, so equal stores give equal bytes.
        objects.sort_by(|a, b| a.0.cmp(b.0));
        STORE_SNAPSHOT.encode(&SnapshotRef {
            seq: self.seq,
            objects,
            transfers: &self.transfers,
            tags: self.tags.all(),
        })
    }

    /// Rebuilds a store from [`Store::snapshot`] bytes.
    pub fn restore(config: StoreConfig, bytes: &[u8]) -> Result<Store, FormatError> {
        let snap: SnapshotOwned = if STORE_SNAPSHOT.version_of(bytes)? == STORE_SNAPSHOT_V3.version
        {
            let v3: SnapshotV3 = STORE_SNAPSHOT_V3.decode(bytes)?;
            SnapshotOwned {
                seq: v3.seq,
                objects: v3.objects,
                transfers: v3.transfers,
                tags: Vec::new(),
            }
        } else {
            STORE_SNAPSHOT.decode(bytes)?
        };
        let mut store = Store::new(config);
        store.seq = snap.seq;
        store.transfers = snap.transfers;
        for (obj, entry) in snap.objects {
            store.value_bytes += entry.value.len() as u64;
            if let Some(at) = entry.expires_at {
                store.expiry.insert(at, obj.clone());
            }
            if let Some(lock) = entry.lock {
                store.leases.insert(lock.lease_end, obj.clone());
            }
            store.objects.insert(obj, entry);
        }
        for (obj, tags) in snap.tags {
            store.tags.set(&obj, tags);
        }
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use grid_proto::{Op, Reply, Timeout};

    use super::*;

    #[test]
    fn restored_store_behaves_like_the_original() {
        let cfg = StoreConfig::default();
        let mut a = Store::new(cfg);
        let obj = |k: &str| ObjKey::new("ns", k.as_bytes().to_vec());
        let put = |k: &str, t| Op::Put {
            obj: obj(k),
            value: k.as_bytes().to_vec(),
            timeout: t,
            lock_id: None,
        };
        a.apply(&put("forever", Timeout::None), 0);
        a.apply(&put("slide", Timeout::Sliding { ms: 1000 }), 0);
        let lock = Op::ReadAndLock {
            obj: obj("forever"),
            cached_version: None,
            lease_ms: Some(500),
            wait_ms: 0,
            take_over_after_ms: None,
        };
        a.apply(&lock, 10);
        let tag = Op::Write {
            obj: obj("slide"),
            body: grid_proto::WriteBody::Keep,
            tags: Some(vec!["user:1".into()]),
            timeout: None,
            lock_id: None,
            unlock: false,
            create: false,
            max_bytes: 1 << 20,
        };
        a.apply(&tag, 0);
        let mut b = Store::restore(cfg, &a.snapshot()).unwrap();
        assert_eq!(
            b.tagged("ns", "user:1", 10, None, usize::MAX).0,
            vec![b"slide".to_vec()]
        );
        assert_eq!(a.snapshot(), b.snapshot());
        assert_eq!(a.stats(), b.stats());
        assert_eq!(a.next_deadline(), b.next_deadline());
        // Same future on both: lease end, expiry, and the next version number.
        for store in [&mut a, &mut b] {
            let events = store.tick(1000);
            assert_eq!(events.len(), 2, "{events:?}");
        }
        assert_eq!(
            a.apply(&put("new", Timeout::None), 2000),
            b.apply(&put("new", Timeout::None), 2000)
        );
        assert!(matches!(
            b.apply(&put("x", Timeout::None), 2000).reply,
            Reply::Added { .. }
        ));
    }

    #[test]
    fn a_snapshot_from_before_tags_is_read() {
        let mut a = Store::new(StoreConfig::default());
        let put = Op::Put {
            obj: ObjKey::new("ns", b"k".to_vec()),
            value: b"v".to_vec(),
            timeout: Timeout::None,
            lock_id: None,
        };
        a.apply(&put, 0);
        // Version 3 is version 4 without the trailing tags (here none: one zero byte).
        let mut v3 = a.snapshot();
        assert_eq!((v3[0], v3.pop()), (4, Some(0)));
        v3[0] = 3;
        let b = Store::restore(StoreConfig::default(), &v3).unwrap();
        assert_eq!(b.snapshot(), a.snapshot());
    }

    #[test]
    fn garbage_and_other_formats_are_refused() {
        assert!(matches!(
            Store::restore(StoreConfig::default(), &[0xff, 0xff, 0xff]),
            Err(FormatError::Corrupt { .. })
        ));
        let other = postcard::to_allocvec(&(7u16, 0u64)).unwrap();
        assert!(matches!(
            Store::restore(StoreConfig::default(), &other),
            Err(FormatError::Version { got: 7, .. })
        ));
    }
}
