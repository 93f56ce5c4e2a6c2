//! The byte stream under a connection: plaintext TCP or TLS, told apart by the first
//! byte, so a client at the wrong kind of port gets a clear error instead of silence.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use grid_proto::frame::encode_frame;
use grid_proto::{encode, Reply};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// Either kind of stream a connection runs over.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;

/// Why a connection ended before its first frame.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Nothing, or no finished TLS handshake, before the hello deadline.
    #[error("nothing within the hello deadline")]
    Silent,
    /// The peer closed or the socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A plaintext client at a TLS port (it was told so).
    #[error("a plaintext client at a TLS port")]
    PlaintextAtTls,
    /// A TLS client at a plaintext port.
    #[error("a TLS client at a plaintext port")]
    TlsAtPlaintext,
    /// The TLS handshake failed (no certificate, wrong CA, bad record).
    #[error("TLS handshake: {0}")]
    Handshake(String),
}

/// Waits for the client's first byte and sets up the stream: TLS when `tls` is given,
/// plaintext otherwise. The caller bounds it with the hello deadline.
///
/// One byte tells them apart: a frame's length is its 9 header bytes plus rkyv output,
/// which is padded to its alignment, so the low byte of a length is never 0x16.
pub async fn establish(
    tcp: TcpStream,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> Result<Box<dyn Stream>, Refusal> {
    let mut first = [0u8; 1];
    let peeked = tcp.peek(&mut first).await?;
    if peeked == 0 {
        return Err(Refusal::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    match (tls, first[0] == TLS_HANDSHAKE) {
        (None, false) => Ok(Box::new(tcp)),
        (None, true) => Err(Refusal::TlsAtPlaintext),
        (Some(_), false) => {
            tell_plaintext_client(tcp).await;
            Err(Refusal::PlaintextAtTls)
        }
        (Some(config), true) => {
            let acceptor = TlsAcceptor::from(Arc::clone(config));
            let stream = acceptor
                .accept(tcp)
                .await
                .map_err(|e| Refusal::Handshake(e.to_string()))?;
            Ok(Box::new(stream))
        }
    }
}

/// One plaintext error frame for a client that does not speak TLS to a TLS port.
async fn tell_plaintext_client(mut tcp: TcpStream) {
    let mut buf = BytesMut::new();
    let reply = Reply::BadRequest {
        reason: "this node's port requires TLS: connect with useSecure=true and tlsCaFile".into(),
    };
    encode_frame(&mut buf, 0, &encode(&reply));
    let write = async {
        tcp.write_all(&buf).await?;
        tcp.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}
