//! One client connection: decode frames, authenticate, execute, reply.
//!
//! The reading task decodes and executes each request as it arrives; replies go through a
//! channel to the connection's writer task, which batches everything queued into one
//! write. Requests waiting for a lock are awaited here, beside the reader, so a waiting
//! request never stops the others on the same connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::stream::{FuturesUnordered, StreamExt};
use grid_proto::frame::encode_frame;
use grid_proto::limits::validate_namespace;
use grid_proto::{decode, encode, Frame, FrameCodec, FrameError, Reply, Request, PROTOCOL_VERSION};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::events::Subscription;
use crate::metrics::inc;
use crate::node::Node;

/// Hello names starting with this come from other nodes of the cluster.
const PEER_CLIENT_PREFIX: &str = "grid-peer/";

/// Replies queued for the writer before the reader stops reading (backpressure).
const REPLY_QUEUE: usize = 1024;
/// Largest batch the writer gathers before writing.
const WRITE_BATCH_BYTES: usize = 256 * 1024;
/// How long a closing connection may take to flush its last replies.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

type Pending = Pin<Box<dyn Future<Output = (u64, Reply)> + Send>>;

/// Largest frame a peer node may send (Raft batches and snapshot chunks).
const PEER_MAX_FRAME: usize = 1 << 30;

/// What to do after a frame.
enum Step {
    Reply(u64, Reply),
    /// The reply comes later; other requests go on meanwhile.
    Later(Pending),
    /// Send the reply, then close: the stream or the session cannot go on.
    Close(u64, Reply),
    /// Register this connection for a namespace's events.
    Subscribe(u64, String),
}

/// Most namespaces one connection may register for.
const MAX_SUBSCRIPTIONS: usize = 64;

/// Shared facts a connection needs.
#[derive(Debug, Clone)]
pub struct ConnContext {
    /// The node's state.
    pub node: Arc<Node>,
    /// The client address the node listens on, for status replies.
    pub listen: String,
    /// Stops every connection at shutdown.
    pub shutdown: CancellationToken,
}

/// Serves one connection until the client closes it, it breaks the protocol, or the node
/// shuts down.
pub async fn serve(stream: TcpStream, ctx: ConnContext) {
    let node = Arc::clone(&ctx.node);
    inc(&node.metrics.connections_total);
    inc(&node.metrics.connections_open);
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let mut frames = FramedRead::new(rd, FrameCodec::new(node.config().max_frame()));
    let (tx, rx) = mpsc::channel(REPLY_QUEUE);
    let writer = tokio::spawn(write_replies(wr, rx));
    let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
    // Registrations end with the connection: its unacknowledged events go to others.
    let mut subscriptions: Vec<Subscription> = Vec::new();
    let mut authenticated = if node.config().auth_token.is_none() {
        Auth::Client
    } else {
        Auth::None
    };

    loop {
        let step = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            Some((id, reply)) = pending.next(), if !pending.is_empty() => Step::Reply(id, reply),
            frame = frames.next() => match frame {
                None => break,
                Some(Ok(frame)) => {
                    let step = handle(&ctx, &mut authenticated, frame);
                    if authenticated == Auth::Peer {
                        frames.decoder_mut().set_max_frame(PEER_MAX_FRAME);
                    }
                    step
                }
                Some(Err(err)) => match frame_error_reply(&node, err) {
                    Some((id, reply)) => Step::Close(id, reply),
                    None => break,
                },
            },
        };
        match step {
            Step::Reply(id, reply) => {
                if tx.send((id, reply)).await.is_err() {
                    break;
                }
            }
            Step::Later(future) => pending.push(future),
            Step::Close(id, reply) => {
                let _ = tx.send((id, reply)).await;
                break;
            }
            Step::Subscribe(id, namespace) => {
                let reply = if subscriptions.len() >= MAX_SUBSCRIPTIONS {
                    inc(&node.metrics.bad_requests_total);
                    Reply::BadRequest {
                        reason: format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection"),
                    }
                } else {
                    let hub = node.cluster().events();
                    subscriptions.push(hub.subscribe(namespace, tx.clone()));
                    Reply::Subscribed
                };
                if tx.send((id, reply)).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(subscriptions);
    drop(tx);
    // Dropping pending requests releases their lock-queue places.
    drop(pending);
    let abort = writer.abort_handle();
    if tokio::time::timeout(FLUSH_GRACE, writer).await.is_err() {
        abort.abort();
    }
    node.metrics
        .connections_open
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// What a connection has proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// Nothing yet; only a hello is accepted.
    None,
    /// A client (or no token is required).
    Client,
    /// Another node of the cluster.
    Peer,
}

fn handle(ctx: &ConnContext, auth: &mut Auth, frame: Frame) -> Step {
    let node = &ctx.node;
    let id = frame.request_id;
    let request = match decode::<Request>(&frame.payload) {
        Ok(request) => request,
        Err(err) => {
            inc(&node.metrics.bad_requests_total);
            return Step::Reply(
                id,
                Reply::BadRequest {
                    reason: err.to_string(),
                },
            );
        }
    };
    inc(&node.metrics.requests_total);
    if let Request::Hello {
        auth_token,
        client_name,
    } = &request
    {
        if !token_matches(node.config().auth_token.as_deref(), auth_token.as_deref()) {
            inc(&node.metrics.auth_failures_total);
            tracing::warn!(client = %client_name, "authentication failed");
            return Step::Close(id, Reply::Unauthorized);
        }
        *auth = if client_name.starts_with(PEER_CLIENT_PREFIX) {
            Auth::Peer
        } else {
            Auth::Client
        };
        return Step::Reply(
            id,
            Reply::Welcome {
                server_version: env!("CARGO_PKG_VERSION").to_string(),
                max_value_bytes: node.config().max_value_bytes as u64,
            },
        );
    }
    if *auth == Auth::None {
        inc(&node.metrics.auth_failures_total);
        return Step::Close(id, Reply::Unauthorized);
    }
    match request {
        Request::Hello { .. } => unreachable!("handled above"),
        Request::Ping => Step::Reply(id, Reply::Pong),
        Request::Status => {
            Step::Reply(id, Reply::Status(Box::new(node.status(ctx.listen.clone()))))
        }
        Request::GetMap => Step::Reply(id, Reply::Map(Box::new(node.map()))),
        Request::Op(op) => {
            let node = Arc::clone(node);
            Step::Later(Box::pin(async move { (id, node.execute(op).await) }))
        }
        Request::Peer { .. } if *auth != Auth::Peer => {
            inc(&node.metrics.bad_requests_total);
            Step::Reply(
                id,
                Reply::BadRequest {
                    reason: "peer messages are only accepted from other nodes".into(),
                },
            )
        }
        Request::Peer { payload } => {
            let node = Arc::clone(node);
            Step::Later(Box::pin(async move {
                let payload = node.cluster().handle_peer(&payload).await;
                (id, Reply::Peer { payload })
            }))
        }
        Request::Subscribe { namespace } => match validate_namespace(&namespace) {
            Ok(()) => Step::Subscribe(id, namespace),
            Err(e) => {
                inc(&node.metrics.bad_requests_total);
                Step::Reply(
                    id,
                    Reply::BadRequest {
                        reason: e.to_string(),
                    },
                )
            }
        },
        Request::Pull { op, remote_stores } => {
            if let Err(err) = grid_proto::check_op(&op, node.config().max_value_bytes) {
                inc(&node.metrics.bad_requests_total);
                return Step::Reply(
                    id,
                    Reply::BadRequest {
                        reason: err.to_string(),
                    },
                );
            }
            let node = Arc::clone(node);
            Step::Later(Box::pin(
                async move { (id, node.pull(op, remote_stores).await) },
            ))
        }
        Request::Geo(_) if *auth != Auth::Peer => {
            inc(&node.metrics.bad_requests_total);
            Step::Reply(
                id,
                Reply::BadRequest {
                    reason: "migration steps are only accepted from the cluster's nodes".into(),
                },
            )
        }
        Request::Geo(op) => {
            let node = Arc::clone(node);
            Step::Later(Box::pin(async move {
                (id, node.cluster().execute_geo(op).await)
            }))
        }
        Request::AckEvent { id: event } => {
            node.cluster().events().ack(event);
            Step::Reply(id, Reply::Acked)
        }
    }
}

/// Compares tokens in time independent of where they differ.
fn token_matches(expected: Option<&str>, given: Option<&str>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let given = given.unwrap_or("");
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
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

async fn write_replies(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<(u64, Reply)>) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while let Some((id, reply)) = rx.recv().await {
        encode_frame(&mut buf, id, &encode(&reply));
        while buf.len() < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok((id, reply)) => encode_frame(&mut buf, id, &encode(&reply)),
                Err(_) => break,
            }
        }
        if wr.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
    }
    let _ = wr.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn tokens_must_match_exactly() {
        assert!(token_matches(None, None));
        assert!(token_matches(None, Some("anything")));
        assert!(token_matches(Some("s3cret"), Some("s3cret")));
        assert!(!token_matches(Some("s3cret"), Some("s3cre")));
        assert!(!token_matches(Some("s3cret"), Some("s3cret!")));
        assert!(!token_matches(Some("s3cret"), Some("S3cret")));
        assert!(!token_matches(Some("s3cret"), None));
        assert!(!token_matches(Some("a"), Some("")));
    }
}
