//! A raw protocol connection: writes any bytes, reads frames with a deadline.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use bytes::BytesMut;
use grid_proto::frame::encode_frame;
use grid_proto::limits::max_frame_for;
use grid_proto::{decode, encode, FrameCodec, Reply, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

use crate::DEADLINE;

/// What a read from the node produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// A reply frame.
    Reply(u64, Reply),
    /// The node closed the connection.
    Closed,
}

/// A hand-driven connection.
#[derive(Debug)]
pub struct RawConn {
    stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
}

impl RawConn {
    /// Connects without saying hello.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(DEADLINE, TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
        Ok(Self {
            stream,
            buf: BytesMut::new(),
            codec: FrameCodec::new(max_frame_for(1 << 30)),
        })
    }

    /// Writes bytes as they are.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Sends a well-formed request frame.
    pub async fn send(&mut self, id: u64, request: &Request) -> anyhow::Result<()> {
        let mut frame = BytesMut::new();
        encode_frame(&mut frame, id, &encode(request));
        self.send_bytes(&frame).await
    }

    /// Closes the writing side (the node sees end of stream).
    pub async fn shutdown_write(&mut self) -> anyhow::Result<()> {
        self.stream.shutdown().await?;
        Ok(())
    }

    /// Reads the next reply frame, or notes the close, within the deadline.
    pub async fn recv(&mut self) -> anyhow::Result<Received> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                if let Some(frame) = self.codec.decode(&mut self.buf)? {
                    return Ok(Received::Reply(
                        frame.request_id,
                        decode::<Reply>(&frame.payload)?,
                    ));
                }
                let mut chunk = [0u8; 8192];
                match self.stream.read(&mut chunk).await {
                    Ok(0) => return Ok(Received::Closed),
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    // A reset after the node closed on us counts as closed.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                        return Ok(Received::Closed)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        })
        .await
        .context("no reply or close within the deadline")?
    }

    /// Sends a request and returns its reply, checking the id.
    pub async fn call(&mut self, id: u64, request: &Request) -> anyhow::Result<Reply> {
        self.send(id, request).await?;
        match self.recv().await? {
            Received::Reply(got, reply) if got == id => Ok(reply),
            other => bail!("expected reply {id}, got {other:?}"),
        }
    }

    /// Reads until the node closes the connection, returning the replies seen before.
    pub async fn recv_until_closed(&mut self) -> anyhow::Result<Vec<(u64, Reply)>> {
        let mut replies = Vec::new();
        loop {
            match self.recv().await? {
                Received::Reply(id, reply) => replies.push((id, reply)),
                Received::Closed => return Ok(replies),
            }
        }
    }
}

/// A hello without a token.
pub fn hello() -> Request {
    Request::Hello {
        auth_token: None,
        client_name: "raw-test".into(),
    }
}
