//! Authentication and the loopback-only rule.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::process::Command;
use std::time::Duration;

use grid_client::{ClientError, GridClient, Timeout};
use grid_proto::{ObjKey, Op, Reply, Request};
use grid_tests::process::{run_with_deadline, NodeProcess};
use grid_tests::raw::RawConn;

const BIN: &str = env!("CARGO_BIN_EXE_test-node");

fn with_token(token: Option<&str>) -> Request {
    Request::Hello {
        auth_token: token.map(str::to_string),
        client_name: "auth-test".into(),
    }
}

#[tokio::test]
async fn token_is_required_and_checked() {
    let node = NodeProcess::start(BIN, &["--auth-token", "s3cret"]).unwrap();
    let good = GridClient::connect(&node.connection_string(";authToken=s3cret"))
        .await
        .unwrap();
    good.put("ns", "k", "v", Timeout::None).await.unwrap();

    // Wrong token: Unauthorized, then the node closes the connection.
    let mut conn = RawConn::connect(node.client_addr()).await.unwrap();
    conn.send(1, &with_token(Some("guess"))).await.unwrap();
    assert_eq!(
        conn.recv_until_closed().await.unwrap(),
        vec![(1, Reply::Unauthorized)]
    );

    // No hello at all: the first operation is refused and the connection closed.
    let mut conn = RawConn::connect(node.client_addr()).await.unwrap();
    let read = Request::Op(Op::Read {
        obj: ObjKey::new("ns", b"k".to_vec()),
        cached_version: None,
    });
    conn.send(1, &read).await.unwrap();
    assert_eq!(
        conn.recv_until_closed().await.unwrap(),
        vec![(1, Reply::Unauthorized)]
    );

    // The tag requests are behind the same gate: no lookup, no revocation without it.
    let tagged = grid_client::WriteOptions {
        tags: Some(vec!["user:1".into()]),
        ..Default::default()
    };
    good.write("ns", "k", grid_proto::WriteBody::Keep, tagged)
        .await
        .unwrap();
    let asks = [
        Request::FindTag {
            partition: 0,
            namespace: "ns".into(),
            tag: "user:1".into(),
            after: None,
        },
        Request::Op(Op::RemoveTagged {
            obj: ObjKey::new("ns", b"k".to_vec()),
            tag: "user:1".into(),
        }),
    ];
    for ask in asks {
        let mut conn = RawConn::connect(node.client_addr()).await.unwrap();
        conn.send(1, &ask).await.unwrap();
        assert_eq!(
            conn.recv_until_closed().await.unwrap(),
            vec![(1, Reply::Unauthorized)],
            "{ask:?}"
        );
    }
    assert_eq!(
        good.find_by_tag("ns", "user:1").await.unwrap(),
        vec![b"k".to_vec()]
    );

    // Hello without a token.
    let mut conn = RawConn::connect(node.client_addr()).await.unwrap();
    conn.send(1, &with_token(None)).await.unwrap();
    assert_eq!(
        conn.recv_until_closed().await.unwrap(),
        vec![(1, Reply::Unauthorized)]
    );

    // The client reports it plainly.
    let err = GridClient::connect(&node.connection_string(";authToken=guess"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized), "{err:?}");
    let err = GridClient::connect(&node.connection_string(""))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized), "{err:?}");

    // The authenticated client kept working throughout.
    assert_eq!(good.get("ns", "k").await.unwrap().unwrap().value, b"v");
}

#[test]
fn non_loopback_listen_without_token_is_refused_at_start() {
    let (status, _, stderr) = run_with_deadline(
        Command::new(BIN).args(["--listen", "0.0.0.0:0"]),
        None,
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(!status.success());
    assert!(stderr.contains("--auth-token"), "{stderr}");
}

#[test]
fn bad_flags_fail_with_a_message_naming_them() {
    let (status, _, stderr) = run_with_deadline(
        Command::new(BIN).args(["--listen", "127.0.0.1:0", "--max-value-bytes", "0"]),
        None,
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(!status.success());
    assert!(stderr.contains("--max-value-bytes"), "{stderr}");
}
