//! The agent's TLS and HTTP clients. One rustls configuration — the system's root
//! certificates, the bundled Mozilla roots when the system has none (minimal containers), and
//! an optional extra CA from `--ca-file` — shared by reqwest (pairing, token rotation, the
//! long-poll transport) and the WebSocket, so both trust exactly the same servers.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use rustls::{pki_types::pem::PemObject as _, pki_types::CertificateDer, ClientConfig, RootCertStore};

/// The rustls client configuration for this agent.
pub fn client_config(ca_file: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates are skipped, not fatal: the bundled roots cover them.
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .with_context(|| format!("cannot read the CA file {}", path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
        anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
        for cert in certs {
            roots.add(cert).with_context(|| format!("{} holds an invalid certificate", path.display()))?;
        }
    }
    // The ring provider, named explicitly: no process-wide default provider to guess.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An HTTP client using `tls`; `timeout` bounds whole requests (long-polls pass a longer one).
pub fn http_client(tls: &Arc<ClientConfig>, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .use_preconfigured_tls((**tls).clone())
        .user_agent(concat!("botmox-agent/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .build()
        .context("HTTP client setup")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_with_system_roots_and_refuses_a_bad_ca_file() -> anyhow::Result<()> {
        client_config(None)?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate")?;
        assert!(client_config(Some(&path)).is_err(), "a file without a certificate is refused");
        assert!(client_config(Some(&dir.path().join("missing.pem"))).is_err());
        Ok(())
    }
}
