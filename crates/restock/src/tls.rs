//! TLS for the connections Restock opens: SMTP relays, HTTP sources, merchants'
//! databases, streams.
//!
//! One crypto provider for the whole process: ring. rustls refuses to pick one when
//! two are compiled in, and the HTTP client is built without a provider of its own,
//! so [`install_crypto_provider`] makes ring the process default before any client
//! is built. Certificates are checked against the public web roots (Mozilla's, as
//! `webpki-roots` ships them) plus, where a source or relay names one, a private CA
//! given as PEM.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Makes ring the process-wide rustls provider. Idempotent; cheap after the first
/// call.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already installed (by an embedding program, say):
        // that one stays.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A builder for an HTTP client. Every `reqwest` client goes through here, so none
/// is built before the process has its crypto provider.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}

/// The certificates of a PEM text: at least one, or why not.
pub fn parse_ca_pem(pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in the PEM text");
    Ok(certs)
}

/// A client configuration trusting the public roots and, if given, a private CA.
pub fn client_config(extra_ca_pem: Option<&[u8]>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        for cert in parse_ca_pem(pem)? {
            roots.add(cert)?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_without_a_certificate_is_refused() {
        assert!(parse_ca_pem(b"").is_err());
        assert!(
            parse_ca_pem(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").is_err()
        );
        assert!(client_config(Some(b"hello")).is_err());
        assert!(client_config(None).is_ok());
    }
}
