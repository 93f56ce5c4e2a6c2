//! The trust boundaries and connection bounds, attacked the way an attacker would: each
//! test asserts the refusal and that the node still serves, with its data intact.
#![allow(clippy::unwrap_used)] // reason: integration tests; a panic is a failed test

use std::time::Duration;

use bytes::BytesMut;
use grid_client::{GridClient, LockOptions, LockResult, Timeout};
use grid_node::cluster::peer::{
    decode_responses, encode_request, encode_requests, PeerRequest, PeerResponse, RaftRpc,
    MAX_BATCH_ITEMS,
};
use grid_proto::frame::encode_frame;
use grid_proto::peer_auth::{nonce, PeerKey};
use grid_proto::{encode, ObjKey, Op, Reply, Request};
use grid_tests::http::request_with;
use grid_tests::process::NodeProcess;
use grid_tests::raw::{RawConn, Received};
use grid_tests::{wait_until, DEADLINE};

const BIN: &str = env!("CARGO_BIN_EXE_test-node");
const TOKEN: &str = "client-token-1234";
const SECRET: &str = "cluster-secret-5678";
const ADMIN: &str = "admin-token-9012";

fn hello(token: Option<&str>, name: &str) -> Request {
    Request::Hello {
        auth_token: token.map(str::to_string),
        client_name: name.to_string(),
    }
}

/// A node with every credential set, plus `extra` flags.
fn secured(extra: &[&str]) -> NodeProcess {
    let mut args = vec![
        "--auth-token",
        TOKEN,
        "--cluster-secret",
        SECRET,
        "--admin",
        "127.0.0.1:0",
        "--admin-token",
        ADMIN,
    ];
    args.extend_from_slice(extra);
    NodeProcess::start(BIN, &args).unwrap()
}

async fn client(node: &NodeProcess) -> GridClient {
    GridClient::connect(&node.connection_string(&format!(";authToken={TOKEN}")))
        .await
        .unwrap()
}

/// The value of a counter in the node's `/metrics`.
async fn metric(node: &NodeProcess, name: &str) -> u64 {
    let auth = format!("Bearer {ADMIN}");
    let resp = request_with(
        node.admin_addr().unwrap(),
        "GET",
        "/metrics",
        &[("Authorization", &auth)],
    )
    .await
    .unwrap();
    resp.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in metrics:\n{}", resp.body))
}

/// The data written at the start is still there and the node takes new writes.
async fn serves_intact(client: &GridClient) {
    assert_eq!(
        client.get("ns", "kept").await.unwrap().unwrap().value,
        b"v1"
    );
    client
        .put("ns", "after", "v2", Timeout::None)
        .await
        .unwrap();
    assert_eq!(
        client.get("ns", "after").await.unwrap().unwrap().value,
        b"v2"
    );
}

/// A vote request for partition 0 in a term far above any the node has seen.
fn higher_term_vote() -> PeerRequest {
    PeerRequest::Raft {
        group: 0,
        to: 1,
        rpc: RaftRpc::Vote(openraft::raft::VoteRequest::new(
            openraft::Vote::new(1_000, 7),
            None,
        )),
    }
}

fn peer_message(request: &PeerRequest) -> Request {
    Request::Peer {
        payload: encode_request(0, request),
    }
}

#[tokio::test]
async fn the_peer_role_comes_only_from_the_cluster_secret() {
    let node = secured(&[]);
    let good = client(&node).await;
    good.put("ns", "kept", "v1", Timeout::None).await.unwrap();
    let epoch = good.partition_map().unwrap().epoch;
    let join = PeerRequest::Join {
        addr: node.client_addr().to_string(),
    };
    let vote = higher_term_vote();

    // A hello naming itself a peer, with the client token: a client, and peer
    // messages (a Join naming the real member, a higher-term vote) are refused.
    let mut conn = RawConn::connect(node.client_addr()).await.unwrap();
    let welcome = conn
        .call(1, &hello(Some(TOKEN), "grid-peer/0.1.0"))
        .await
        .unwrap();
    assert!(matches!(welcome, Reply::Welcome { .. }), "{welcome:?}");
    for (id, forged) in [(2, &join), (3, &vote)] {
        match conn.call(id, &peer_message(forged)).await.unwrap() {
            Reply::BadRequest { reason } => assert!(reason.contains("cluster secret"), "{reason}"),
            other => panic!("forged peer message answered: {other:?}"),
        }
    }

    // The same without the token: refused and closed.
    let mut conn = RawConn::connect(node.client_addr()).await.unwrap();
    conn.send(1, &hello(None, "grid-peer/0.1.0")).await.unwrap();
    conn.send(2, &peer_message(&join)).await.unwrap();
    assert_eq!(
        conn.recv_until_closed().await.unwrap(),
        vec![(1, Reply::Unauthorized)]
    );

    // The peer handshake with a guessed secret, or with the client token as the secret.
    for guess in ["a-guessed-secret-0000", TOKEN] {
        let mut conn = RawConn::connect(node.client_addr()).await.unwrap();
        let node_nonce = nonce();
        let challenge = Request::PeerHello {
            node_nonce: node_nonce.to_vec(),
        };
        let Reply::PeerChallenge { server_nonce, .. } = conn.call(1, &challenge).await.unwrap()
        else {
            panic!("no challenge");
        };
        let proof = Request::PeerProof {
            node_mac: PeerKey::new(guess.as_bytes()).node_mac(&server_nonce, &node_nonce),
        };
        conn.send(2, &proof).await.unwrap();
        conn.send(3, &peer_message(&join)).await.unwrap();
        assert_eq!(
            conn.recv_until_closed().await.unwrap(),
            vec![(2, Reply::Unauthorized)],
            "guess {guess}"
        );
    }

    // A peer message before any hello: refused and closed.
    let mut conn = RawConn::connect(node.client_addr()).await.unwrap();
    conn.send(1, &peer_message(&join)).await.unwrap();
    assert_eq!(
        conn.recv_until_closed().await.unwrap(),
        vec![(1, Reply::Unauthorized)]
    );

    // Nothing changed: no node added or marked down, the data is there.
    good.refresh().await.unwrap();
    let map = good.partition_map().unwrap();
    assert_eq!(map.epoch, epoch, "the map did not change");
    assert_eq!(map.nodes.len(), 1);
    assert!(map.nodes[0].active);
    assert!(metric(&node, "grid_auth_failures_total").await >= 4);
    assert_eq!(metric(&node, "grid_peer_connections_total").await, 0);
    serves_intact(&good).await;
}

/// A raw connection that proved the cluster secret: what a node of this cluster (or an
/// attacker holding the secret) has. Request ids 1 and 2 are spent.
async fn proven_peer(node: &NodeProcess) -> RawConn {
    let mut conn = RawConn::connect(node.client_addr()).await.unwrap();
    let node_nonce = nonce();
    let challenge = Request::PeerHello {
        node_nonce: node_nonce.to_vec(),
    };
    let Reply::PeerChallenge { server_nonce, .. } = conn.call(1, &challenge).await.unwrap() else {
        panic!("no challenge");
    };
    let proof = Request::PeerProof {
        node_mac: PeerKey::new(SECRET.as_bytes()).node_mac(&server_nonce, &node_nonce),
    };
    assert!(matches!(
        conn.call(2, &proof).await.unwrap(),
        Reply::Welcome { .. }
    ));
    conn
}

/// Sends a peer message's bytes and reads the answers.
async fn peer_answers(conn: &mut RawConn, id: u64, payload: Vec<u8>) -> Vec<PeerResponse> {
    let Reply::Peer { payload } = conn.call(id, &Request::Peer { payload }).await.unwrap() else {
        panic!("no peer answer");
    };
    decode_responses(&payload).unwrap()
}

/// A node holding data, a client of it, and a connection that proved the cluster secret.
async fn node_and_proven_peer() -> (NodeProcess, GridClient, RawConn) {
    let node = secured(&[]);
    let good = client(&node).await;
    good.put("ns", "kept", "v1", Timeout::None).await.unwrap();
    let conn = proven_peer(&node).await;
    (node, good, conn)
}

/// No node joined through the peer messages sent, and the node serves on.
async fn nothing_joined(good: &GridClient) {
    good.refresh().await.unwrap();
    assert_eq!(good.partition_map().unwrap().nodes.len(), 1);
    serves_intact(good).await;
}

#[tokio::test]
async fn a_peer_of_another_release_is_refused_by_its_message_format() {
    use grid_node::format::{Format, PEER};
    // A real peer (it knows the secret) whose release speaks another peer format.
    let (_node, good, mut conn) = node_and_proven_peer().await;
    let newer = Format {
        version: PEER.version + 1,
        ..PEER
    };
    let join = PeerRequest::Join {
        addr: "127.0.0.1:9".into(),
    };
    let payload = newer.encode(&(0u64, std::slice::from_ref(&join)));
    match &peer_answers(&mut conn, 3, payload).await[..] {
        [PeerResponse::Refused { reason }] => assert!(
            reason.contains(&format!(
                "peer message format {} is not supported (this node reads {})",
                PEER.version + 1,
                PEER.version
            )),
            "{reason}"
        ),
        other => panic!("a message of another format was answered: {other:?}"),
    }
    nothing_joined(&good).await;
}

#[tokio::test]
async fn a_peer_message_is_a_bounded_batch_answered_request_by_request() {
    let (_node, good, mut conn) = node_and_proven_peer().await;
    let join = PeerRequest::Join {
        addr: "127.0.0.1:9".into(),
    };

    // An empty batch, and one a request past the bound: refused whole, nothing runs.
    for (id, count) in [(3, 0), (4, MAX_BATCH_ITEMS + 1)] {
        let joins: Vec<_> = (0..count)
            .map(|_| PeerRequest::Join {
                addr: "127.0.0.1:9".into(),
            })
            .collect();
        match &peer_answers(&mut conn, id, encode_requests(0, &joins)).await[..] {
            [PeerResponse::Refused { reason }] => assert!(
                reason.contains(&format!("1 to {MAX_BATCH_ITEMS} requests, not {count}")),
                "{reason}"
            ),
            other => panic!("a batch of {count} was answered: {other:?}"),
        }
    }

    // A batch from outside the cluster (no cluster id): each request gets its own
    // answer, in order, and none runs.
    let vote = higher_term_vote();
    let batch = [vote, PeerRequest::Ping, join];
    match &peer_answers(&mut conn, 5, encode_requests(0, &batch)).await[..] {
        [PeerResponse::NoSuchGroup, PeerResponse::NoSuchGroup, PeerResponse::NoSuchGroup] => {}
        other => panic!("a batch of another cluster was answered: {other:?}"),
    }
    nothing_joined(&good).await;
}

#[tokio::test]
async fn unauthenticated_connections_are_bounded() {
    let node = secured(&["--hello-timeout", "1s"]);
    let good = client(&node).await;
    good.put("ns", "kept", "v1", Timeout::None).await.unwrap();

    // Idle connections that never say hello are closed at the hello deadline.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(RawConn::connect(node.client_addr()).await.unwrap());
    }
    // A slow-loris: part of a frame header, then nothing.
    let mut loris = RawConn::connect(node.client_addr()).await.unwrap();
    loris.send_bytes(&[40, 0, 0]).await.unwrap();
    // Half a peer handshake, never finished.
    let mut half = RawConn::connect(node.client_addr()).await.unwrap();
    let challenge = Request::PeerHello {
        node_nonce: nonce().to_vec(),
    };
    assert!(matches!(
        half.call(1, &challenge).await.unwrap(),
        Reply::PeerChallenge { .. }
    ));
    for conn in idle.iter_mut().chain([&mut loris, &mut half]) {
        assert_eq!(conn.recv().await.unwrap(), Received::Closed);
    }

    // A large frame before authenticating is refused from its header, at the small
    // pre-authentication limit, before any of it is read.
    let mut big = RawConn::connect(node.client_addr()).await.unwrap();
    big.send_bytes(&(15u32 << 20).to_le_bytes()).await.unwrap();
    assert_eq!(
        big.recv_until_closed().await.unwrap(),
        vec![(
            0,
            Reply::TooLarge {
                size: 15 << 20,
                limit: 4096
            }
        )]
    );
    // A hello that is itself too large.
    let mut conn = RawConn::connect(node.client_addr()).await.unwrap();
    let padded = hello(Some(TOKEN), &"x".repeat(8 * 1024));
    conn.send(1, &padded).await.unwrap();
    assert!(matches!(
        conn.recv_until_closed().await.unwrap().as_slice(),
        [(0, Reply::TooLarge { limit: 4096, .. })]
    ));

    // Counted as each connection's task ends, which may be just after its client saw
    // the close.
    wait_until("every timed-out connection counted", DEADLINE, || async {
        (metric(&node, "grid_connections_timed_out_total").await >= 102).then_some(())
    })
    .await
    .unwrap();
    serves_intact(&good).await;
}

#[tokio::test]
async fn connections_past_the_limit_are_refused_and_counted() {
    let node = secured(&["--max-connections", "8"]);
    let good = client(&node).await;
    good.put("ns", "kept", "v1", Timeout::None).await.unwrap();
    // The client holds some connections; fill the rest.
    let mut held = Vec::new();
    for i in 0..16 {
        let mut conn = RawConn::connect(node.client_addr()).await.unwrap();
        conn.send(1, &hello(Some(TOKEN), "filler")).await.unwrap();
        match conn.recv().await.unwrap() {
            Received::Reply(1, Reply::Welcome { .. }) => held.push(conn),
            Received::Closed => break,
            other => panic!("connection {i}: {other:?}"),
        }
    }
    assert!(held.len() < 8, "{} connections admitted past 8", held.len());
    let refused_before = {
        // The admin port has its own listener: it answers even now.
        metric(&node, "grid_connections_refused_total").await
    };
    assert!(refused_before >= 1);
    // Freed places are usable again.
    held.clear();
    wait_until("a new connection is admitted", DEADLINE, || async {
        let mut conn = RawConn::connect(node.client_addr()).await.ok()?;
        match conn.call(1, &hello(Some(TOKEN), "again")).await.ok()? {
            Reply::Welcome { .. } => Some(()),
            _ => None,
        }
    })
    .await
    .unwrap();
    serves_intact(&good).await;
}

#[tokio::test]
async fn a_client_that_never_reads_its_replies_is_cut_off_in_bounded_memory() {
    let node = secured(&["--reply-queue-bytes", "4194304", "--write-timeout", "2s"]);
    let good = client(&node).await;
    good.put("ns", "kept", "v1", Timeout::None).await.unwrap();
    good.put("ns", "big", vec![7u8; 1 << 20], Timeout::None)
        .await
        .unwrap();
    let before = node.rss_bytes().unwrap();

    // 2,000 reads of a 1 MiB object (2 GiB of replies), none of them read.
    let mut conn = RawConn::connect(node.client_addr()).await.unwrap();
    assert!(matches!(
        conn.call(1, &hello(Some(TOKEN), "never-reads"))
            .await
            .unwrap(),
        Reply::Welcome { .. }
    ));
    let read = encode(&Request::Op(Op::Read {
        obj: ObjKey::new("ns", b"big".to_vec()),
        cached_version: None,
    }));
    let mut frames = BytesMut::new();
    for id in 2..2_002 {
        encode_frame(&mut frames, id, &read);
    }
    // The node stops reading once its queue is full, so this write may stall; it is
    // bounded by the deadline and its outcome does not matter.
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.send_bytes(&frames)).await;

    wait_until("the node closed the connection", DEADLINE, || async {
        (metric(&node, "grid_connections_timed_out_total").await >= 1).then_some(())
    })
    .await
    .unwrap();
    let after = node.rss_bytes().unwrap();
    assert!(
        after < before + (200 << 20),
        "RSS went from {before} to {after} bytes"
    );
    serves_intact(&good).await;
}

#[tokio::test]
async fn lock_waits_per_connection_are_capped() {
    let node = secured(&["--max-lock-waits", "4"]);
    let good = client(&node).await;
    good.put("ns", "kept", "v1", Timeout::None).await.unwrap();
    let holder = good
        .lock("ns", "kept", LockOptions::default())
        .await
        .unwrap();
    let LockResult::Acquired { lock_id, .. } = holder else {
        panic!("{holder:?}");
    };
    let mut conn = RawConn::connect(node.client_addr()).await.unwrap();
    conn.call(1, &hello(Some(TOKEN), "waiter")).await.unwrap();
    let wait = Request::Op(Op::ReadAndLock {
        obj: ObjKey::new("ns", b"kept".to_vec()),
        cached_version: None,
        lease_ms: None,
        wait_ms: 60_000,
        take_over_after_ms: None,
    });
    for id in 2..=6 {
        conn.send(id, &wait).await.unwrap();
    }
    // Four park; the fifth is refused at once.
    match conn.recv().await.unwrap() {
        Received::Reply(6, Reply::BadRequest { reason }) => {
            assert!(reason.contains("--max-lock-waits"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // The parked waits are real: releasing hands the lock to the first.
    good.unlock("ns", "kept", lock_id).await.unwrap();
    match conn.recv().await.unwrap() {
        Received::Reply(2, Reply::Retrieved { .. }) => {}
        other => panic!("{other:?}"),
    }
    drop(conn);
    wait_until(
        "the other waits left with their connection",
        DEADLINE,
        || async {
            let s = good
                .node_status(&node.client_addr().to_string())
                .await
                .ok()?;
            (s.lock_waiters == 0).then_some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_admin_port_needs_the_admin_token() {
    let node = secured(&["--fault-injection"]);
    let admin = node.admin_addr().unwrap();
    let bearer = |t: &str| format!("Bearer {t}");
    for (path, method) in [
        ("/metrics", "GET"),
        ("/health", "GET"),
        ("/workers", "GET"),
        ("/faults/block", "POST"),
    ] {
        for headers in [
            vec![],
            vec![("Authorization", bearer(TOKEN))],
            vec![("Authorization", bearer("wrong"))],
            vec![("Authorization", ADMIN.to_string())],
        ] {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let resp = request_with(admin, method, path, &headers).await.unwrap();
            assert_eq!(resp.status, 401, "{method} {path} with {headers:?}");
        }
    }
    let auth = bearer(ADMIN);
    let resp = request_with(admin, "GET", "/metrics", &[("Authorization", &auth)])
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.body.contains("grid_connections_total"));
}

#[tokio::test]
async fn only_the_connection_an_event_went_to_may_acknowledge_it() {
    let node = secured(&["--event-ack-timeout", "60s"]);
    let good = client(&node).await;
    let mut events = good.subscribe("ns").await.unwrap();
    good.put("ns", "short", "bye", Timeout::Absolute { ms: 200 })
        .await
        .unwrap();
    let delivery = tokio::time::timeout(DEADLINE, events.next())
        .await
        .unwrap()
        .unwrap();
    // Another authenticated connection acknowledges it: refused.
    let mut other = RawConn::connect(node.client_addr()).await.unwrap();
    other.call(1, &hello(Some(TOKEN), "thief")).await.unwrap();
    let ack = Request::AckEvent {
        id: delivery.event.id,
    };
    assert!(matches!(
        other.call(2, &ack).await.unwrap(),
        Reply::BadRequest { .. }
    ));
    let pending = good
        .node_status(&node.client_addr().to_string())
        .await
        .unwrap();
    assert_eq!(pending.pending_events, 1, "still owed to its receiver");
    // Its receiver can.
    delivery.ack().await.unwrap();
    wait_until("the event left the outbox", DEADLINE, || async {
        let s = good
            .node_status(&node.client_addr().to_string())
            .await
            .ok()?;
        (s.pending_events == 0).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn max_memory_bounds_every_value_byte_the_node_holds() {
    const LIMIT: u64 = 20 << 20;
    let limit = LIMIT.to_string();
    let node = secured(&["--max-memory", &limit]);
    let good = client(&node).await;
    good.put("ns", "kept", "v1", Timeout::None).await.unwrap();
    let base = node.rss_bytes().unwrap();
    // Ten times the limit, in 1 MiB values, with a registered client so evictions also
    // leave events behind.
    let _events = good.subscribe("cache").await.unwrap();
    for i in 0..200 {
        good.put(
            "cache",
            format!("k{i}"),
            vec![i as u8; 1 << 20],
            Timeout::None,
        )
        .await
        .unwrap();
    }
    let addr = node.client_addr().to_string();
    wait_until("memory back under the limit", DEADLINE, || async {
        let s = good.node_status(&addr).await.ok()?;
        (s.memory_used <= LIMIT && s.evicted > 0).then_some(())
    })
    .await
    .unwrap();
    // RSS under twice the limit over the base (runs here settled near the base plus the
    // limit): fails if evicted values, events or log entries pile up uncounted, if a
    // snapshot keeps a copy of the values, or if freed memory stays in the process.
    let bound = base + 2 * LIMIT;
    let lowest = std::sync::atomic::AtomicU64::new(u64::MAX);
    let settled = wait_until("RSS under the bound", DEADLINE, || async {
        let rss = node.rss_bytes().ok()?;
        lowest.fetch_min(rss, std::sync::atomic::Ordering::Relaxed);
        (rss < bound).then_some(rss)
    })
    .await;
    let lowest = lowest.into_inner();
    eprintln!("max-memory {LIMIT}: RSS {base} at start, {lowest} after 10x the limit written");
    assert!(
        settled.is_ok(),
        "RSS {lowest} stayed past {bound} (base {base})"
    );
    // Eviction is least recently used within each partition, so which of the large
    // values stay is not fixed; the node takes and serves new writes.
    good.put("ns", "after", "v2", Timeout::None).await.unwrap();
    assert_eq!(good.get("ns", "after").await.unwrap().unwrap().value, b"v2");
}

#[tokio::test]
async fn a_node_never_takes_an_impostor_for_a_peer() {
    use grid_client::conn::{Connection, Dial};
    use grid_proto::FrameCodec;
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::FramedRead;
    // A server that welcomes anything, without knowing the secret.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let impostor = tokio::spawn(async move {
        use futures_util::StreamExt;
        let (stream, _) = listener.accept().await.unwrap();
        let (rd, mut wr) = stream.into_split();
        let mut frames = FramedRead::new(rd, FrameCodec::new(4096));
        let frame = frames.next().await.unwrap().unwrap();
        let welcome = Reply::Welcome {
            server_version: "0".into(),
            max_value_bytes: 1,
        };
        let mut out = BytesMut::new();
        encode_frame(&mut out, frame.request_id, &encode(&welcome));
        wr.write_all(&out).await.unwrap();
        // Keep the socket open until the dialer gives up.
        let _ = frames.next().await;
    });
    let dial = Dial {
        auth_token: None,
        client_name: "node".into(),
        connect_timeout: DEADLINE,
        tls: None,
        peer_key: Some(PeerKey::new(SECRET.as_bytes())),
    };
    let err = Connection::open(&addr, &dial)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a node"), "{err}");
    impostor.abort();
}

#[tokio::test]
async fn without_a_token_the_pre_authentication_bounds_still_hold() {
    let node = NodeProcess::start(BIN, &["--hello-timeout", "1s"]).unwrap();
    // A large frame before the hello: refused from its header.
    let mut big = RawConn::connect(node.client_addr()).await.unwrap();
    big.send_bytes(&(15u32 << 20).to_le_bytes()).await.unwrap();
    assert!(matches!(
        big.recv_until_closed().await.unwrap().as_slice(),
        [(0, Reply::TooLarge { limit: 4096, .. })]
    ));
    // No hello at all: closed at the deadline, even while it sends small requests.
    let mut silent = RawConn::connect(node.client_addr()).await.unwrap();
    assert_eq!(silent.call(1, &Request::Ping).await.unwrap(), Reply::Pong);
    assert_eq!(silent.recv().await.unwrap(), Received::Closed);
    // After a hello, values of any allowed size go through.
    let client = GridClient::connect(&node.connection_string(""))
        .await
        .unwrap();
    client
        .put("ns", "big", vec![1u8; 1 << 20], Timeout::None)
        .await
        .unwrap();
}
