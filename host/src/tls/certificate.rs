//! One certificate chain and key, read from PEM files and checked before
//! use: a chain that does not parse, a key that does not load, or a key
//! that does not match the leaf is refused with the reason, so a bad file
//! never replaces a good certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::CertFiles;

/// Why a certificate was refused.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The chain file holds no PEM certificate.
    #[error("{0}: no PEM certificate in it")]
    NoCertificate(PathBuf),
    /// The key file holds no PEM private key.
    #[error("{0}: no PEM private key in it")]
    NoKey(PathBuf),
    /// The leaf is not a valid X.509 certificate.
    #[error("{path}: the first certificate does not parse: {reason}")]
    Parse {
        /// The chain file.
        path: PathBuf,
        /// The parser's complaint.
        reason: String,
    },
    /// rustls refused the key, or it does not belong to the leaf.
    #[error("{path}: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// rustls' complaint.
        source: rustls::Error,
    },
}

/// A loaded certificate and what is reported about it.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// What rustls presents.
    pub key: Arc<CertifiedKey>,
    /// The leaf's notAfter, Unix seconds.
    pub not_after: i64,
    /// SHA-256 of the two files' bytes: a rewrite with the same content is
    /// not a change.
    pub content: [u8; 32],
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The SHA-256 of `files`' current bytes, to tell whether they changed.
pub fn fingerprint(files: &CertFiles) -> Result<[u8; 32], CertError> {
    let mut hash = Sha256::new();
    hash.update(read(&files.cert)?);
    hash.update(read(&files.key)?);
    Ok(hash.finalize().into())
}

/// Read and check `files`.
pub fn load(files: &CertFiles) -> Result<Certificate, CertError> {
    let (cert_pem, key_pem) = (read(&files.cert)?, read(&files.key)?);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    let leaf = chain
        .first()
        .ok_or_else(|| CertError::NoCertificate(files.cert.clone()))?;
    let (_, parsed) = X509Certificate::from_der(leaf).map_err(|e| CertError::Parse {
        path: files.cert.clone(),
        reason: e.to_string(),
    })?;
    let not_after = parsed.validity().not_after.timestamp();
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| CertError::NoKey(files.key.clone()))?;
    let provider = rustls::crypto::ring::default_provider();
    let key = CertifiedKey::from_der(chain, key, &provider).map_err(|source| CertError::Key {
        path: files.key.clone(),
        source,
    })?;
    let mut hash = Sha256::new();
    hash.update(&cert_pem);
    hash.update(&key_pem);
    Ok(Certificate {
        key: Arc::new(key),
        not_after,
        content: hash.finalize().into(),
    })
}
