//! TLS 1.3 for site links.
//!
//! - **Production**: the node's certificate and key from PEM files (`--geo-cert`,
//!   `--geo-key`), and the certificates it trusts for other sites (`--geo-ca`). Peers are
//!   verified against their address (a DNS name or IP in the certificate).
//! - **Development** (no files): a self-signed certificate made at start. Without
//!   `--geo-ca`, a node accepts any certificate, but only from loopback addresses; the
//!   node refuses to listen or connect beyond loopback without trust configured.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use thiserror::Error;

/// ALPN name of the geo protocol.
pub const ALPN: &[u8] = b"grid-geo/1";

/// PEM files of a node's TLS identity and trust.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (`--geo-cert`).
    pub cert: Option<PathBuf>,
    /// Private key (`--geo-key`).
    pub key: Option<PathBuf>,
    /// Certificates trusted for other sites (`--geo-ca`).
    pub ca: Option<PathBuf>,
}

/// TLS could not be set up.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file is missing or not PEM.
    #[error("{flag} {path}: {reason}")]
    File {
        /// The flag that named it.
        flag: &'static str,
        /// The path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The settings do not fit together.
    #[error("{0}")]
    Settings(String),
    /// rustls or quinn refused the configuration.
    #[error("TLS setup: {0}")]
    Setup(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server and client TLS configurations of a node.
#[derive(Debug, Clone)]
pub struct GeoTls {
    /// For accepting other sites.
    pub server: Arc<rustls::ServerConfig>,
    /// For connecting to other sites.
    pub client: Arc<rustls::ClientConfig>,
    /// True when other sites' certificates are verified (a CA is configured).
    pub verifies_peers: bool,
    /// True when the identity was made at start (development).
    pub self_signed: bool,
}

fn read_file<'a>(
    flag: &'static str,
    path: &'a std::path::Path,
) -> impl Fn(String) -> TlsError + 'a {
    move |reason| TlsError::File {
        flag,
        path: path.display().to_string(),
        reason,
    }
}

impl GeoTls {
    /// Builds the configurations from `files`.
    pub fn new(files: &TlsFiles) -> Result<Self, TlsError> {
        let (chain, key, self_signed) = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| read_file("--geo-cert", cert)(e.to_string()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| read_file("--geo-cert", cert)(e.to_string()))?;
                if chain.is_empty() {
                    return Err(read_file("--geo-cert", cert)("no certificate in it".into()));
                }
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| read_file("--geo-key", key)(e.to_string()))?;
                (chain, key, false)
            }
            (None, None) => {
                let made = rcgen::generate_simple_self_signed(vec![
                    "localhost".to_string(),
                    "127.0.0.1".to_string(),
                    "::1".to_string(),
                ])
                .map_err(|e| TlsError::Setup(e.to_string()))?;
                let key =
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
                (vec![made.cert.der().clone()], key, true)
            }
            _ => {
                return Err(TlsError::Settings(
                    "--geo-cert and --geo-key go together".into(),
                ))
            }
        };
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let (mut client, verifies_peers) = match &files.ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca)
                    .map_err(|e| read_file("--geo-ca", ca)(e.to_string()))?
                {
                    let cert = cert.map_err(|e| read_file("--geo-ca", ca)(e.to_string()))?;
                    roots
                        .add(cert)
                        .map_err(|e| read_file("--geo-ca", ca)(e.to_string()))?;
                }
                (
                    builder.with_root_certificates(roots).with_no_client_auth(),
                    true,
                )
            }
            None => (
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(LoopbackOnly(provider())))
                    .with_no_client_auth(),
                false,
            ),
        };
        client.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
            verifies_peers,
            self_signed,
        })
    }

    /// Refuses a peer address this configuration may not reach: without a CA, only
    /// loopback (the certificate is not verified).
    pub fn check_peer(&self, addr: SocketAddr) -> Result<(), TlsError> {
        if self.verifies_peers || addr.ip().is_loopback() {
            return Ok(());
        }
        Err(TlsError::Settings(format!(
            "{addr} is not a loopback address: set --geo-ca (and --geo-cert/--geo-key) to link sites across machines"
        )))
    }
}

/// Accepts any certificate. Used only without a CA, and [`GeoTls::check_peer`] keeps it
/// to loopback peers (a development setup on one machine).
#[derive(Debug)]
struct LoopbackOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for LoopbackOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match server_name {
            ServerName::IpAddress(ip) if IpAddr::from(*ip).is_loopback() => {
                Ok(ServerCertVerified::assertion())
            }
            _ => Err(rustls::Error::General(
                "unverified geo links are for loopback only".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
