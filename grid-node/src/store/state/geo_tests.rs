//! The two-step hand-over between a source and a destination store, including the crash
//! points: each side's state is replicated, so a crash means the next step runs later,
//! or a `Resolve` decides it.

use grid_proto::{GeoOp, ObjKey, Op, Reply, Timeout};

use super::super::{Store, StoreConfig, StoreEvent};

fn obj() -> ObjKey {
    ObjKey::new("sessions", "s1")
}

fn source_with_object() -> (Store, u64) {
    let mut s = Store::new(StoreConfig::default());
    let reply = s
        .apply(
            &Op::Put {
                obj: obj(),
                value: b"items".to_vec(),
                timeout: Timeout::Sliding { ms: 60_000 },
                lock_id: None,
            },
            0,
        )
        .reply;
    let Reply::Added { version } = reply else {
        panic!("{reply:?}")
    };
    (s, version)
}

fn export(s: &mut Store, transfer: u64) -> Reply {
    s.apply_geo(
        &GeoOp::Export {
            obj: obj(),
            transfer,
            to_site: "west".into(),
        },
        10,
    )
    .0
}

fn import(d: &mut Store, exported: &Reply, transfer: u64) -> Reply {
    let Reply::GeoExported { value, info, tags } = exported else {
        panic!("{exported:?}")
    };
    d.apply_geo(
        &GeoOp::Import {
            obj: obj(),
            value: value.clone(),
            version: info.version,
            timeout: info.timeout,
            uninitialized: info.uninitialized,
            transfer,
            tags: tags.clone(),
        },
        20,
    )
    .0
}

fn read(s: &mut Store) -> Reply {
    s.apply(
        &Op::Read {
            obj: obj(),
            cached_version: None,
        },
        30,
    )
    .reply
}

fn step(s: &mut Store, op: GeoOp) -> Reply {
    s.apply_geo(&op, 40).0
}

#[test]
fn a_completed_hand_over_leaves_a_primary_there_and_a_proxy_here() {
    let (mut source, version) = source_with_object();
    let mut dest = Store::new(StoreConfig::default());
    let exported = export(&mut source, 7);
    assert!(
        matches!(
            read(&mut source),
            Reply::Unavailable {
                code: grid_proto::Unavailability::Migrating,
                ..
            }
        ),
        "held while migrating"
    );
    assert_eq!(import(&mut dest, &exported, 7), Reply::Added { version });
    assert_eq!(
        step(
            &mut source,
            GeoOp::Commit {
                obj: obj(),
                transfer: 7
            }
        ),
        Reply::Updated { version }
    );
    assert_eq!(
        read(&mut source),
        Reply::Moved {
            site: "west".into()
        }
    );
    let write = Op::Put {
        obj: obj(),
        value: b"new".to_vec(),
        timeout: Timeout::None,
        lock_id: None,
    };
    assert_eq!(
        source.apply(&write, 50).reply,
        Reply::Moved {
            site: "west".into()
        },
        "a proxy refuses writes, naming the primary's site"
    );
    assert!(matches!(read(&mut dest), Reply::Retrieved { .. }));
    assert_eq!(source.stats().value_bytes, 0, "the proxy keeps no bytes");
}

#[test]
fn a_proxy_expires_without_an_event() {
    let (mut source, _) = source_with_object();
    let exported = export(&mut source, 1);
    import(&mut Store::new(StoreConfig::default()), &exported, 1);
    step(
        &mut source,
        GeoOp::Commit {
            obj: obj(),
            transfer: 1,
        },
    );
    let events = source.tick(1_000_000);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(source.stats().objects, 0);
}

#[test]
fn crash_before_the_import_resolves_to_the_source_and_fences_the_late_import() {
    let (mut source, _) = source_with_object();
    let mut dest = Store::new(StoreConfig::default());
    let exported = export(&mut source, 9);
    // The destination crashed before importing; the source asks.
    assert_eq!(
        step(
            &mut dest,
            GeoOp::Resolve {
                obj: obj(),
                transfer: 9
            }
        ),
        Reply::Transfer { committed: false }
    );
    step(
        &mut source,
        GeoOp::Abort {
            obj: obj(),
            transfer: 9,
        },
    );
    assert!(
        matches!(read(&mut source), Reply::Retrieved { .. }),
        "primary again"
    );
    // The import arrives late: refused, so there is still one primary.
    assert!(matches!(
        import(&mut dest, &exported, 9),
        Reply::Unavailable {
            code: grid_proto::Unavailability::HandOverAborted,
            ..
        }
    ));
    assert_eq!(read(&mut dest), Reply::NotFound);
}

#[test]
fn crash_after_the_import_resolves_to_the_destination() {
    let (mut source, version) = source_with_object();
    let mut dest = Store::new(StoreConfig::default());
    let exported = export(&mut source, 4);
    import(&mut dest, &exported, 4);
    // The commit never reached the source; it asks.
    assert_eq!(
        step(
            &mut dest,
            GeoOp::Resolve {
                obj: obj(),
                transfer: 4
            }
        ),
        Reply::Transfer { committed: true }
    );
    step(
        &mut source,
        GeoOp::Commit {
            obj: obj(),
            transfer: 4,
        },
    );
    assert_eq!(
        read(&mut source),
        Reply::Moved {
            site: "west".into()
        }
    );
    assert!(matches!(read(&mut dest), Reply::Retrieved { info, .. } if info.version == version));
    // A retried import of the same transfer is answered, not applied twice.
    assert_eq!(import(&mut dest, &exported, 4), Reply::Added { version });
}

#[test]
fn locked_objects_wait_and_expiry_waits_for_the_hand_over() {
    let (mut source, _) = source_with_object();
    let lock = Op::ReadAndLock {
        obj: obj(),
        cached_version: None,
        lease_ms: None,
        wait_ms: 0,
        take_over_after_ms: None,
    };
    source.apply(&lock, 5);
    assert!(matches!(export(&mut source, 2), Reply::Locked { .. }));
    let (mut source, _) = source_with_object();
    export(&mut source, 3);
    let events = source.tick(10_000_000);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, StoreEvent::Expired { .. })),
        "no expiry mid-migration: {events:?}"
    );
    step(
        &mut source,
        GeoOp::Abort {
            obj: obj(),
            transfer: 3,
        },
    );
    let events = source.tick(20_000_000);
    assert!(events
        .iter()
        .any(|e| matches!(e, StoreEvent::Expired { .. })));
}

#[test]
fn importing_never_reuses_a_version_of_the_destination() {
    let (mut source, _) = source_with_object();
    let mut dest = Store::new(StoreConfig::default());
    for i in 0..10 {
        dest.apply(
            &Op::Put {
                obj: ObjKey::new("other", format!("k{i}")),
                value: vec![1],
                timeout: Timeout::None,
                lock_id: None,
            },
            0,
        );
    }
    let exported = export(&mut source, 5);
    let Reply::Added { version } = import(&mut dest, &exported, 5) else {
        panic!()
    };
    assert_eq!(version, 11, "ahead of the destination's counter");
}

#[test]
fn tags_move_with_the_object_and_a_replayed_import_does_not_reset_them() {
    use grid_proto::WriteBody;
    let tag = |s: &mut Store, tags: &[&str]| {
        let op = Op::Write {
            obj: obj(),
            body: WriteBody::Keep,
            tags: Some(tags.iter().map(|t| t.to_string()).collect()),
            timeout: None,
            lock_id: None,
            unlock: false,
            create: false,
            max_bytes: 1 << 20,
        };
        s.apply(&op, 5).reply
    };
    let (mut source, _) = source_with_object();
    assert!(matches!(
        tag(&mut source, &["user:1"]),
        Reply::Updated { .. }
    ));
    let exported = export(&mut source, 9);
    let mut dest = Store::new(StoreConfig::default());
    assert!(matches!(
        import(&mut dest, &exported, 9),
        Reply::Added { .. }
    ));
    let tagged = |s: &Store, t: &str| s.tagged("sessions", t, 30, None, usize::MAX).0;
    assert_eq!(tagged(&dest, "user:1"), vec![b"s1".to_vec()]);
    // Tagged anew at the destination, then the same import arrives again (a retry): it
    // answers as before and leaves the new tags alone.
    assert!(matches!(tag(&mut dest, &["user:2"]), Reply::Updated { .. }));
    assert!(matches!(
        import(&mut dest, &exported, 9),
        Reply::Added { .. }
    ));
    assert!(tagged(&dest, "user:1").is_empty());
    assert_eq!(tagged(&dest, "user:2"), vec![b"s1".to_vec()]);
}
