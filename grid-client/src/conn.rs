//! One pipelined connection to a node: many requests in flight, matched to replies by
//! request id. A writer task batches outgoing frames; a reader task routes replies. Both
//! stop when the connection is dropped or breaks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use grid_proto::batch::Batch;
use grid_proto::frame::encode_frame;
use grid_proto::frame::FRAME_HEADER_BYTES;
use grid_proto::limits::max_frame_for;
use grid_proto::msg::encode_sized;
use grid_proto::peer_auth::{self, PeerKey};
use grid_proto::sync::lock;
use grid_proto::{decode, FrameCodec, GridEvent, Reply, Request};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

use crate::error::ClientError;
use crate::tls::ClientTls;

/// Replies the client accepts: values up to 1 GiB.
const MAX_REPLY_VALUE: usize = 1 << 30;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;

/// Bytes that crossed the client's connections, frame headers included.
#[derive(Debug, Default)]
pub struct WireStats {
    /// Bytes sent to nodes.
    pub sent: AtomicU64,
    /// Bytes received from nodes.
    pub received: AtomicU64,
}

/// What a connection does beyond request and reply.
#[derive(Debug, Default, Clone)]
pub struct ConnHooks {
    /// Counts the bytes it moves.
    pub stats: Option<Arc<WireStats>>,
    /// Takes the events the node pushes (request id 0) after a `Subscribe`. Without it a
    /// push ends the connection as a protocol error.
    pub events: Option<mpsc::UnboundedSender<GridEvent>>,
}

/// A frame's bytes on the wire: the length prefix, version, request id and payload.
fn wire_len(payload: usize) -> u64 {
    (payload + FRAME_HEADER_BYTES) as u64
}

/// A connection to one node.
#[derive(Debug)]
pub struct Connection {
    addr: String,
    out: mpsc::Sender<Bytes>,
    pending: Pending,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
    close_reason: Arc<Mutex<Option<String>>>,
    tasks: [JoinHandle<()>; 2],
    /// Largest value the node accepts, from its welcome.
    pub max_value_bytes: u64,
}

impl Drop for Connection {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// How to open a connection: the credentials and limits it starts with.
#[derive(Debug, Clone)]
pub struct Dial {
    /// The nodes' `--auth-token`, sent in the hello.
    pub auth_token: Option<String>,
    /// How the client names itself, for the node's logs only (it grants nothing).
    pub client_name: String,
    /// Limit on connecting, TLS and the hello.
    pub connect_timeout: Duration,
    /// TLS to the node (`useSecure=true`).
    pub tls: Option<ClientTls>,
    /// The cluster secret, for a node's own connections to its peers: the connection
    /// proves it with a challenge-response instead of sending a hello.
    pub peer_key: Option<PeerKey>,
}

/// Either side of a connection's byte stream, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

impl Connection {
    /// Connects to `addr` and authenticates as `dial` says.
    pub async fn open(addr: &str, dial: &Dial) -> Result<Self, ClientError> {
        Self::open_with(addr, dial, ConnHooks::default()).await
    }

    /// [`Connection::open`], with byte counting and event delivery.
    pub async fn open_with(addr: &str, dial: &Dial, hooks: ConnHooks) -> Result<Self, ClientError> {
        let connect_timeout = dial.connect_timeout;
        let connect_err = |reason: String| ClientError::Connect {
            addr: addr.to_string(),
            reason,
        };
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| connect_err(format!("no answer within {connect_timeout:?}")))?
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let stream: Box<dyn Stream> = match &dial.tls {
            Some(tls) => {
                let handshake = tokio::time::timeout(connect_timeout, tls.connect(addr, stream));
                Box::new(
                    handshake
                        .await
                        .map_err(|_| {
                            connect_err(format!("no TLS handshake within {connect_timeout:?}"))
                        })?
                        .map_err(connect_err)?,
                )
            }
            None => Box::new(stream),
        };
        let (rd, wr) = tokio::io::split(stream);
        let (out, out_rx) = mpsc::channel(1024);
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let close_reason = Arc::new(Mutex::new(None));
        let reader = tokio::spawn(read_replies(
            FramedRead::new(rd, FrameCodec::new(max_frame_for(MAX_REPLY_VALUE))),
            Arc::clone(&pending),
            Arc::clone(&closed),
            Arc::clone(&close_reason),
            hooks.clone(),
        ));
        let writer = tokio::spawn(write_frames(wr, out_rx, hooks.stats));
        let mut conn = Connection {
            addr: addr.to_string(),
            out,
            pending,
            next_id: AtomicU64::new(1),
            closed,
            close_reason,
            tasks: [reader, writer],
            max_value_bytes: u64::MAX,
        };
        let welcome = match &dial.peer_key {
            Some(key) => conn.prove_peer(key, connect_timeout).await,
            None => {
                let hello = Request::Hello {
                    auth_token: dial.auth_token.clone(),
                    client_name: dial.client_name.clone(),
                };
                conn.call(&hello, connect_timeout).await
            }
        };
        match welcome {
            Ok(Reply::Welcome {
                max_value_bytes, ..
            }) => {
                conn.max_value_bytes = max_value_bytes;
                Ok(conn)
            }
            Ok(Reply::Unauthorized) => Err(ClientError::Unauthorized),
            Ok(Reply::BadRequest { reason }) => Err(connect_err(reason)),
            Ok(other) => Err(connect_err(format!("unexpected hello reply {other:?}"))),
            // Nothing but the hello was sent: the caller's request surely did not run.
            Err(ClientError::ConnectionLost { reason }) => Err(connect_err(reason)),
            Err(ClientError::Timeout { after }) => {
                Err(connect_err(format!("no hello answer within {after:?}")))
            }
            Err(e) => Err(e),
        }
    }

    /// The node side of the peer handshake ([`grid_proto::peer_auth`]): checks that the
    /// server knows the cluster secret, then proves it. Returns the server's last answer.
    async fn prove_peer(&self, key: &PeerKey, timeout: Duration) -> Result<Reply, ClientError> {
        let node_nonce = peer_auth::nonce();
        let hello = Request::PeerHello {
            node_nonce: node_nonce.to_vec(),
        };
        let (server_nonce, server_mac) = match self.call(&hello, timeout).await? {
            Reply::PeerChallenge {
                server_nonce,
                server_mac,
            } => (server_nonce, server_mac),
            // Anything else, a welcome above all, is not a node of this cluster.
            Reply::Unauthorized => return Err(ClientError::Unauthorized),
            other => {
                return Err(ClientError::Connect {
                    addr: self.addr.clone(),
                    reason: format!("not a node: it answered the peer handshake with {other:?}"),
                })
            }
        };
        if server_nonce.len() != peer_auth::NONCE_BYTES
            || !key.verify_server(&node_nonce, &server_nonce, &server_mac)
        {
            return Err(ClientError::Connect {
                addr: self.addr.clone(),
                reason:
                    "the node did not prove the cluster secret (another cluster, or not a node)"
                        .into(),
            });
        }
        let proof = Request::PeerProof {
            node_mac: key.node_mac(&server_nonce, &node_nonce),
        };
        match self.call(&proof, timeout).await? {
            welcome @ Reply::Welcome { .. } => Ok(welcome),
            Reply::Unauthorized => Err(ClientError::Unauthorized),
            other => Err(ClientError::Connect {
                addr: self.addr.clone(),
                reason: format!("unexpected answer to the peer proof: {other:?}"),
            }),
        }
    }

    /// The node's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// True once the connection has broken; it will not recover.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn lost(&self) -> ClientError {
        ClientError::ConnectionLost {
            reason: lock(&self.close_reason)
                .clone()
                .unwrap_or_else(|| format!("connection to {} closed", self.addr)),
        }
    }

    /// Sends one request and waits up to `timeout` for its reply.
    pub async fn call(&self, request: &Request, timeout: Duration) -> Result<Reply, ClientError> {
        if self.is_closed() {
            return Err(self.lost());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        // The reader marks the connection closed before it drops the pending senders, so
        // a request registered after that drop sees the mark here.
        if self.is_closed() {
            lock(&self.pending).remove(&id);
            return Err(self.lost());
        }
        let mut frame = BytesMut::new();
        encode_frame(
            &mut frame,
            id,
            &encode_sized(request, request.carried_bytes()),
        );
        if self.out.send(frame.freeze()).await.is_err() {
            lock(&self.pending).remove(&id);
            return Err(self.lost());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(self.lost()),
            Err(_) => {
                lock(&self.pending).remove(&id);
                Err(ClientError::Timeout { after: timeout })
            }
        }
    }
}

async fn read_replies(
    mut frames: FramedRead<ReadHalf<Box<dyn Stream>>, FrameCodec>,
    pending: Pending,
    closed: Arc<AtomicBool>,
    close_reason: Arc<Mutex<Option<String>>>,
    hooks: ConnHooks,
) {
    let reason = loop {
        match frames.next().await {
            None => break "the node closed the connection".to_string(),
            Some(Err(e)) => break format!("unreadable reply stream: {e}"),
            Some(Ok(frame)) => {
                if let Some(stats) = &hooks.stats {
                    stats
                        .received
                        .fetch_add(wire_len(frame.payload.len()), Ordering::Relaxed);
                }
                let reply = match decode::<Reply>(&frame.payload) {
                    Ok(reply) => reply,
                    Err(e) => break format!("undecodable reply: {e}"),
                };
                let reply = match (frame.request_id, reply, &hooks.events) {
                    (0, Reply::Event(event), Some(events)) => {
                        if events.send(*event).is_err() {
                            break "the event subscriber went away".to_string();
                        }
                        continue;
                    }
                    (_, reply, _) => reply,
                };
                match lock(&pending).remove(&frame.request_id) {
                    Some(tx) => {
                        let _ = tx.send(reply);
                    }
                    // Request id 0 is the node's word about the stream itself.
                    None if frame.request_id == 0 => {
                        break format!("the node closed the connection: {reply:?}")
                    }
                    // The caller gave up (timeout); drop the late reply.
                    None => {}
                }
            }
        }
    };
    *lock(&close_reason) = Some(reason);
    closed.store(true, Ordering::Release);
    // Dropping the senders wakes every waiting caller with "connection lost".
    lock(&pending).clear();
}

async fn write_frames(
    mut wr: WriteHalf<Box<dyn Stream>>,
    mut rx: mpsc::Receiver<Bytes>,
    stats: Option<Arc<WireStats>>,
) {
    let mut batch = Batch::default();
    while let Some(frame) = rx.recv().await {
        batch.buf().extend_from_slice(&frame);
        while !batch.is_full() {
            let Ok(frame) = rx.try_recv() else { break };
            batch.buf().extend_from_slice(&frame);
        }
        if let Some(stats) = &stats {
            stats.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        if !batch.write_to(&mut wr, None).await {
            return;
        }
    }
    let _ = wr.shutdown().await;
}
