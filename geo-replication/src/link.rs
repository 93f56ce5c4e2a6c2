//! One QUIC endpoint per node: it serves other sites' requests and sends this node's,
//! one bidirectional stream per request, connections kept per peer address.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grid_proto::secret::token_matches;
use grid_proto::sync::lock;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use thiserror::Error;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::tls::{GeoTls, TlsError};
use crate::wire::{
    decode, encode, encode_request, GeoRequest, GeoResponse, StreamHeader, GEO_VERSION,
    MAX_HEADER_BYTES, MAX_MESSAGE_BYTES,
};

/// A geo request failed.
#[derive(Debug, Error)]
pub enum GeoError {
    /// TLS or endpoint setup.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The endpoint could not bind.
    #[error("--geo-listen {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The peer address is not `host:port`.
    #[error("geo address '{0}' is not ip:port")]
    Address(String),
    /// No answer within the time allowed.
    #[error("{addr}: no answer within {after:?}")]
    Timeout {
        /// The peer.
        addr: String,
        /// The limit.
        after: Duration,
    },
    /// Connection or stream failure.
    #[error("{addr}: {reason}")]
    Link {
        /// The peer.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The peer refused the request.
    #[error("{addr} refused: {reason}")]
    Refused {
        /// The peer.
        addr: String,
        /// Its reason.
        reason: String,
    },
}

/// What a node does with another site's request.
pub trait GeoHandler: Send + Sync + 'static {
    /// Answers `request` from `from_site`.
    fn handle(
        &self,
        from_site: String,
        request: GeoRequest,
    ) -> Pin<Box<dyn Future<Output = GeoResponse> + Send + '_>>;
}

/// A node's geo endpoint.
#[derive(Debug)]
pub struct GeoLink {
    endpoint: quinn::Endpoint,
    tls: GeoTls,
    token: Option<String>,
    site: String,
    conns: Mutex<HashMap<SocketAddr, quinn::Connection>>,
}

impl GeoLink {
    /// Binds `addr` for site `site`. Without a token and verified certificates, only a
    /// loopback address is accepted.
    pub fn bind(
        addr: SocketAddr,
        tls: GeoTls,
        token: Option<String>,
        site: String,
    ) -> Result<Self, GeoError> {
        if !addr.ip().is_loopback() && (token.is_none() || !tls.verifies_peers) {
            return Err(TlsError::Settings(format!(
                "--geo-listen {addr} is not a loopback address: set --geo-token and --geo-cert/--geo-key/--geo-ca to link sites across machines"
            ))
            .into());
        }
        let server = QuicServerConfig::try_from(Arc::clone(&tls.server))
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let mut endpoint =
            quinn::Endpoint::server(quinn::ServerConfig::with_crypto(Arc::new(server)), addr)
                .map_err(|e| GeoError::Bind {
                    addr,
                    reason: e.to_string(),
                })?;
        let client = QuicClientConfig::try_from(Arc::clone(&tls.client))
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(client)));
        Ok(Self {
            endpoint,
            tls,
            token,
            site,
            conns: Mutex::new(HashMap::new()),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    /// This node's site.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// Serves other sites until `shutdown`; every connection and stream task is owned here
    /// and stopped with it.
    pub async fn serve<H: GeoHandler>(
        self: Arc<Self>,
        handler: Arc<H>,
        shutdown: CancellationToken,
    ) {
        let mut conns = JoinSet::new();
        loop {
            let incoming = tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                incoming = self.endpoint.accept() => match incoming {
                    Some(incoming) => incoming,
                    None => break,
                },
            };
            let (link, handler) = (Arc::clone(&self), Arc::clone(&handler));
            conns.spawn(async move {
                match incoming.await {
                    Ok(conn) => link.serve_conn(conn, handler).await,
                    Err(e) => tracing::debug!(error = %e, "geo handshake failed"),
                }
            });
        }
        conns.abort_all();
        self.endpoint.close(0u32.into(), b"shutting down");
    }

    async fn serve_conn<H: GeoHandler>(&self, conn: quinn::Connection, handler: Arc<H>) {
        let mut streams = JoinSet::new();
        loop {
            let (mut send, mut recv) = tokio::select! {
                Some(_) = streams.join_next(), if !streams.is_empty() => continue,
                accepted = conn.accept_bi() => match accepted {
                    Ok(pair) => pair,
                    Err(_) => break,
                },
            };
            let handler = Arc::clone(&handler);
            let token = self.token.clone();
            streams.spawn(async move {
                let response = match read_request(&mut recv, token.as_deref()).await {
                    Ok((from_site, request)) => handler.handle(from_site, request).await,
                    Err(reason) => GeoResponse::Refused { reason },
                };
                let _ = send.write_all(&encode(&response)).await;
                let _ = send.finish();
                // Let the answer reach the peer before the stream is dropped.
                let _ = send.stopped().await;
            });
        }
    }

    async fn connection(&self, addr: SocketAddr) -> Result<quinn::Connection, GeoError> {
        if let Some(conn) = lock(&self.conns)
            .get(&addr)
            .filter(|c| c.close_reason().is_none())
        {
            return Ok(conn.clone());
        }
        self.tls.check_peer(addr)?;
        let link_err = |reason: String| GeoError::Link {
            addr: addr.to_string(),
            reason,
        };
        // Certificates name the node by its address.
        let name = addr.ip().to_string();
        let conn = self
            .endpoint
            .connect(addr, &name)
            .map_err(|e| link_err(e.to_string()))?
            .await
            .map_err(|e| link_err(e.to_string()))?;
        lock(&self.conns).insert(addr, conn.clone());
        Ok(conn)
    }

    /// Sends `request` to the node at `addr` and waits up to `timeout` for its answer.
    pub async fn request(
        &self,
        addr: &str,
        request: GeoRequest,
        timeout: Duration,
    ) -> Result<GeoResponse, GeoError> {
        let sock: SocketAddr = addr
            .parse()
            .map_err(|_| GeoError::Address(addr.to_string()))?;
        let message = encode_request(
            &StreamHeader {
                version: GEO_VERSION,
                token: self.token.clone(),
                from_site: self.site.clone(),
            },
            &request,
        );
        let link_err = |reason: String| GeoError::Link {
            addr: addr.to_string(),
            reason,
        };
        let exchange = async {
            let conn = self.connection(sock).await?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| link_err(e.to_string()))?;
            send.write_all(&message)
                .await
                .map_err(|e| link_err(e.to_string()))?;
            send.finish().map_err(|e| link_err(e.to_string()))?;
            let bytes = recv
                .read_to_end(MAX_MESSAGE_BYTES)
                .await
                .map_err(|e| link_err(e.to_string()))?;
            decode::<GeoResponse>(&bytes).map_err(link_err)
        };
        let response = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result?,
            Err(_) => {
                // A peer that does not answer may be gone: connect afresh next time.
                lock(&self.conns).remove(&sock);
                return Err(GeoError::Timeout {
                    addr: addr.to_string(),
                    after: timeout,
                });
            }
        };
        match response {
            GeoResponse::Refused { reason } => Err(GeoError::Refused {
                addr: addr.to_string(),
                reason,
            }),
            other => Ok(other),
        }
    }
}

/// Reads a request stream: the header first, at most [`MAX_HEADER_BYTES`], whose version
/// and token are checked before any of the request is read.
async fn read_request(
    recv: &mut quinn::RecvStream,
    token: Option<&str>,
) -> Result<(String, GeoRequest), String> {
    let mut len = [0u8; 2];
    recv.read_exact(&mut len)
        .await
        .map_err(|e| format!("unreadable request: {e}"))?;
    let len = u16::from_le_bytes(len) as usize;
    if len > MAX_HEADER_BYTES {
        return Err(format!(
            "request header of {len} bytes is over the {MAX_HEADER_BYTES}-byte limit (another geo protocol version?)"
        ));
    }
    let mut head = vec![0u8; len];
    recv.read_exact(&mut head)
        .await
        .map_err(|e| format!("unreadable request header: {e}"))?;
    let header = decode::<StreamHeader>(&head)
        .map_err(|e| format!("undecodable request header (another geo protocol version?): {e}"))?;
    if header.version != GEO_VERSION {
        return Err(format!(
            "geo protocol version {} is not supported (this node speaks {GEO_VERSION})",
            header.version
        ));
    }
    if !token_matches(token, header.token.as_deref()) {
        tracing::warn!(site = %header.from_site, "geo request with a wrong token");
        return Err("wrong geo token".into());
    }
    let body = recv
        .read_to_end(MAX_MESSAGE_BYTES)
        .await
        .map_err(|e| format!("unreadable request: {e}"))?;
    let request = decode::<GeoRequest>(&body).map_err(|e| format!("undecodable request: {e}"))?;
    Ok((header.from_site, request))
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
