use grid_proto::{GeoOp, ObjKey, Op, Timeout};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct OnLog {
    #[serde(with = "super::op")]
    op: Op,
    #[serde(with = "super::geo_op")]
    geo: GeoOp,
}

fn obj() -> ObjKey {
    ObjKey::new("sessions", b"k\x00\xff")
}

fn every_op() -> Vec<Op> {
    let obj = obj();
    vec![
        Op::Create {
            obj: obj.clone(),
            value: b"v".to_vec(),
            timeout: Timeout::Sliding { ms: 5 },
            uninitialized: true,
        },
        Op::Put {
            obj: obj.clone(),
            value: b"abc".to_vec(),
            timeout: Timeout::None,
            lock_id: Some(4),
        },
        Op::Update {
            obj: obj.clone(),
            value: b"w".to_vec(),
            timeout: Some(Timeout::Absolute { ms: 9 }),
            expected_version: Some(3),
            lock_id: None,
            unlock: true,
        },
        Op::Read {
            obj: obj.clone(),
            cached_version: Some(8),
        },
        Op::ReadAndLock {
            obj: obj.clone(),
            cached_version: None,
            lease_ms: Some(90_000),
            wait_ms: 1_000,
            take_over_after_ms: Some(110_000),
        },
        Op::Unlock {
            obj: obj.clone(),
            lock_id: 12,
        },
        Op::RefreshLock {
            obj: obj.clone(),
            lock_id: 13,
        },
        Op::Remove {
            obj: obj.clone(),
            lock_id: None,
        },
        Op::ResetTimeout {
            obj: obj.clone(),
            timeout: Some(Timeout::Sliding { ms: 60_000 }),
        },
        Op::Write {
            obj: obj.clone(),
            body: grid_proto::WriteBody::Items(grid_proto::items::ItemChanges {
                clear: true,
                remove: vec!["old".into()],
                set: vec![grid_proto::items::Item {
                    name: "n".into(),
                    value: b"v".to_vec(),
                }],
            }),
            tags: Some(vec!["user:1".into()]),
            timeout: None,
            lock_id: Some(4),
            unlock: true,
            create: false,
            max_bytes: 4096,
        },
        Op::Write {
            obj: obj.clone(),
            body: grid_proto::WriteBody::Whole(b"w".to_vec()),
            tags: None,
            timeout: Some(Timeout::None),
            lock_id: None,
            unlock: false,
            create: true,
            max_bytes: 1,
        },
        Op::Write {
            obj: obj.clone(),
            body: grid_proto::WriteBody::Keep,
            tags: Some(Vec::new()),
            timeout: None,
            lock_id: None,
            unlock: false,
            create: false,
            max_bytes: 0,
        },
        Op::RemoveTagged {
            obj,
            tag: "user:1".into(),
        },
    ]
}

fn every_geo_op() -> Vec<GeoOp> {
    let obj = obj();
    vec![
        GeoOp::Export {
            obj: obj.clone(),
            transfer: 1,
            to_site: "west".into(),
        },
        GeoOp::Import {
            obj: obj.clone(),
            value: b"v".to_vec(),
            version: 7,
            timeout: Timeout::Absolute { ms: 3 },
            uninitialized: false,
            transfer: 2,
            tags: Vec::new(),
        },
        GeoOp::Import {
            obj: obj.clone(),
            value: b"t".to_vec(),
            version: 8,
            timeout: Timeout::None,
            uninitialized: true,
            transfer: 6,
            tags: vec!["user:1".into(), "web".into()],
        },
        GeoOp::Commit {
            obj: obj.clone(),
            transfer: 3,
        },
        GeoOp::Abort {
            obj: obj.clone(),
            transfer: 4,
        },
        GeoOp::Resolve { obj, transfer: 5 },
    ]
}

#[test]
fn every_operation_reads_back_as_written() {
    for op in every_op() {
        for geo in every_geo_op() {
            let written = OnLog {
                op: op.clone(),
                geo,
            };
            let bytes = postcard::to_allocvec(&written).expect("encodes");
            let read: OnLog = postcard::from_bytes(&bytes).expect("decodes");
            assert_eq!(read, written);
        }
    }
}

#[test]
fn every_operation_has_pinned_log_bytes() {
    // The log's encoding of each operation, fixed: a change fails here until the log
    // format's version is bumped (`crate::format::PEER`) and the bytes replaced. (Adding
    // operations, as log entry format 2 did, leaves the bytes of the older ones as they
    // were: they are the start of these.)
    #[derive(Serialize)]
    struct All<'a>(
        #[serde(with = "ops")] &'a [Op],
        #[serde(with = "geo_ops")] &'a [GeoOp],
    );
    mod ops {
        use serde::ser::{SerializeSeq, Serializer};
        pub fn serialize<S: Serializer>(ops: &&[grid_proto::Op], s: S) -> Result<S::Ok, S::Error> {
            #[derive(serde::Serialize)]
            struct One<'a>(#[serde(with = "crate::partition::log_format::op")] &'a grid_proto::Op);
            let mut seq = s.serialize_seq(Some(ops.len()))?;
            for op in ops.iter() {
                seq.serialize_element(&One(op))?;
            }
            seq.end()
        }
    }
    mod geo_ops {
        use serde::ser::{SerializeSeq, Serializer};
        pub fn serialize<S: Serializer>(
            ops: &&[grid_proto::GeoOp],
            s: S,
        ) -> Result<S::Ok, S::Error> {
            #[derive(serde::Serialize)]
            struct One<'a>(
                #[serde(with = "crate::partition::log_format::geo_op")] &'a grid_proto::GeoOp,
            );
            let mut seq = s.serialize_seq(Some(ops.len()))?;
            for op in ops.iter() {
                seq.serialize_element(&One(op))?;
            }
            seq.end()
        }
    }
    let (ops, geo) = (every_op(), every_geo_op());
    let bytes = postcard::to_allocvec(&All(&ops, &geo)).expect("encodes");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "0d000873657373696f6e73036b00ff0176010501010873657373696f6e73036b00ff03616263\
         000104020873657373696f6e73036b00ff017701020901030001030873657373696f6e73036b\
         00ff0108040873657373696f6e73036b00ff000190bf05e80701b0db06050873657373696f6e\
         73036b00ff0c060873657373696f6e73036b00ff0d070873657373696f6e73036b00ff000808\
         73657373696f6e73036b00ff0101e0d403090873657373696f6e73036b00ff020101036f6c64\
         01016e0176010106757365723a3100010401008020090873657373696f6e73036b00ff010177\
         00010000000101090873657373696f6e73036b00ff00010000000000000a0873657373696f6e\
         73036b00ff06757365723a3106000873657373696f6e73036b00ff0104776573740108736573\
         73696f6e73036b00ff01760702030002050873657373696f6e73036b00ff0174080001060206\
         757365723a3103776562020873657373696f6e73036b00ff03030873657373696f6e73036b00\
         ff04040873657373696f6e73036b00ff05",
        "the log encoding of an operation changed"
    );
}
