//! Certificates made in the test: a CA, and certificates it signs for node addresses
//! and clients, written as PEM files into a directory the test owns.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A test CA and the directory its files go to.
pub struct TestCa {
    dir: PathBuf,
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// PEM files of one certificate and its key.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The certificate.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new CA writing into a fresh directory under the system's temporary directory
    /// (removed when the value is dropped).
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("grid-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("grid test CA {name}"));
        let cert = params.self_signed(&key)?;
        std::fs::write(dir.join("ca.pem"), cert.pem())?;
        Ok(Self { dir, cert, key })
    }

    /// The CA certificate's PEM file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for these names (IP addresses become IP names), signed by the CA.
    pub fn issue(&self, file_name: &str, names: &[&str]) -> anyhow::Result<Identity> {
        let key = KeyPair::generate()?;
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, file_name.to_string());
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        let identity = Identity {
            cert: self.dir.join(format!("{file_name}.pem")),
            key: self.dir.join(format!("{file_name}.key")),
        };
        write(&identity.cert, &cert.pem())?;
        write(&identity.key, &key.serialize_pem())?;
        Ok(identity)
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
