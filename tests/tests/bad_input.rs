//! Bad input over real sockets: each gets an error reply or a closed connection, the node
//! keeps serving other clients, and data stored before is intact.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use bytes::BytesMut;
use grid_client::{GridClient, Timeout};
use grid_proto::frame::{encode_frame, encode_frame_with_version};
use grid_proto::limits::MAX_KEY_BYTES;
use grid_proto::{ObjKey, Op, Reply, Request, PROTOCOL_VERSION};
use grid_tests::process::NodeProcess;
use grid_tests::raw::{hello, RawConn, Received};

const MAX_VALUE: usize = 4096;

struct Fixture {
    node: NodeProcess,
    client: GridClient,
    keep: Vec<u8>,
}

async fn fixture() -> Fixture {
    let limit = MAX_VALUE.to_string();
    let node = NodeProcess::start(
        env!("CARGO_BIN_EXE_test-node"),
        &["--max-value-bytes", &limit],
    )
    .unwrap();
    let client = GridClient::connect(&node.connection_string(""))
        .await
        .unwrap();
    let keep = vec![0xAB; 3000];
    client
        .put("ns", "keep", keep.clone(), Timeout::None)
        .await
        .unwrap();
    Fixture { node, client, keep }
}

impl Fixture {
    /// The node still serves the old client, a new client, and the stored data.
    async fn assert_intact(&self) {
        let object = self.client.get("ns", "keep").await.unwrap().unwrap();
        assert_eq!(object.value, self.keep);
        let fresh = GridClient::connect(&self.node.connection_string(""))
            .await
            .unwrap();
        let version = fresh
            .put("ns", "after", "still serving", Timeout::None)
            .await
            .unwrap();
        assert!(version > 0);
        assert_eq!(
            fresh.get("ns", "keep").await.unwrap().unwrap().value,
            self.keep
        );
    }

    async fn raw(&self) -> RawConn {
        let mut conn = RawConn::connect(self.node.client_addr()).await.unwrap();
        assert!(matches!(
            conn.call(1, &hello()).await.unwrap(),
            Reply::Welcome { .. }
        ));
        conn
    }
}

fn put(key: &[u8], value_len: usize) -> Request {
    Request::Op(Op::Put {
        obj: ObjKey::new("ns", key.to_vec()),
        value: vec![7; value_len],
        timeout: Timeout::None,
        lock_id: None,
    })
}

#[tokio::test]
async fn garbage_bytes_close_the_connection() {
    let f = fixture().await;
    let mut conn = RawConn::connect(f.node.client_addr()).await.unwrap();
    conn.send_bytes(b"GET / HTTP/1.1\r\nHost: grid\r\n\r\n")
        .await
        .unwrap();
    let replies = conn.recv_until_closed().await.unwrap();
    assert!(replies.len() <= 1, "at most one error reply: {replies:?}");
    assert!(replies.iter().all(|(_, r)| matches!(
        r,
        Reply::TooLarge { .. } | Reply::BadRequest { .. } | Reply::UnsupportedVersion { .. }
    )));
    f.assert_intact().await;
}

#[tokio::test]
async fn truncated_frame_then_close_loses_nothing() {
    let f = fixture().await;
    let mut conn = f.raw().await;
    let mut frame = BytesMut::new();
    encode_frame(&mut frame, 2, &grid_proto::encode(&put(b"half", 100)));
    conn.send_bytes(&frame[..frame.len() / 2]).await.unwrap();
    conn.shutdown_write().await.unwrap();
    assert_eq!(conn.recv().await.unwrap(), Received::Closed);
    assert!(
        f.client.get("ns", "half").await.unwrap().is_none(),
        "a half frame must not apply"
    );
    f.assert_intact().await;
}

#[tokio::test]
async fn frame_over_the_limit_is_refused_before_it_is_read() {
    let f = fixture().await;
    let mut conn = f.raw().await;
    // Announce a 1 GiB frame and send only its header: the node must answer at once.
    let mut header = BytesMut::new();
    header.extend_from_slice(&(1u32 << 30).to_le_bytes());
    header.extend_from_slice(&[PROTOCOL_VERSION]);
    header.extend_from_slice(&3u64.to_le_bytes());
    conn.send_bytes(&header).await.unwrap();
    let replies = conn.recv_until_closed().await.unwrap();
    assert!(
        matches!(replies.as_slice(), [(0, Reply::TooLarge { size, .. })] if *size == 1 << 30),
        "{replies:?}"
    );
    f.assert_intact().await;
}

#[tokio::test]
async fn value_over_max_value_bytes_gets_too_large_and_the_connection_goes_on() {
    let f = fixture().await;
    let mut conn = f.raw().await;
    let reply = conn.call(2, &put(b"big", MAX_VALUE + 1)).await.unwrap();
    assert_eq!(
        reply,
        Reply::TooLarge {
            size: MAX_VALUE as u64 + 1,
            limit: MAX_VALUE as u64
        }
    );
    assert!(matches!(
        conn.call(3, &put(b"fits", MAX_VALUE)).await.unwrap(),
        Reply::Added { .. }
    ));
    assert_eq!(conn.call(4, &Request::Ping).await.unwrap(), Reply::Pong);
    assert!(f.client.get("ns", "big").await.unwrap().is_none());
    f.assert_intact().await;
}

#[tokio::test]
async fn empty_and_overlong_keys_are_bad_requests() {
    let f = fixture().await;
    let mut conn = f.raw().await;
    for (id, key) in [(2u64, Vec::new()), (3, vec![b'k'; MAX_KEY_BYTES + 1])] {
        match conn.call(id, &put(&key, 10)).await.unwrap() {
            Reply::BadRequest { reason } => assert!(reason.contains("key"), "{reason}"),
            other => panic!("key of {} bytes: {other:?}", key.len()),
        }
    }
    let empty_ns = Request::Op(Op::Read {
        obj: ObjKey::new("", b"k".to_vec()),
        cached_version: None,
    });
    assert!(matches!(
        conn.call(4, &empty_ns).await.unwrap(),
        Reply::BadRequest { .. }
    ));
    assert_eq!(conn.call(5, &Request::Ping).await.unwrap(), Reply::Pong);
    f.assert_intact().await;
}

#[tokio::test]
async fn exports_of_no_partition_or_an_unknown_export_are_bad_requests() {
    let f = fixture().await;
    let mut conn = f.raw().await;
    let asks = [
        (2u64, u32::MAX, 0u64, "no partition"),
        (3, 0, 77, "unknown export"),
        (4, 0, u64::MAX, "unknown export"),
    ];
    for (id, partition, export, says) in asks {
        let ask = Request::Export {
            partition,
            export,
            from: u64::MAX,
        };
        match conn.call(id, &ask).await.unwrap() {
            Reply::BadRequest { reason } => assert!(reason.contains(says), "{reason}"),
            other => panic!("export {export} of partition {partition}: {other:?}"),
        }
    }
    // An export asked past its end answers an empty page, and the node goes on.
    match conn
        .call(
            5,
            &Request::Export {
                partition: 0,
                export: 0,
                from: u64::MAX,
            },
        )
        .await
        .unwrap()
    {
        Reply::Exported { objects, .. } => assert!(objects.is_empty()),
        other => panic!("{other:?}"),
    }
    assert_eq!(conn.call(6, &Request::Ping).await.unwrap(), Reply::Pong);
    f.assert_intact().await;
}

#[tokio::test]
async fn bad_tags_and_item_changes_are_refused_and_change_nothing() {
    use grid_proto::items::{Item, ItemChanges};
    use grid_proto::WriteBody;

    let f = fixture().await;
    let mut conn = f.raw().await;
    let write = |key: &str, body: WriteBody, tags: Option<Vec<String>>| {
        Request::Op(Op::Write {
            obj: ObjKey::new("ns", key.as_bytes().to_vec()),
            body,
            tags,
            timeout: None,
            lock_id: None,
            unlock: false,
            create: true,
            max_bytes: u64::MAX,
        })
    };
    let items = |name: &str| {
        WriteBody::Items(ItemChanges {
            set: vec![Item {
                name: name.into(),
                value: b"v".to_vec(),
            }],
            ..ItemChanges::default()
        })
    };
    let asks = [
        (
            write("t", WriteBody::Keep, Some(vec!["t".into(); 9])),
            "9 tags",
        ),
        (
            write("t", WriteBody::Keep, Some(vec!["x".repeat(65)])),
            "65 bytes",
        ),
        (
            write("t", WriteBody::Keep, Some(vec![String::new()])),
            "tag is empty",
        ),
        (write("t", items(""), None), "item name is empty"),
        (
            write("t", items(&"n".repeat(1025)), None),
            "item name is 1025 bytes",
        ),
        // Item changes to an object written whole: refused by the partition, whose
        // state stays as it was on every replica.
        (write("keep", items("a"), None), "not an item map"),
        (
            Request::Op(Op::RemoveTagged {
                obj: ObjKey::new("ns", b"keep".to_vec()),
                tag: "y".repeat(100),
            }),
            "100 bytes",
        ),
        (
            Request::FindTag {
                partition: 0,
                namespace: "ns".into(),
                tag: String::new(),
                after: None,
            },
            "tag is empty",
        ),
        (
            Request::FindTag {
                partition: u32::MAX,
                namespace: "ns".into(),
                tag: "t".into(),
                after: None,
            },
            "no partition",
        ),
    ];
    for (id, (ask, says)) in (2u64..).zip(asks) {
        match conn.call(id, &ask).await.unwrap() {
            Reply::BadRequest { reason } => assert!(reason.contains(says), "{reason}"),
            other => panic!("{ask:?}: {other:?}"),
        }
    }
    assert!(f.client.get("ns", "t").await.unwrap().is_none());
    assert!(f.client.find_by_tag("ns", "t").await.unwrap().is_empty());
    // Item writes each under the limit, whose merge would not be: the second is refused.
    let big = |name: &str| {
        write(
            "merged",
            WriteBody::Items(ItemChanges {
                set: vec![Item {
                    name: name.into(),
                    value: vec![7; 3000],
                }],
                ..ItemChanges::default()
            }),
            None,
        )
    };
    assert!(matches!(
        conn.call(90, &big("a")).await.unwrap(),
        Reply::Added { .. }
    ));
    match conn.call(91, &big("b")).await.unwrap() {
        Reply::TooLarge { limit, .. } => assert_eq!(limit, MAX_VALUE as u64),
        other => panic!("{other:?}"),
    }
    assert_eq!(conn.call(99, &Request::Ping).await.unwrap(), Reply::Pong);
    f.assert_intact().await;
}

#[tokio::test]
async fn invalid_payload_in_a_valid_frame_is_a_bad_request() {
    let f = fixture().await;
    let mut conn = f.raw().await;
    let mut frame = BytesMut::new();
    encode_frame(&mut frame, 9, &[0xFF; 40]);
    conn.send_bytes(&frame).await.unwrap();
    match conn.recv().await.unwrap() {
        Received::Reply(9, Reply::BadRequest { reason }) => {
            assert!(reason.contains("invalid payload"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(conn.call(10, &Request::Ping).await.unwrap(), Reply::Pong);
    f.assert_intact().await;
}

#[tokio::test]
async fn unknown_protocol_version_is_answered_then_closed() {
    let f = fixture().await;
    let mut conn = RawConn::connect(f.node.client_addr()).await.unwrap();
    let mut frame = BytesMut::new();
    encode_frame_with_version(
        &mut frame,
        PROTOCOL_VERSION + 1,
        77,
        &grid_proto::encode(&hello()),
    );
    conn.send_bytes(&frame).await.unwrap();
    let replies = conn.recv_until_closed().await.unwrap();
    assert_eq!(
        replies,
        vec![(
            77,
            Reply::UnsupportedVersion {
                got: PROTOCOL_VERSION + 1,
                supported: PROTOCOL_VERSION
            }
        )]
    );
    f.assert_intact().await;
}

#[tokio::test]
async fn client_refuses_bad_input_before_sending() {
    let f = fixture().await;
    let err = f
        .client
        .put("ns", "", "v", Timeout::None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("key is empty"), "{err}");
    let err = f
        .client
        .put("ns", "k", vec![0; MAX_VALUE + 1], Timeout::None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("limit is 4096"), "{err}");
    f.assert_intact().await;
}
