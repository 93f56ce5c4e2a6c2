//! One client connection: set up the stream (TLS or not), authenticate, decode frames,
//! execute, reply, all within the bounds of [`crate::limits`].
//!
//! The reading task decodes and executes each request as it arrives; replies go through a
//! byte-bounded queue ([`crate::reply_queue`]) to the connection's writer task, which
//! batches everything queued into one write and gives up on a client that stops reading.
//! Requests waiting for a lock are awaited here, beside the reader, so a waiting request
//! never stops the others on the same connection.
//!
//! ```text
//! accept ─▶ establish (TLS?) ─▶ handshake (auth) ─▶ frames ─▶ step ─▶ execute ─▶ queue ─▶ writer
//!   │ --max-connections         │ --hello-timeout,            │ --max-in-flight      │ --reply-queue-bytes
//!   ▼ refused, counted          ▼ 4 KiB frames until proven   ▼ --max-lock-waits     ▼ --write-timeout
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::stream::{FuturesUnordered, StreamExt};
use grid_proto::frame::encode_frame;
use grid_proto::limits::validate_namespace;
use grid_proto::peer_auth::PeerKey;
use grid_proto::{
    decode, encode, Frame, FrameCodec, FrameError, Op, Reply, Request, PROTOCOL_VERSION,
};
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::events::Subscription;
use crate::limits::{PEER_MAX_FRAME, PRE_AUTH_MAX_FRAME};
use crate::metrics::inc;
use crate::node::Node;
use crate::reply_queue::{self, ReplyQueue};

mod auth;
mod transport;

pub use auth::token_matches;
use auth::{Auth, Gate, Outcome};
use transport::{establish, Refusal, Stream};

/// Largest batch the writer gathers before writing.
const WRITE_BATCH_BYTES: usize = 256 * 1024;
/// How long a closing connection may take to flush its last replies.
const FLUSH_GRACE: Duration = Duration::from_secs(2);
/// Most namespaces one connection may register for.
const MAX_SUBSCRIPTIONS: usize = 64;

type Pending = Pin<Box<dyn Future<Output = (u64, Reply)> + Send>>;

/// What to do after a frame.
enum Step {
    Reply(u64, Reply),
    /// The reply comes later; other requests go on meanwhile.
    Later(Pending),
    /// Send the reply, then close: the stream or the session cannot go on.
    Close(u64, Reply),
    /// Register this connection for a namespace's events.
    Subscribe(u64, String),
    /// Acknowledge an event delivered to this connection.
    Ack(u64, grid_proto::EventId),
}

/// Shared facts a connection needs.
#[derive(Debug, Clone)]
pub struct ConnContext {
    /// The node's state.
    pub node: Arc<Node>,
    /// The client address the node listens on, for status replies.
    pub listen: String,
    /// Stops every connection at shutdown.
    pub shutdown: CancellationToken,
    /// TLS on the client port, if configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The cluster secret peers must prove.
    pub peer_key: PeerKey,
}

impl ConnContext {
    fn gate(&self) -> Gate<'_> {
        Gate {
            token: self.node.config().auth_token.as_deref(),
            peer_key: &self.peer_key,
        }
    }
}

/// Serves one connection until the client closes it, it breaks the protocol or a bound,
/// or the node shuts down.
pub async fn serve(tcp: TcpStream, from: SocketAddr, ctx: ConnContext) {
    let node = Arc::clone(&ctx.node);
    inc(&node.metrics.connections_total);
    inc(&node.metrics.connections_open);
    let _ = tcp.set_nodelay(true);
    let limits = node.config().limits.clone();
    match establish(tcp, ctx.tls.as_ref(), limits.hello_timeout).await {
        Ok(stream) => run(stream, from, &ctx).await,
        Err(refusal) => {
            if matches!(refusal, Refusal::Silent(_)) {
                inc(&node.metrics.connections_timed_out_total);
            }
            tracing::debug!(%from, reason = %refusal, "connection closed before its first frame");
            if matches!(refusal, Refusal::PlaintextAtTls | Refusal::TlsAtPlaintext) {
                tracing::info!(%from, "refused {refusal}");
            }
        }
    }
    node.metrics
        .connections_open
        .fetch_sub(1, Ordering::Relaxed);
}

/// A connection's running state.
struct Session {
    auth: Auth,
    subscriptions: Vec<Subscription>,
    /// Requests of this connection parked in lock queues now.
    lock_waits: Arc<AtomicUsize>,
}

async fn run(stream: Box<dyn Stream>, from: SocketAddr, ctx: &ConnContext) {
    let node = &ctx.node;
    let limits = node.config().limits.clone();
    let (rd, wr) = tokio::io::split(stream);
    let mut frames = FramedRead::new(rd, FrameCodec::new(PRE_AUTH_MAX_FRAME));
    let (tx, queue) = reply_queue::channel(limits.reply_queue_bytes);
    let writer = tokio::spawn(write_replies(
        wr,
        queue,
        limits.write_timeout,
        Arc::clone(node),
    ));
    let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut session = Session {
        auth: Auth::Anonymous,
        // Registrations end with the connection: its unacknowledged events go to others.
        subscriptions: Vec::new(),
        lock_waits: Arc::default(),
    };
    let gate = ctx.gate();
    if session.auth.acts_as_client(&gate) {
        frames
            .decoder_mut()
            .set_max_frame(node.config().max_frame());
    }
    let hello_deadline = Instant::now() + limits.hello_timeout;
    let mut last_frame = Instant::now();

    loop {
        let awaiting_proof = session.auth.awaits_proof(&gate);
        let idle = !awaiting_proof && pending.is_empty() && session.subscriptions.is_empty();
        let deadline = if awaiting_proof {
            hello_deadline
        } else {
            last_frame + limits.idle_timeout
        };
        let step = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(deadline), if awaiting_proof || idle => {
                inc(&node.metrics.connections_timed_out_total);
                let what = if awaiting_proof { "no authentication" } else { "idle" };
                tracing::debug!(%from, "closing connection: {what} within its limit");
                break;
            }
            Some((id, reply)) = pending.next(), if !pending.is_empty() => Step::Reply(id, reply),
            frame = frames.next(), if pending.len() < limits.max_in_flight => match frame {
                None => break,
                Some(Ok(frame)) => {
                    last_frame = Instant::now();
                    let was_peer = session.auth.is_peer();
                    let was_client = session.auth.acts_as_client(&gate);
                    let step = handle(ctx, &mut session, frame, from);
                    if session.auth.is_peer() && !was_peer {
                        inc(&node.metrics.peer_connections_total);
                        frames.decoder_mut().set_max_frame(PEER_MAX_FRAME);
                    } else if session.auth.acts_as_client(&gate) && !was_client {
                        frames.decoder_mut().set_max_frame(node.config().max_frame());
                    }
                    step
                }
                Some(Err(err)) => match frame_error_reply(node, err) {
                    Some((id, reply)) => Step::Close(id, reply),
                    None => break,
                },
            },
        };
        let sent = match step {
            Step::Reply(id, reply) => tx.send(id, reply).await,
            Step::Later(future) => {
                pending.push(future);
                Ok(())
            }
            Step::Close(id, reply) => {
                let _ = tx.send(id, reply).await;
                break;
            }
            Step::Subscribe(id, namespace) => {
                let reply = if session.subscriptions.len() >= MAX_SUBSCRIPTIONS {
                    inc(&node.metrics.bad_requests_total);
                    Reply::BadRequest {
                        reason: format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection"),
                    }
                } else {
                    let hub = node.cluster().events();
                    session
                        .subscriptions
                        .push(hub.subscribe(namespace, tx.clone()));
                    Reply::Subscribed
                };
                tx.send(id, reply).await
            }
            Step::Ack(id, event) => {
                let mine: Vec<u64> = session.subscriptions.iter().map(Subscription::id).collect();
                let reply = if node.cluster().events().ack(event, &mine) {
                    Reply::Acked
                } else {
                    inc(&node.metrics.bad_requests_total);
                    Reply::BadRequest {
                        reason: format!(
                            "event {}:{} is not awaiting this connection's acknowledgement",
                            event.partition, event.seq
                        ),
                    }
                };
                tx.send(id, reply).await
            }
        };
        if sent.is_err() {
            break;
        }
    }
    drop(session);
    drop(tx);
    // Dropping pending requests releases their lock-queue places.
    drop(pending);
    let abort = writer.abort_handle();
    if tokio::time::timeout(FLUSH_GRACE, writer).await.is_err() {
        abort.abort();
    }
}

fn bad_request(node: &Node, reason: impl Into<String>) -> Reply {
    inc(&node.metrics.bad_requests_total);
    Reply::BadRequest {
        reason: reason.into(),
    }
}

fn handle(ctx: &ConnContext, session: &mut Session, frame: Frame, from: SocketAddr) -> Step {
    let node = &ctx.node;
    let id = frame.request_id;
    let request = match decode::<Request>(&frame.payload) {
        Ok(request) => request,
        Err(err) => {
            let reply = bad_request(node, err.to_string());
            // Before authentication nothing but a well-formed handshake is accepted.
            return if session.auth.acts_as_client(&ctx.gate()) {
                Step::Reply(id, reply)
            } else {
                Step::Close(id, reply)
            };
        }
    };
    inc(&node.metrics.requests_total);
    let welcome = || Reply::Welcome {
        server_version: env!("CARGO_PKG_VERSION").to_string(),
        max_value_bytes: node.config().max_value_bytes as u64,
    };
    if let Some(outcome) = session.auth.handshake(&request, &ctx.gate(), welcome) {
        return match outcome {
            Outcome::Reply(reply) => Step::Reply(id, reply),
            Outcome::Close(reply) => {
                if reply == Reply::Unauthorized {
                    inc(&node.metrics.auth_failures_total);
                    tracing::warn!(%from, "authentication failed");
                } else {
                    inc(&node.metrics.bad_requests_total);
                }
                Step::Close(id, reply)
            }
        };
    }
    if !session.auth.acts_as_client(&ctx.gate()) {
        inc(&node.metrics.auth_failures_total);
        return Step::Close(id, Reply::Unauthorized);
    }
    let peer = session.auth.is_peer();
    match request {
        Request::Hello { .. } | Request::PeerHello { .. } | Request::PeerProof { .. } => {
            unreachable!("handshake messages are answered above")
        }
        Request::Ping => Step::Reply(id, Reply::Pong),
        Request::Status => {
            Step::Reply(id, Reply::Status(Box::new(node.status(ctx.listen.clone()))))
        }
        Request::GetMap => Step::Reply(id, Reply::Map(Box::new(node.map()))),
        Request::Op(op) => {
            let waits = parks_for_lock(&op);
            let limit = node.config().limits.max_lock_waits;
            let guard = match waits.then(|| LockWait::enter(&session.lock_waits, limit)) {
                Some(None) => {
                    return Step::Reply(
                        id,
                        bad_request(
                            node,
                            format!("at most {limit} lock waits per connection (--max-lock-waits)"),
                        ),
                    )
                }
                Some(Some(guard)) => Some(guard),
                None => None,
            };
            let node = Arc::clone(node);
            Step::Later(Box::pin(async move {
                let reply = node.execute(op).await;
                drop(guard);
                (id, reply)
            }))
        }
        Request::Peer { .. } if !peer => Step::Reply(
            id,
            bad_request(
                node,
                "peer messages are only accepted from nodes that proved the cluster secret",
            ),
        ),
        Request::Peer { payload } => {
            let node = Arc::clone(node);
            Step::Later(Box::pin(async move {
                let payload = node.cluster().handle_peer(&payload).await;
                (id, Reply::Peer { payload })
            }))
        }
        Request::Subscribe { namespace } => match validate_namespace(&namespace) {
            Ok(()) => Step::Subscribe(id, namespace),
            Err(e) => Step::Reply(id, bad_request(node, e.to_string())),
        },
        Request::Pull { op, remote_stores } => {
            if let Err(err) = grid_proto::check_op(&op, node.config().max_value_bytes) {
                return Step::Reply(id, bad_request(node, err.to_string()));
            }
            let node = Arc::clone(node);
            Step::Later(Box::pin(
                async move { (id, node.pull(op, remote_stores).await) },
            ))
        }
        Request::Geo(_) if !peer => Step::Reply(
            id,
            bad_request(
                node,
                "migration steps are only accepted from the cluster's nodes",
            ),
        ),
        Request::Geo(op) => {
            let node = Arc::clone(node);
            Step::Later(Box::pin(async move {
                (id, node.cluster().execute_geo(op).await)
            }))
        }
        Request::AckEvent { id: event } => Step::Ack(id, event),
    }
}

/// True for an operation that may park in the object's lock queue.
fn parks_for_lock(op: &Op) -> bool {
    matches!(op, Op::ReadAndLock { wait_ms, .. } if *wait_ms > 0)
}

/// One of a connection's parked lock waits; leaving frees its place.
struct LockWait(Arc<AtomicUsize>);

impl LockWait {
    /// A place if the connection has fewer than `limit` waits parked.
    fn enter(count: &Arc<AtomicUsize>, limit: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| LockWait(Arc::clone(count)))
    }
}

impl Drop for LockWait {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The reply owed for a framing error, if the client can still be told anything.
fn frame_error_reply(node: &Node, err: FrameError) -> Option<(u64, Reply)> {
    if !matches!(err, FrameError::Io(_)) {
        inc(&node.metrics.frame_errors_total);
        tracing::info!(error = %err, "closing connection after a framing error");
    }
    match err {
        FrameError::TooLarge { len, limit } => Some((
            0,
            Reply::TooLarge {
                size: len as u64,
                limit: limit as u64,
            },
        )),
        FrameError::TooShort { .. } => Some((
            0,
            Reply::BadRequest {
                reason: err.to_string(),
            },
        )),
        FrameError::UnsupportedVersion { got, request_id } => Some((
            request_id,
            Reply::UnsupportedVersion {
                got,
                supported: PROTOCOL_VERSION,
            },
        )),
        FrameError::Io(_) => None,
    }
}

/// Writes queued replies in batches. A write that makes no progress within
/// `write_timeout` (the client stopped reading) ends the connection: dropping the queue
/// wakes the reader, whose next send fails.
async fn write_replies(
    mut wr: WriteHalf<Box<dyn Stream>>,
    mut queue: ReplyQueue,
    write_timeout: Duration,
    node: Arc<Node>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while let Some(first) = queue.recv().await {
        // Permits are held until the batch is written, so unread bytes stay bounded.
        let mut batch = vec![first];
        encode_frame(&mut buf, batch[0].id, &encode(&batch[0].reply));
        while buf.len() < WRITE_BATCH_BYTES {
            match queue.try_recv() {
                Some(next) => {
                    encode_frame(&mut buf, next.id, &encode(&next.reply));
                    batch.push(next);
                }
                None => break,
            }
        }
        match tokio::time::timeout(write_timeout, wr.write_all(&buf)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                inc(&node.metrics.connections_timed_out_total);
                tracing::info!("closing a connection whose client stopped reading its replies");
                return;
            }
        }
        buf.clear();
        drop(batch);
    }
    let _ = tokio::time::timeout(write_timeout, wr.shutdown()).await;
}
