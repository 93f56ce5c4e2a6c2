//! TLS to the nodes' client port (`useSecure=true`): the trusted roots (`tlsCaFile`), the
//! name to verify (`tlsServerName`, default the gateway's host), and a client certificate
//! (`tlsCertFile`, `tlsKeyFile`) for nodes that require one (`--tls-client-ca`).
//!
//! Also the PEM loading the node uses for its own certificate, so both sides read files
//! the same way and name the setting that is wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use thiserror::Error;

/// TLS settings from the connection string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `tlsCaFile`: PEM certificates trusted for the nodes. Required with `useSecure`.
    pub ca_file: Option<PathBuf>,
    /// `tlsServerName`: the name the nodes' certificates must carry; default the host
    /// each connection dials.
    pub server_name: Option<String>,
    /// `tlsCertFile`: the client's PEM certificate chain, for nodes that verify clients.
    pub cert_file: Option<PathBuf>,
    /// `tlsKeyFile`: the client's PEM private key, with `tlsCertFile`.
    pub key_file: Option<PathBuf>,
}

/// A TLS file or setting could not be used. Names the setting.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TlsError {
    /// A file is missing, unreadable or holds no usable PEM.
    #[error("{setting} {path}: {reason}")]
    File {
        /// The flag or connection-string key that named it.
        setting: &'static str,
        /// The path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The settings do not fit together.
    #[error("{0}")]
    Settings(String),
}

fn file_err(setting: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        setting,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The crypto provider every TLS configuration here uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain; an empty file is an error.
pub fn load_certs(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(setting, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(setting, path, e))?;
    if certs.is_empty() {
        return Err(file_err(setting, path, "no certificate in it"));
    }
    Ok(certs)
}

/// Reads a PEM private key.
pub fn load_key(setting: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_err(setting, path, e))
}

/// Reads PEM certificates into a root store.
pub fn load_roots(setting: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(setting, path)? {
        roots.add(cert).map_err(|e| file_err(setting, path, e))?;
    }
    Ok(roots)
}

/// A client-side TLS configuration, built once per client.
#[derive(Clone)]
pub struct ClientTls {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Builds the configuration from the connection string's settings.
    pub fn new(settings: &TlsSettings) -> Result<Self, TlsError> {
        let ca = settings.ca_file.as_deref().ok_or_else(|| {
            TlsError::Settings(
                "useSecure=true needs tlsCaFile=FILE (PEM certificates trusted for the nodes)"
                    .into(),
            )
        })?;
        let identity = match (&settings.cert_file, &settings.key_file) {
            (Some(cert), Some(key)) => Some((
                load_certs("tlsCertFile", cert)?,
                load_key("tlsKeyFile", key)?,
            )),
            (None, None) => None,
            _ => {
                return Err(TlsError::Settings(
                    "tlsCertFile and tlsKeyFile go together".into(),
                ))
            }
        };
        let server_name = settings
            .server_name
            .as_deref()
            .map(|name| {
                ServerName::try_from(name.to_string()).map_err(|e| {
                    TlsError::Settings(format!("tlsServerName '{name}' is not a valid name: {e}"))
                })
            })
            .transpose()?;
        Self::build(load_roots("tlsCaFile", ca)?, identity, server_name)
    }

    /// Builds the configuration from loaded parts: trusted roots, an optional client
    /// identity, and a fixed name to verify (default: each connection's host).
    pub fn build(
        roots: RootCertStore,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
        server_name: Option<ServerName<'static>>,
    ) -> Result<Self, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Settings(e.to_string()))?
            .with_root_certificates(roots);
        let config = match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Settings(format!("client certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// The name to verify for a connection to `host`.
    fn name_for(&self, host: &str) -> Result<ServerName<'static>, String> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_string())
            .map_err(|e| format!("'{host}' is not a name TLS can verify ({e}); set tlsServerName"))
    }

    /// Runs the TLS handshake over `stream` to `addr` (`host:port`).
    pub async fn connect(
        &self,
        addr: &str,
        stream: tokio::net::TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let name = self.name_for(host)?;
        self.connector.connect(name, stream).await.map_err(|e| {
            format!("TLS handshake failed: {e} (is the node's port TLS? it needs --tls-cert and --tls-key)")
        })
    }
}
