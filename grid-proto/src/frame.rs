//! Frames: `len: u32 LE | version: u8 | request_id: u64 LE | payload`.
//!
//! `len` counts the bytes after itself. The decoder checks it against the limit before it
//! reserves room for the frame, and checks the version before it hands anything on, so a
//! stray HTTP request or random bytes cost a few bytes of buffer and an error, never a
//! large allocation. The payload is copied once into an aligned buffer for rkyv validation.

use std::io;

use bytes::{Buf, BufMut, BytesMut};
use rkyv::util::AlignedVec;
use thiserror::Error;
use tokio_util::codec::Decoder;

/// The protocol version this build speaks. Bumped on any incompatible change
/// (2: events, low-memory replies, more status fields; 3: the peer handshake;
/// 4: reason codes in `Unavailable`; 5: background jobs in the status).
pub const PROTOCOL_VERSION: u8 = 6;

const LEN_BYTES: usize = 4;
/// Bytes after the length that every frame carries: version and request id.
const HEADER_BYTES: usize = 1 + 8;
/// Most buffer reserved ahead of the bytes received, while a frame arrives.
const RESERVE_STEP: usize = 64 * 1024;
/// Bytes of a frame besides its payload: length, version and request id.
pub const FRAME_HEADER_BYTES: usize = LEN_BYTES + HEADER_BYTES;

/// One decoded frame.
#[derive(Debug)]
pub struct Frame {
    /// Chosen by the client; the reply carries the same id.
    pub request_id: u64,
    /// The rkyv payload, aligned for validation.
    pub payload: AlignedVec,
}

/// Why a byte stream could not be split into frames. After any of these the stream is out
/// of step, so the connection must be closed (after an error reply where one is possible).
#[derive(Debug, Error)]
pub enum FrameError {
    /// The length prefix is over the limit.
    #[error("frame of {len} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The length prefix is too small to hold a header.
    #[error("frame of {len} bytes is shorter than its {HEADER_BYTES}-byte header")]
    TooShort {
        /// Announced length.
        len: usize,
    },
    /// The frame carries a protocol version this build does not speak.
    #[error("protocol version {got} is not supported (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// Version received.
        got: u8,
        /// Request id of the offending frame, to address the error reply.
        request_id: u64,
    },
    /// Reading the socket failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// Splits a byte stream into [`Frame`]s, enforcing a size limit.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame: usize,
}

impl FrameCodec {
    /// A codec that refuses frames longer than `max_frame` bytes (after the length prefix).
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }

    /// The largest frame accepted.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Changes the limit for the frames still to come (a peer node, once authenticated,
    /// may send Raft batches larger than one value).
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(len_bytes) = src.first_chunk::<LEN_BYTES>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*len_bytes) as usize;
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                limit: self.max_frame,
            });
        }
        if len < HEADER_BYTES {
            return Err(FrameError::TooShort { len });
        }
        if src.len() >= LEN_BYTES + HEADER_BYTES {
            let version = src[LEN_BYTES];
            if version != PROTOCOL_VERSION {
                let mut id = [0u8; 8];
                id.copy_from_slice(&src[LEN_BYTES + 1..LEN_BYTES + HEADER_BYTES]);
                return Err(FrameError::UnsupportedVersion {
                    got: version,
                    request_id: u64::from_le_bytes(id),
                });
            }
        }
        if src.len() < LEN_BYTES + len {
            // Bounded by the limit checked above, and reserved a step at a time: a header
            // alone announcing a large frame costs no more than the step.
            src.reserve((LEN_BYTES + len - src.len()).min(RESERVE_STEP));
            return Ok(None);
        }
        src.advance(LEN_BYTES + 1);
        let request_id = src.get_u64_le();
        let body = src.split_to(len - HEADER_BYTES);
        let mut payload = AlignedVec::with_capacity(body.len());
        payload.extend_from_slice(&body);
        Ok(Some(Frame {
            request_id,
            payload,
        }))
    }
}

/// Appends one frame carrying `payload` to `dst`.
///
/// # Panics
/// If the payload does not fit a `u32` length; callers bound payloads far below that.
pub fn encode_frame(dst: &mut BytesMut, request_id: u64, payload: &[u8]) {
    encode_frame_with_version(dst, PROTOCOL_VERSION, request_id, payload);
}

/// Like [`encode_frame`] with an explicit version byte; tests use it to speak a future
/// version.
pub fn encode_frame_with_version(dst: &mut BytesMut, version: u8, request_id: u64, payload: &[u8]) {
    let len = u32::try_from(HEADER_BYTES + payload.len()).expect("frame length fits u32");
    dst.reserve(LEN_BYTES + len as usize);
    dst.put_u32_le(len);
    dst.put_u8(version);
    dst.put_u64_le(request_id);
    dst.put_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(id: u64, payload: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        encode_frame(&mut b, id, payload);
        b
    }

    #[test]
    fn decodes_pipelined_frames_split_anywhere() {
        let mut all = framed(1, b"first");
        all.extend_from_slice(&framed(2, b""));
        all.extend_from_slice(&framed(3, &[7u8; 300]));
        for cut in 0..all.len() {
            let mut codec = FrameCodec::new(1024);
            let mut buf = BytesMut::from(&all[..cut]);
            let mut got = Vec::new();
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                got.push(f);
            }
            buf.extend_from_slice(&all[cut..]);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                got.push(f);
            }
            let ids: Vec<u64> = got.iter().map(|f| f.request_id).collect();
            assert_eq!(ids, vec![1, 2, 3], "cut at {cut}");
            assert_eq!(&got[0].payload[..], b"first");
            assert_eq!(got[2].payload.len(), 300);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn oversized_frame_is_refused_before_it_arrives() {
        let mut codec = FrameCodec::new(100);
        // Only the length prefix of a 4 GiB frame: refused without reserving anything.
        let mut buf = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        let cap_before = buf.capacity();
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge { limit: 100, .. })
        ));
        assert_eq!(buf.capacity(), cap_before);
    }

    #[test]
    fn unknown_version_is_reported_with_its_request_id() {
        let mut buf = BytesMut::new();
        encode_frame_with_version(&mut buf, 9, 42, b"x");
        let err = FrameCodec::new(100).decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            FrameError::UnsupportedVersion {
                got: 9,
                request_id: 42
            }
        ));
    }

    #[test]
    fn too_short_length_is_refused() {
        let mut buf = BytesMut::from(&3u32.to_le_bytes()[..]);
        assert!(matches!(
            FrameCodec::new(100).decode(&mut buf),
            Err(FrameError::TooShort { len: 3 })
        ));
    }

    proptest! {
        /// Fuzz stand-in that runs in CI: arbitrary bytes never panic the decoder, never make
        /// it hold more than the limit, and every frame it yields respects the limit.
        #[test]
        fn arbitrary_bytes_never_panic_or_overallocate(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)
        ) {
            let limit = 256;
            let mut codec = FrameCodec::new(limit);
            let mut buf = BytesMut::new();
            'feed: for chunk in chunks {
                buf.extend_from_slice(&chunk);
                loop {
                    match codec.decode(&mut buf) {
                        Ok(Some(frame)) => {
                            prop_assert!(frame.payload.len() <= limit);
                            // Payloads are validated, never trusted.
                            let _ = crate::msg::decode::<crate::Request>(&frame.payload);
                        }
                        Ok(None) => break,
                        Err(_) => break 'feed,
                    }
                }
                prop_assert!(buf.capacity() <= 4 * (limit + 64) + 1024);
            }
        }

        #[test]
        fn any_payload_round_trips(id in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut buf = framed(id, &payload);
            let frame = FrameCodec::new(1024).decode(&mut buf).unwrap().unwrap();
            prop_assert_eq!(frame.request_id, id);
            prop_assert_eq!(&frame.payload[..], &payload[..]);
        }
    }
}
