use grid_proto::peer_auth::{nonce, PeerKey};
use grid_proto::{Reply, Request};

use super::{Auth, Gate, Outcome};

fn welcome() -> Reply {
    Reply::Pong
}

fn hello(token: Option<&str>, name: &str) -> Request {
    Request::Hello {
        auth_token: token.map(str::to_string),
        client_name: name.to_string(),
    }
}

/// Runs a whole peer handshake with `secret` against a node holding `key`.
fn prove(key: &PeerKey, secret: &[u8], token: Option<&str>) -> (Auth, Option<Outcome>) {
    let gate = Gate {
        token,
        peer_key: key,
    };
    let mut auth = Auth::Anonymous;
    let node_nonce = nonce();
    let challenge = auth.handshake(
        &Request::PeerHello {
            node_nonce: node_nonce.to_vec(),
        },
        &gate,
        welcome,
    );
    let Some(Outcome::Reply(Reply::PeerChallenge {
        server_nonce,
        server_mac,
    })) = challenge
    else {
        panic!("no challenge: {challenge:?}");
    };
    let mine = PeerKey::new(secret);
    let server_proven = mine.verify_server(&node_nonce, &server_nonce, &server_mac);
    assert_eq!(
        server_proven,
        mine == *key,
        "the server proves the secret too"
    );
    let proof = Request::PeerProof {
        node_mac: mine.node_mac(&server_nonce, &node_nonce),
    };
    let outcome = auth.handshake(&proof, &gate, welcome);
    (auth, outcome)
}

#[test]
fn the_peer_role_comes_only_from_the_secret() {
    let key = PeerKey::new(b"the cluster secret");
    let (auth, outcome) = prove(&key, b"the cluster secret", Some("tok"));
    assert_eq!(auth, Auth::Peer);
    assert_eq!(outcome, Some(Outcome::Reply(welcome())));
    let (auth, outcome) = prove(&key, b"a guessed secret!!", Some("tok"));
    assert_ne!(auth, Auth::Peer);
    assert_eq!(outcome, Some(Outcome::Close(Reply::Unauthorized)));
}

#[test]
fn a_peer_name_in_the_hello_grants_nothing() {
    let key = PeerKey::new(b"the cluster secret");
    let gate = Gate {
        token: Some("tok"),
        peer_key: &key,
    };
    // With the client token: a client, never a peer.
    let mut auth = Auth::Anonymous;
    let out = auth.handshake(&hello(Some("tok"), "grid-peer/0.1.0"), &gate, welcome);
    assert_eq!(out, Some(Outcome::Reply(welcome())));
    assert_eq!(auth, Auth::Client);
    assert!(!auth.is_peer());
    // Without it: refused and closed.
    let mut auth = Auth::Anonymous;
    let out = auth.handshake(&hello(None, "grid-peer/0.1.0"), &gate, welcome);
    assert_eq!(out, Some(Outcome::Close(Reply::Unauthorized)));
    assert!(!auth.acts_as_client(&gate));
    // No token on the node: anonymous clients, still no peer.
    let open = Gate {
        token: None,
        peer_key: &key,
    };
    assert!(Auth::Anonymous.acts_as_client(&open));
    assert!(!Auth::Anonymous.is_peer());
}

#[test]
fn out_of_order_or_malformed_handshakes_are_refused() {
    let key = PeerKey::new(b"the cluster secret");
    let gate = Gate {
        token: None,
        peer_key: &key,
    };
    // A proof with no challenge.
    let mut auth = Auth::Client;
    let proof = Request::PeerProof {
        node_mac: vec![0; 32],
    };
    assert!(matches!(
        auth.handshake(&proof, &gate, welcome),
        Some(Outcome::Close(Reply::BadRequest { .. }))
    ));
    let mut auth = Auth::Anonymous;
    assert_eq!(
        auth.handshake(&proof, &gate, welcome),
        Some(Outcome::Close(Reply::Unauthorized)),
        "a proof without a challenge"
    );
    // A short nonce.
    let mut auth = Auth::Anonymous;
    let short = Request::PeerHello {
        node_nonce: vec![1; 8],
    };
    assert_eq!(
        auth.handshake(&short, &gate, welcome),
        Some(Outcome::Close(Reply::Unauthorized))
    );
    // Anything but the proof after a challenge.
    let mut auth = Auth::Anonymous;
    auth.handshake(
        &Request::PeerHello {
            node_nonce: nonce().to_vec(),
        },
        &gate,
        welcome,
    );
    assert!(
        !auth.acts_as_client(&gate),
        "a half-done handshake is nothing"
    );
    assert_eq!(
        auth.handshake(&Request::Ping, &gate, welcome),
        Some(Outcome::Close(Reply::Unauthorized))
    );
    // A second hello after authenticating.
    let mut auth = Auth::Client;
    assert!(matches!(
        auth.handshake(&hello(None, "x"), &gate, welcome),
        Some(Outcome::Close(Reply::BadRequest { .. }))
    ));
}
