//! What a connection has proven, and the handshake messages that change it. Pure: fed a
//! request, it answers and moves to the next state, so every refusal is testable without
//! a socket.
//!
//! ```text
//! Anonymous ─Hello(token ok)──────────────────────────────▶ Client
//! Anonymous ─PeerHello ─▶ Challenged ─PeerProof(mac ok)───▶ Peer
//!     any wrong token, wrong proof or out-of-order message ─▶ Unauthorized, closed
//! ```
//!
//! The role comes only from what was proven: the hello's client name is for logs.

use grid_proto::peer_auth::{self, PeerKey, NONCE_BYTES};
use grid_proto::{Reply, Request};

/// A connection's proven role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Nothing proven yet. Acts as a client only when the node requires no token.
    Anonymous,
    /// A peer handshake is half done: the node must prove it knows the secret next.
    Challenged {
        /// The nonce this server sent.
        server_nonce: [u8; NONCE_BYTES],
        /// The nonce the node sent.
        node_nonce: Vec<u8>,
    },
    /// Proved the client token.
    Client,
    /// Proved the cluster secret: another node of this cluster.
    Peer,
}

/// The credentials a connection is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Gate<'a> {
    /// `--auth-token`, if the node requires one.
    pub token: Option<&'a str>,
    /// The cluster secret.
    pub peer_key: &'a PeerKey,
}

/// The answer to a handshake message.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send the reply and go on.
    Reply(Reply),
    /// Send the reply, then close the connection.
    Close(Reply),
}

impl Auth {
    /// True when the connection may send client requests.
    pub fn acts_as_client(&self, gate: &Gate<'_>) -> bool {
        match self {
            Auth::Client | Auth::Peer => true,
            Auth::Anonymous => gate.token.is_none(),
            Auth::Challenged { .. } => false,
        }
    }

    /// True once the connection proved the cluster secret.
    pub fn is_peer(&self) -> bool {
        *self == Auth::Peer
    }

    /// True until the connection has said hello or proved the secret: it must do so
    /// before its hello deadline, with small frames. Without a token the node serves an
    /// anonymous connection's requests meanwhile, but the bounds still hold.
    pub fn awaits_proof(&self) -> bool {
        matches!(self, Auth::Anonymous | Auth::Challenged { .. })
    }

    /// Handles a handshake message (`Hello`, `PeerHello`, `PeerProof`) and moves on;
    /// `welcome` is the reply that admits the connection. Any other request returns
    /// `None` unless a peer handshake is half done, which only `PeerProof` may finish.
    pub fn handshake(
        &mut self,
        request: &Request,
        gate: &Gate<'_>,
        welcome: impl FnOnce() -> Reply,
    ) -> Option<Outcome> {
        let refuse = || Some(Outcome::Close(Reply::Unauthorized));
        match (&*self, request) {
            (Auth::Anonymous, Request::Hello { auth_token, .. }) => {
                if !grid_proto::secret::token_matches(gate.token, auth_token.as_deref()) {
                    return refuse();
                }
                *self = Auth::Client;
                Some(Outcome::Reply(welcome()))
            }
            (Auth::Anonymous, Request::PeerHello { node_nonce }) => {
                if node_nonce.len() != NONCE_BYTES {
                    return refuse();
                }
                let server_nonce = peer_auth::nonce();
                let server_mac = gate.peer_key.server_mac(node_nonce, &server_nonce);
                *self = Auth::Challenged {
                    server_nonce,
                    node_nonce: node_nonce.clone(),
                };
                Some(Outcome::Reply(Reply::PeerChallenge {
                    server_nonce: server_nonce.to_vec(),
                    server_mac,
                }))
            }
            (
                Auth::Challenged {
                    server_nonce,
                    node_nonce,
                },
                Request::PeerProof { node_mac },
            ) => {
                if !gate
                    .peer_key
                    .verify_node(server_nonce, node_nonce, node_mac)
                {
                    return refuse();
                }
                *self = Auth::Peer;
                Some(Outcome::Reply(welcome()))
            }
            (Auth::Challenged { .. }, _) | (Auth::Anonymous, Request::PeerProof { .. }) => refuse(),
            // A second hello, or a proof without a challenge: the session is settled.
            (_, Request::Hello { .. } | Request::PeerHello { .. } | Request::PeerProof { .. }) => {
                Some(Outcome::Close(Reply::BadRequest {
                    reason: "this connection has already authenticated".into(),
                }))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
