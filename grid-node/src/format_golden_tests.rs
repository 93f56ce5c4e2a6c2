//! Golden bytes of every format: a fixed value of each, encoded, must give the bytes
//! written here. A change to any type inside a format (a node-owned one, a wire type it
//! carries, an openraft type in a log entry) fails this test: bump that format's version
//! in `format.rs`, then replace the bytes with the ones the failure prints.

use grid_proto::items::{Item, ItemChanges};
use grid_proto::{ObjKey, Op, Timeout, WriteBody};
use openraft::{Entry, EntryPayload, LogId};

use super::{CONTROL_SNAPSHOT, DISK_RECORD, LOG_ENTRY, LOG_ENTRY_V1, PEER};
use crate::cluster::control::{ClusterState, ControlCommand};
use crate::cluster::raft_types::{GroupCommand, TypeConfig};
use crate::partition::{Command, Partition, PartitionConfig, WaiterId};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn assert_golden(what: &str, bytes: &[u8], golden: &str) {
    assert_eq!(
        hex(bytes),
        golden,
        "the {what} encoding changed: bump its format version in format.rs, then put the \
         new bytes (left) here"
    );
}

fn obj(key: &str) -> ObjKey {
    ObjKey::new("sessions", key)
}

/// A partition with an object, a lock, a parked waiter and an expiry event.
fn partition() -> Partition {
    let mut p = Partition::new(PartitionConfig::default());
    let ops = [
        Op::Put {
            obj: obj("a"),
            value: b"one".to_vec(),
            timeout: Timeout::Sliding { ms: 60_000 },
            lock_id: None,
        },
        Op::Create {
            obj: obj("gone"),
            value: b"x".to_vec(),
            timeout: Timeout::Absolute { ms: 500 },
            uninitialized: false,
        },
        Op::ReadAndLock {
            obj: obj("a"),
            cached_version: None,
            lease_ms: Some(30_000),
            wait_ms: 0,
            take_over_after_ms: None,
        },
        Op::Write {
            obj: obj("tagged"),
            body: WriteBody::Whole(b"t".to_vec()),
            tags: Some(vec!["user:1".into()]),
            timeout: None,
            lock_id: None,
            unlock: false,
            create: true,
            max_bytes: 1 << 20,
        },
    ];
    for op in ops {
        p.apply(&Command::Op { op, waiter: None }, 1_000);
    }
    let wait = Op::ReadAndLock {
        obj: obj("a"),
        cached_version: Some(1),
        lease_ms: None,
        wait_ms: 10_000,
        take_over_after_ms: None,
    };
    let waiter = Some(WaiterId { owner: 2, seq: 7 });
    p.apply(&Command::Op { op: wait, waiter }, 1_100);
    p.apply(&Command::Tick, 2_000);
    p
}

fn entry() -> Entry<TypeConfig> {
    entry_of(Op::Update {
        obj: obj("a"),
        value: b"two".to_vec(),
        timeout: None,
        expected_version: Some(3),
        lock_id: Some(9),
        unlock: true,
    })
}

fn entry_of(op: Op) -> Entry<TypeConfig> {
    let cmd = GroupCommand::Partition {
        now: 1_700_000_000_000,
        cmd: std::sync::Arc::new(Command::Op { op, waiter: None }),
    };
    Entry {
        log_id: LogId::new(openraft::CommittedLeaderId::new(4, 2), 17),
        payload: EntryPayload::Normal(cmd),
    }
}

#[test]
fn a_log_entry_of_an_item_write_and_one_written_before_it() {
    let write = entry_of(Op::Write {
        obj: obj("a"),
        body: WriteBody::Items(ItemChanges {
            clear: false,
            remove: vec!["old".into()],
            set: vec![Item {
                name: "n".into(),
                value: b"v".to_vec(),
            }],
        }),
        tags: Some(vec!["user:1".into()]),
        timeout: Some(Timeout::Sliding { ms: 1_000 }),
        lock_id: Some(9),
        unlock: true,
        create: false,
        max_bytes: 1 << 20,
    });
    let bytes = LOG_ENTRY.encode(&write);
    assert_golden("log entry (item write)",
        &bytes,
        "02040211010080d095ffbc3100090873657373696f6e730161020001036f6c6401016e0176010106757365723a310101e8070109010080804000");
    let back: Entry<TypeConfig> = LOG_ENTRY.decode(&bytes).unwrap();
    assert_eq!(format!("{back:?}"), format!("{write:?}"));
    // Entries of a data directory written before version 2 read unchanged.
    let v1 = LOG_ENTRY_V1.encode(&entry());
    let old: Entry<TypeConfig> = LOG_ENTRY_V1.decode(&v1).unwrap();
    assert_eq!(format!("{old:?}"), format!("{:?}", entry()));
}

#[test]
fn a_log_entry_in_a_peer_message() {
    assert_golden(
        "peer (log entry)",
        &PEER.encode(&entry()),
        "03040211010080d095ffbc3100020873657373696f6e7301610374776f00010301090100",
    );
}

#[test]
fn a_log_entry_and_the_records_of_a_data_directory() {
    use crate::cluster::durable::Identity;
    assert_golden(
        "log entry",
        &LOG_ENTRY.encode(&entry()),
        "02040211010080d095ffbc3100020873657373696f6e7301610374776f00010301090100",
    );
    let identity = Identity {
        node_id: 3,
        cluster_id: 0x0102_0304_0506_0708,
    };
    assert_golden(
        "identity",
        &DISK_RECORD.encode(&identity),
        "0103888e98a8c0e0808101",
    );
    let vote = openraft::Vote::<u64>::new_committed(5, 2);
    assert_golden("vote", &DISK_RECORD.encode(&vote), "01050201");
    let purged: LogId<u64> = LogId::new(openraft::CommittedLeaderId::new(4, 2), 17);
    assert_golden("purged log id", &DISK_RECORD.encode(&purged), "01040211");
}

#[test]
fn a_batch_of_peer_requests_and_its_answers() {
    use crate::cluster::peer::{encode_requests, encode_responses, PeerRequest, PeerResponse};
    assert_golden(
        "peer (batch)",
        &encode_requests(
            7,
            &[PeerRequest::Ping, PeerRequest::Hosts { group: 3, to: 2 }],
        ),
        "03070202070302",
    );
    assert_golden(
        "peer (answers)",
        &encode_responses(&[PeerResponse::Pong { id: 2 }, PeerResponse::Applied]),
        "0302080205",
    );
}

#[test]
fn a_partition_snapshot() {
    // Version 1 (before revocation events) is the same encoding: it still reads.
    let mut v1 = partition().snapshot();
    v1[0] = 1;
    let back = Partition::restore(PartitionConfig::default(), &v1).unwrap();
    assert_eq!(back.snapshot(), partition().snapshot());
    assert_golden(
        "partition snapshot",
        &partition().snapshot(),
        "02610404020873657373696f6e730161036f6e650101e0d403cc08e8070103e807b0ea0198f20100\
         01acdd03000873657373696f6e730674616767656401740400e807e8070000000000010873657373\
         696f6e73067461676765640106757365723a31010873657373696f6e730161010101010000dc5602\
         0701dc56010873657373696f6e7301610101dc560180080101000873657373696f6e7304676f6e65\
         017802d00f0100",
    );
}

#[test]
fn a_control_snapshot() {
    let mut state = ClusterState::default();
    state.apply(ControlCommand::Init {
        cluster_id: 7,
        partitions: 4,
        replicas: 3,
        addr: "10.0.0.1:7210".into(),
    });
    state.apply(ControlCommand::Join {
        addr: "10.0.0.2:7210".into(),
    });
    assert_golden(
        "control snapshot",
        &CONTROL_SNAPSHOT.encode(&state),
        "01070204030302010d31302e302e302e313a3732313000020d31302e302e302e323a373231300004\
         020201020201020102020102",
    );
}
