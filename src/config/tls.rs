//! Certificate checks at load time: Pingora's rustls listener panics when it
//! cannot use its certificate, long after the config was accepted, so a bad
//! certificate or a key that does not match is a config error instead.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Whether the PEM files hold a certificate chain and the private key that
/// matches its first certificate.
pub fn check_pair(cert: &Path, key: &Path) -> Result<(), String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("no usable certificate in {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("no usable private key in {}: {e}", key.display()))?;
    rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map(|_| ())
    .map_err(|e| format!("the certificate and key cannot be used together: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matching_pair_passes_and_garbage_or_a_foreign_key_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["shop.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k, other, junk) = (
            dir.path().join("c.pem"),
            dir.path().join("k.pem"),
            dir.path().join("other.pem"),
            dir.path().join("junk.pem"),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        std::fs::write(&other, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert_eq!(check_pair(&c, &k), Ok(()));
        let foreign = check_pair(&c, &other).unwrap_err();
        assert!(foreign.contains("cannot be used together"), "{foreign}");
        assert!(check_pair(&junk, &k).is_err());
        assert!(check_pair(&k, &k).unwrap_err().contains("no certificate"));
    }
}
