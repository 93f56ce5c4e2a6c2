//! TLS on the client port, from the node's PEM files: the server side for clients and
//! peers, and the client side this node uses to reach its peers' ports.

use std::sync::Arc;

use grid_client::tls::{load_certs, load_key, load_roots, provider, ClientTls, TlsError};
use rustls::server::WebPkiClientVerifier;

use crate::config::NodeTls;

/// The server side of the client port: this node's certificate, and client certificates
/// required when `--tls-client-ca` is set.
pub fn server_config(files: &NodeTls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = load_certs("--tls-cert", &files.cert)?;
    let key = load_key("--tls-key", &files.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Settings(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let roots = load_roots("--tls-client-ca", ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Settings(format!("--tls-client-ca: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Settings(format!("--tls-cert/--tls-key: {e}")))?;
    Ok(Arc::new(config))
}

/// How this node reaches its peers' TLS ports: it trusts `--tls-ca` (default: the
/// certificates of its own `--tls-cert`) and presents its own certificate, which nodes
/// requiring client certificates check like any client's.
pub fn peer_client(files: &NodeTls) -> Result<ClientTls, TlsError> {
    let roots = match &files.peer_ca {
        Some(ca) => load_roots("--tls-ca", ca)?,
        // Only a lone certificate may stand for its own trust: a chain would make its
        // issuers (perhaps a public CA) roots for the peer plane.
        None if load_certs("--tls-cert", &files.cert)?.len() == 1 => {
            load_roots("--tls-cert", &files.cert)?
        }
        None => return Err(TlsError::Settings(
            "--tls-cert holds a chain: set --tls-ca to the CA that signs the nodes' certificates"
                .into(),
        )),
    };
    let identity = (
        load_certs("--tls-cert", &files.cert)?,
        load_key("--tls-key", &files.key)?,
    );
    ClientTls::build(roots, Some(identity), None)
}
