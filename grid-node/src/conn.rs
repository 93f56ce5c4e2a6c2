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
use grid_proto::batch::Batch;
use grid_proto::frame::encode_frame;
use grid_proto::limits::validate_namespace;
use grid_proto::msg::encode_sized;
use grid_proto::peer_auth::PeerKey;
use grid_proto::{decode, Frame, FrameCodec, FrameError, Op, Reply, Request, PROTOCOL_VERSION};
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::events::Subscription;
use crate::limits::{PEER_MAX_FRAME, PRE_AUTH_MAX_FRAME};
use crate::log_limit::RateLimit;
use crate::metrics::inc;
use crate::node::Node;
use crate::reply_queue::{self, ReplyQueue};

mod auth;
mod transport;

use auth::{Auth, Gate, Outcome};
use transport::{establish, Refusal, Stream};

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
    /// Connections that have not authenticated yet, node-wide (see
    /// [`crate::limits::ConnLimits::max_unauthenticated`]).
    pub unauthenticated: Arc<AtomicUsize>,
    /// Failed authentications are logged once per source address per period.
    pub auth_failures: Arc<RateLimit<std::net::IpAddr>>,
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
    // One deadline for everything before authentication: first byte, TLS, hello.
    let hello_deadline = Instant::now() + node.config().limits.hello_timeout;
    let established = tokio::time::timeout_at(hello_deadline, establish(tcp, ctx.tls.as_ref()))
        .await
        .unwrap_or(Err(Refusal::Silent));
    match established {
        Ok(stream) => run(stream, from, &ctx, hello_deadline).await,
        Err(refusal) => {
            if matches!(refusal, Refusal::Silent) {
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

/// Counts a connection among the unauthenticated until it proves something or closes.
struct Unproven<'a>(Option<&'a AtomicUsize>);

impl Unproven<'_> {
    fn proven(&mut self) {
        if let Some(count) = self.0.take() {
            count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Unproven<'_> {
    fn drop(&mut self) {
        self.proven();
    }
}

async fn run(
    stream: Box<dyn Stream>,
    from: SocketAddr,
    ctx: &ConnContext,
    hello_deadline: Instant,
) {
    let node = &ctx.node;
    let limits = node.config().limits.clone();
    let mut unproven = Unproven(Some(&ctx.unauthenticated));
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
    // Frames received and replies sent both count as activity for the idle timeout.
    let mut last_activity = Instant::now();

    loop {
        let awaiting_proof = session.auth.awaits_proof();
        let idle = !awaiting_proof && pending.is_empty() && session.subscriptions.is_empty();
        let deadline = if awaiting_proof {
            hello_deadline
        } else {
            last_activity + limits.idle_timeout
        };
        let step = tokio::select! {
            // Frames before the timer: a request that just arrived is never dropped for
            // idleness.
            biased;
            _ = ctx.shutdown.cancelled() => break,
            // The writer stopped (write timeout, broken socket): nothing more can be said.
            _ = tx.closed() => break,
            frame = frames.next(), if pending.len() < limits.max_in_flight => match frame {
                None => break,
                Some(Ok(frame)) => {
                    last_activity = Instant::now();
                    let was_proving = session.auth.awaits_proof();
                    let step = handle(ctx, &mut session, frame, from);
                    if was_proving && !session.auth.awaits_proof() {
                        unproven.proven();
                        let limit = if session.auth.is_peer() {
                            inc(&node.metrics.peer_connections_total);
                            PEER_MAX_FRAME
                        } else {
                            node.config().max_frame()
                        };
                        frames.decoder_mut().set_max_frame(limit);
                    }
                    step
                }
                Some(Err(err)) => match frame_error_reply(node, err) {
                    Some((id, reply)) => Step::Close(id, reply),
                    None => break,
                },
            },
            Some((id, reply)) = pending.next(), if !pending.is_empty() => Step::Reply(id, reply),
            _ = tokio::time::sleep_until(deadline), if awaiting_proof || idle => {
                inc(&node.metrics.connections_timed_out_total);
                let what = if awaiting_proof { "no authentication" } else { "idle" };
                tracing::debug!(%from, "closing connection: {what} within its limit");
                break;
            }
        };
        let (reply, close) = match step {
            Step::Reply(id, reply) => ((id, reply), false),
            Step::Close(id, reply) => ((id, reply), true),
            Step::Later(future) => {
                pending.push(future);
                continue;
            }
            Step::Subscribe(id, namespace) => {
                let reply = if session.subscriptions.len() >= MAX_SUBSCRIPTIONS {
                    bad_request(
                        node,
                        format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection"),
                    )
                } else {
                    let hub = node.cluster().events();
                    session
                        .subscriptions
                        .push(hub.subscribe(namespace, tx.clone()));
                    Reply::Subscribed
                };
                ((id, reply), false)
            }
            Step::Ack(id, event) => {
                let mine: Vec<u64> = session.subscriptions.iter().map(Subscription::id).collect();
                let reply = if node.cluster().events().ack(event, &mine) {
                    Reply::Acked
                } else {
                    Reply::BadRequest {
                        reason: format!(
                            "event {}:{} is not awaiting this connection's acknowledgement",
                            event.partition, event.seq
                        ),
                    }
                };
                ((id, reply), false)
            }
        };
        // Waits while the client has its budget of replies unread; shutdown still ends it.
        let sent = tokio::select! {
            sent = tx.send(reply.0, reply.1) => sent,
            _ = ctx.shutdown.cancelled() => break,
        };
        last_activity = Instant::now();
        if sent.is_err() || close {
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
                    let now = std::time::Instant::now();
                    if let Some(more) = ctx.auth_failures.allow(from.ip(), now) {
                        tracing::warn!(%from, earlier_unlogged = more, "authentication failed");
                    }
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
        // Answered by `handshake` above; never reached, and harmless if it were.
        Request::Hello { .. } | Request::PeerHello { .. } | Request::PeerProof { .. } => {
            Step::Close(id, bad_request(node, "unexpected handshake message"))
        }
        Request::Ping => Step::Reply(id, Reply::Pong),
        Request::Status => {
            Step::Reply(id, Reply::Status(Box::new(node.status(ctx.listen.clone()))))
        }
        Request::GetMap => Step::Reply(id, Reply::Map(Box::new(node.map()))),
        Request::Op(mut op) => {
            let guard = match lock_wait(node, session, &mut op) {
                Ok(guard) => guard,
                Err(reply) => return Step::Reply(id, reply),
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
                let answer = node.cluster().handle_peer(&payload).await;
                inc(&node.metrics.peer_messages_total);
                node.metrics
                    .peer_requests_total
                    .fetch_add(answer.requests as u64, Ordering::Relaxed);
                (
                    id,
                    Reply::Peer {
                        payload: answer.payload,
                    },
                )
            }))
        }
        Request::Subscribe { namespace } => match validate_namespace(&namespace) {
            Ok(()) => Step::Subscribe(id, namespace),
            Err(e) => Step::Reply(id, bad_request(node, e.to_string())),
        },
        Request::Pull {
            mut op,
            remote_stores,
        } => {
            if let Err(reply) = node.check(&op) {
                return Step::Reply(id, reply);
            }
            let guard = match lock_wait(node, session, &mut op) {
                Ok(guard) => guard,
                Err(reply) => return Step::Reply(id, reply),
            };
            let node = Arc::clone(node);
            Step::Later(Box::pin(async move {
                let reply = node.pull(op, remote_stores).await;
                drop(guard);
                (id, reply)
            }))
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
        Request::Export {
            partition,
            export,
            from,
        } => {
            let node = Arc::clone(node);
            Step::Later(Box::pin(async move {
                (id, node.export(partition, export, from).await)
            }))
        }
        Request::FindTag {
            partition,
            namespace,
            tag,
            after,
        } => {
            let node = Arc::clone(node);
            Step::Later(Box::pin(async move {
                let reply = node
                    .find_tag(partition, &namespace, &tag, after.as_deref())
                    .await;
                (id, reply)
            }))
        }
    }
}

/// Longest lock wait a request may ask for: a wait keeps a place in the connection's
/// lock waits and exempts it from the idle timeout.
const MAX_LOCK_WAIT_MS: u64 = 15 * 60 * 1000;

/// A place among the connection's lock waits for an operation that may park in a lock
/// queue (its wait capped at [`MAX_LOCK_WAIT_MS`]), or the refusal past
/// `--max-lock-waits`. Operations that never wait need no place.
fn lock_wait(node: &Node, session: &Session, op: &mut Op) -> Result<Option<LockWait>, Reply> {
    let Op::ReadAndLock { wait_ms, .. } = op else {
        return Ok(None);
    };
    if *wait_ms == 0 {
        return Ok(None);
    }
    *wait_ms = (*wait_ms).min(MAX_LOCK_WAIT_MS);
    let limit = node.config().limits.max_lock_waits;
    match LockWait::enter(&session.lock_waits, limit) {
        Some(guard) => Ok(Some(guard)),
        None => Err(bad_request(
            node,
            format!("at most {limit} lock waits per connection (--max-lock-waits)"),
        )),
    }
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

/// Writes queued replies in batches. A client that reads nothing for `write_timeout`
/// ends the connection: dropping the queue wakes the reader, which stops.
async fn write_replies(
    mut wr: WriteHalf<Box<dyn Stream>>,
    mut queue: ReplyQueue,
    write_timeout: Duration,
    node: Arc<Node>,
) {
    let mut batch = Batch::default();
    let encode_into = |buf: &mut BytesMut, id: u64, reply: &Reply| {
        encode_frame(buf, id, &encode_sized(reply, reply.carried_bytes()));
    };
    while let Some(first) = queue.recv().await {
        // Permits are held until the batch is written, so unread bytes stay bounded.
        encode_into(batch.buf(), first.id, &first.reply);
        let mut held = vec![first];
        while !batch.is_full() {
            let Some(next) = queue.try_recv() else { break };
            encode_into(batch.buf(), next.id, &next.reply);
            held.push(next);
        }
        if !batch.write_to(&mut wr, Some(write_timeout)).await {
            inc(&node.metrics.connections_timed_out_total);
            tracing::info!("closing a connection whose client stopped reading its replies");
            return;
        }
        drop(held);
    }
    let _ = tokio::time::timeout(write_timeout, wr.shutdown()).await;
}
