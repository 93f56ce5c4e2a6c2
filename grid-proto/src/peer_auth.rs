//! Proof that a connection comes from a node of the cluster: a challenge-response over
//! the cluster secret, which never crosses the wire.
//!
//! ```text
//! node ── PeerHello { node_nonce } ──────────────────────────▶ server
//! node ◀─ PeerChallenge { server_nonce, server_mac } ───────── server
//!         server_mac = HMAC(secret, "server" | node_nonce | server_nonce)
//! node ── PeerProof { node_mac } ────────────────────────────▶ server
//!         node_mac = HMAC(secret, "node" | server_nonce | node_nonce)
//! node ◀─ Welcome (peer role) | Unauthorized (closed) ──────── server
//! ```
//!
//! Both sides prove the secret, so a node never sends Raft traffic to an impostor either.
//! Fresh random nonces on both sides make a recorded exchange useless on another
//! connection, and the role label in each MAC keeps a server's answer from being
//! reflected back as a node's proof.

use ring::hmac;

/// Bytes of each side's nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of each MAC (HMAC-SHA256).
pub const MAC_BYTES: usize = 32;

const SERVER_LABEL: &[u8] = b"grid-peer-v1/server";
const NODE_LABEL: &[u8] = b"grid-peer-v1/node";

/// The cluster secret as an HMAC key. Its `Debug` never shows the secret; keys compare
/// equal when their secrets' digests do.
#[derive(Clone)]
pub struct PeerKey(hmac::Key, [u8; 32]);

impl PartialEq for PeerKey {
    fn eq(&self, other: &Self) -> bool {
        self.1 == other.1
    }
}

impl Eq for PeerKey {}

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerKey(..)")
    }
}

impl PeerKey {
    /// A key from the cluster secret's bytes.
    pub fn new(secret: &[u8]) -> Self {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, secret).as_ref());
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret), digest)
    }

    /// The MAC input: each part with its length first, so parts cannot run together.
    fn message(label: &[u8], first: &[u8], second: &[u8]) -> Vec<u8> {
        let mut msg = Vec::with_capacity(12 + label.len() + first.len() + second.len());
        for part in [label, first, second] {
            msg.extend_from_slice(&(part.len() as u32).to_le_bytes());
            msg.extend_from_slice(part);
        }
        msg
    }

    fn mac(&self, label: &[u8], first: &[u8], second: &[u8]) -> Vec<u8> {
        hmac::sign(&self.0, &Self::message(label, first, second))
            .as_ref()
            .to_vec()
    }

    fn verify(&self, label: &[u8], first: &[u8], second: &[u8], mac: &[u8]) -> bool {
        // Constant time: ring compares the tags without leaking where they differ.
        hmac::verify(&self.0, &Self::message(label, first, second), mac).is_ok()
    }

    /// The server's answer to a node's nonce.
    pub fn server_mac(&self, node_nonce: &[u8], server_nonce: &[u8]) -> Vec<u8> {
        self.mac(SERVER_LABEL, node_nonce, server_nonce)
    }

    /// Checks the server's answer (run by the node).
    pub fn verify_server(&self, node_nonce: &[u8], server_nonce: &[u8], mac: &[u8]) -> bool {
        self.verify(SERVER_LABEL, node_nonce, server_nonce, mac)
    }

    /// The node's proof for the server's nonce.
    pub fn node_mac(&self, server_nonce: &[u8], node_nonce: &[u8]) -> Vec<u8> {
        self.mac(NODE_LABEL, server_nonce, node_nonce)
    }

    /// Checks a node's proof (run by the server).
    pub fn verify_node(&self, server_nonce: &[u8], node_nonce: &[u8], mac: &[u8]) -> bool {
        self.verify(NODE_LABEL, server_nonce, node_nonce, mac)
    }
}

/// A fresh random nonce from the operating system's generator.
pub fn nonce() -> [u8; NONCE_BYTES] {
    crate::secret::random_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_holds_only_for_its_secret_nonces_and_role() {
        let key = PeerKey::new(b"a cluster secret of some length");
        let (n, s) = (nonce(), nonce());
        let server = key.server_mac(&n, &s);
        let node = key.node_mac(&s, &n);
        assert!(key.verify_server(&n, &s, &server));
        assert!(key.verify_node(&s, &n, &node));
        // Another secret.
        let other = PeerKey::new(b"another secret of the same size");
        assert!(!other.verify_node(&s, &n, &node));
        // Another connection's nonce (a replay).
        assert!(!key.verify_node(&nonce(), &n, &node));
        // The server's answer reflected as a node's proof.
        assert!(!key.verify_node(&s, &n, &key.server_mac(&s, &n)));
        // Truncated or empty proofs.
        assert!(!key.verify_node(&s, &n, &node[..MAC_BYTES - 1]));
        assert!(!key.verify_node(&s, &n, &[]));
        assert_ne!(nonce(), nonce());
    }
}
