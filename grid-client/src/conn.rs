//! One pipelined connection to a node: many requests in flight, matched to replies by
//! request id. A writer task batches outgoing frames; a reader task routes replies. Both
//! stop when the connection is dropped or breaks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use grid_proto::frame::encode_frame;
use grid_proto::frame::FRAME_HEADER_BYTES;
use grid_proto::limits::max_frame_for;
use grid_proto::{decode, encode, FrameCodec, GridEvent, Reply, Request};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

use crate::error::ClientError;

/// Replies the client accepts: values up to 1 GiB.
const MAX_REPLY_VALUE: usize = 1 << 30;
const WRITE_BATCH_BYTES: usize = 256 * 1024;

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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Connection {
    /// Connects to `addr` and says hello (with the token, if any).
    pub async fn open(
        addr: &str,
        auth_token: Option<&str>,
        client_name: &str,
        connect_timeout: Duration,
    ) -> Result<Self, ClientError> {
        Self::open_with(
            addr,
            auth_token,
            client_name,
            connect_timeout,
            ConnHooks::default(),
        )
        .await
    }

    /// [`Connection::open`], with byte counting and event delivery.
    pub async fn open_with(
        addr: &str,
        auth_token: Option<&str>,
        client_name: &str,
        connect_timeout: Duration,
        hooks: ConnHooks,
    ) -> Result<Self, ClientError> {
        let connect_err = |reason: String| ClientError::Connect {
            addr: addr.to_string(),
            reason,
        };
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| connect_err(format!("no answer within {connect_timeout:?}")))?
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
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
        let hello = Request::Hello {
            auth_token: auth_token.map(str::to_string),
            client_name: client_name.to_string(),
        };
        match conn.call(&hello, connect_timeout).await {
            Ok(Reply::Welcome {
                max_value_bytes, ..
            }) => {
                conn.max_value_bytes = max_value_bytes;
                Ok(conn)
            }
            Ok(Reply::Unauthorized) => Err(ClientError::Unauthorized),
            Ok(other) => Err(connect_err(format!("unexpected hello reply {other:?}"))),
            // Nothing but the hello was sent: the caller's request surely did not run.
            Err(ClientError::ConnectionLost { reason }) => Err(connect_err(reason)),
            Err(ClientError::Timeout { after }) => {
                Err(connect_err(format!("no hello answer within {after:?}")))
            }
            Err(e) => Err(e),
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
        encode_frame(&mut frame, id, &encode(request));
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
    mut frames: FramedRead<tokio::net::tcp::OwnedReadHalf, FrameCodec>,
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
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    stats: Option<Arc<WireStats>>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while let Some(frame) = rx.recv().await {
        buf.extend_from_slice(&frame);
        while buf.len() < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(frame) => buf.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        if let Some(stats) = &stats {
            stats.sent.fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
        if wr.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
    }
    let _ = wr.shutdown().await;
}
