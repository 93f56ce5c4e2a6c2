//! Writing frames in batches: everything queued for a connection goes out in one write,
//! up to [`BATCH_BYTES`], so many small replies or requests cost one system call. Node
//! and client writers share this; each keeps its own queue.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Largest batch a writer gathers before writing.
pub const BATCH_BYTES: usize = 256 * 1024;
/// Buffer capacity kept between batches; a larger one (left by a large frame) is given
/// back rather than kept for the connection's life.
const KEEP_BYTES: usize = 1024 * 1024;
/// Capacity a batch buffer starts with.
const START_BYTES: usize = 64 * 1024;

/// The bytes of one batch of frames.
#[derive(Debug)]
pub struct Batch {
    buf: BytesMut,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            buf: BytesMut::with_capacity(START_BYTES),
        }
    }
}

impl Batch {
    /// The buffer frames are encoded into.
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// True once the batch should be written rather than grow.
    pub fn is_full(&self) -> bool {
        self.buf.len() >= BATCH_BYTES
    }

    /// Bytes gathered.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing is gathered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Writes the batch, then empties it. With `stall`, a write that makes no progress
    /// for that long fails (a peer that stopped reading); a slow reader that keeps
    /// reading is not cut off. False when the write failed or stalled.
    pub async fn write_to<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        stall: Option<Duration>,
    ) -> bool {
        let mut rest = &self.buf[..];
        while !rest.is_empty() {
            let wrote = match stall {
                Some(limit) => match tokio::time::timeout(limit, wr.write(rest)).await {
                    Ok(wrote) => wrote,
                    Err(_) => return false,
                },
                None => wr.write(rest).await,
            };
            match wrote {
                Ok(0) | Err(_) => return false,
                Ok(n) => rest = &rest[n..],
            }
        }
        if self.buf.capacity() > KEEP_BYTES {
            self.buf = BytesMut::with_capacity(START_BYTES);
        } else {
            self.buf.clear();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_is_written_whole_then_emptied_and_large_buffers_given_back() {
        let (mut wr, mut rd) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut got)
                .await
                .map(|_| got)
        });
        let mut batch = Batch::default();
        batch.buf().extend_from_slice(&vec![7u8; 2 * KEEP_BYTES]);
        assert!(batch.is_full());
        assert!(batch.write_to(&mut wr, None).await);
        assert!(batch.is_empty());
        assert!(batch.buf().capacity() <= KEEP_BYTES);
        batch.buf().extend_from_slice(b"tail");
        assert!(batch.write_to(&mut wr, Some(Duration::from_secs(30))).await);
        drop(wr);
        let got = reader.await.expect("reader runs").expect("reads");
        assert_eq!(got.len(), 2 * KEEP_BYTES + 4);
        assert_eq!(&got[got.len() - 4..], b"tail");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_fails_the_write_after_the_stall_limit() {
        let (mut wr, _rd) = tokio::io::duplex(16);
        let mut batch = Batch::default();
        batch.buf().extend_from_slice(&[1u8; 64]);
        assert!(!batch.write_to(&mut wr, Some(Duration::from_secs(5))).await);
    }
}
