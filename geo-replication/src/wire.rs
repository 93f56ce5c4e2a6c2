//! What crosses between sites: postcard-encoded, versioned messages. A node of another
//! version is refused with a message naming both versions, never misread.

use grid_proto::{GeoOp, Millis, Timeout};
use serde::{Deserialize, Serialize};

/// The geo protocol version this build speaks.
/// (2: the token travels in a header read before the request; 3: steps are answered in
/// [`StepAnswer`], not in client replies; 4: an export carries the object's tags.)
pub const GEO_VERSION: u8 = 4;
/// Largest message accepted from another site (an object and its envelope).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A request from another site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GeoRequest {
    /// Reachability check; answered with the site's name.
    Ping,
    /// A migration step for the answering site's partition leader.
    Step(GeoOp),
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GeoResponse {
    /// Answer to `Ping`.
    Pong {
        /// The answering site.
        site: String,
    },
    /// The partition leader's answer to a step.
    Step(StepAnswer),
    /// Refused: wrong token, other version, undecodable.
    Refused {
        /// Why.
        reason: String,
    },
}

/// A site's answer to a migration step: what the other site acts on, in the site link's
/// own format, apart from the client protocol's replies (sites may run releases whose
/// client protocols differ).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepAnswer {
    /// `Export`: the object's data; it is migrating now.
    Exported {
        /// Its bytes.
        value: Vec<u8>,
        /// Its version.
        version: u64,
        /// Its expiry.
        timeout: Timeout,
        /// Its uninitialized mark.
        uninitialized: bool,
        /// Its tags.
        tags: Vec<String>,
    },
    /// `Export`: the object is locked at the answering site.
    Locked {
        /// The holder's lock id.
        lock_id: u64,
        /// How long it has been held.
        lock_age_ms: Millis,
    },
    /// `Export`: no such object.
    NotFound,
    /// `Export`: the object has moved on to `site`.
    Moved {
        /// Where it is primary now.
        site: String,
    },
    /// `Resolve`: whether the import of the transfer happened (if not, it never will).
    Resolved {
        /// True if it did.
        committed: bool,
    },
    /// `Import`, `Commit`, `Abort`: applied.
    Applied,
    /// Not served now (no leader, a hand-over, a refusal), with the reason.
    Unavailable {
        /// Why.
        reason: String,
    },
}

/// What every request stream starts with, ahead of the request: who sends it and the
/// token, so a receiver checks the token before it reads more than [`MAX_HEADER_BYTES`].
///
/// On the stream: `header length (u16 LE) | header | request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamHeader {
    /// Protocol version of the sender.
    pub version: u8,
    /// The shared geo token, if the sites use one.
    pub token: Option<String>,
    /// The sending site.
    pub from_site: String,
}

/// Largest header accepted: a token and a site name.
pub const MAX_HEADER_BYTES: usize = 4096;

/// A request as sent on its stream: the length-prefixed header, then the request.
pub fn encode_request(header: &StreamHeader, request: &GeoRequest) -> Vec<u8> {
    let head = encode(header);
    let body = encode(request);
    let mut out = Vec::with_capacity(2 + head.len() + body.len());
    // A header holds a token and a site name; the node's own settings keep both short.
    out.extend_from_slice(&(head.len().min(u16::MAX as usize) as u16).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&body);
    out
}

/// Encodes a message.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Plain data into a Vec: cannot fail.
    postcard::to_allocvec(msg).unwrap_or_else(|e| panic!("geo encode failed: {e}"))
}

/// Decodes a message from another site.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use grid_proto::ObjKey;

    use super::*;

    #[test]
    fn requests_round_trip_and_garbage_is_an_error() {
        let header = StreamHeader {
            version: GEO_VERSION,
            token: Some("t".into()),
            from_site: "west".into(),
        };
        let request = GeoRequest::Step(GeoOp::Resolve {
            obj: ObjKey::new("s", "k"),
            transfer: 9,
        });
        let bytes = encode_request(&header, &request);
        let len = u16::from_le_bytes([bytes[0], bytes[1]]) as usize;
        assert_eq!(decode::<StreamHeader>(&bytes[2..2 + len]).unwrap(), header);
        assert_eq!(decode::<GeoRequest>(&bytes[2 + len..]).unwrap(), request);
        assert!(decode::<StreamHeader>(&[0xff; 7]).is_err());
    }
}
