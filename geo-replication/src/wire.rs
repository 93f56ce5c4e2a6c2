//! What crosses between sites: postcard-encoded, versioned envelopes. A node of another
//! version is refused with a message naming both versions, never misread.

use grid_proto::{GeoOp, Reply};
use serde::{Deserialize, Serialize};

/// The geo protocol version this build speaks.
pub const GEO_VERSION: u8 = 1;
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
    /// The partition leader's reply to a step.
    Reply(Reply),
    /// Refused: wrong token, other version, undecodable.
    Refused {
        /// Why.
        reason: String,
    },
}

/// The envelope of every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Protocol version of the sender.
    pub version: u8,
    /// The shared geo token, if the sites use one.
    pub token: Option<String>,
    /// The sending site.
    pub from_site: String,
    /// The request.
    pub request: GeoRequest,
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
    fn envelopes_round_trip_and_garbage_is_an_error() {
        let env = Envelope {
            version: GEO_VERSION,
            token: Some("t".into()),
            from_site: "west".into(),
            request: GeoRequest::Step(GeoOp::Resolve {
                obj: ObjKey::new("s", "k"),
                transfer: 9,
            }),
        };
        assert_eq!(decode::<Envelope>(&encode(&env)).unwrap(), env);
        assert!(decode::<Envelope>(&[0xff; 7]).is_err());
    }
}
