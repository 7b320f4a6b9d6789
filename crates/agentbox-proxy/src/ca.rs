//! The local certificate authority that lets the proxy terminate TLS toward hosts that carry a
//! credential. It is created once per AGENTBOX_HOME (`ca/ca.crt`, `ca/ca.key`, the key 0600 in a
//! 0700 directory). Sandboxes get the certificate only; the key never leaves the host side.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

use crate::ProxyError;

const CA_NAME: &str = "agentbox egress CA";

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    dn.push(DnType::OrganizationName, "agentbox");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    Ok(params)
}

/// A loaded CA and the server configurations issued from it, one per host.
pub struct LocalCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    issued: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa").finish_non_exhaustive()
    }
}

pub fn cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.crt")
}

fn key_path(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}

fn err(what: &str) -> impl Fn(std::io::Error) -> ProxyError + '_ {
    move |e| ProxyError::Ca(format!("{what}: {e}"))
}

impl LocalCa {
    /// Loads the CA in `dir`, creating it first if there is none.
    pub fn load_or_create(dir: &Path) -> Result<Self, ProxyError> {
        if !key_path(dir).exists() {
            Self::create(dir)?;
        }
        Self::load(dir)
    }

    fn create(dir: &Path) -> Result<(), ProxyError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err(&dir.display().to_string()))?;
        let key = KeyPair::generate().map_err(|e| ProxyError::Ca(e.to_string()))?;
        let cert =
            ca_params().and_then(|p| p.self_signed(&key)).map_err(|e| ProxyError::Ca(e.to_string()))?;
        // Written under temporary names and renamed, the certificate first: a concurrent creator
        // may win, but nobody ever sees a key without its certificate.
        let pid = std::process::id();
        let tmp_cert = dir.join(format!(".ca.crt.{pid}"));
        let tmp_key = dir.join(format!(".ca.key.{pid}"));
        std::fs::write(&tmp_cert, cert.pem()).map_err(err("writing the CA certificate"))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_key)
            .map_err(err("writing the CA key"))?;
        f.write_all(key.serialize_pem().as_bytes()).map_err(err("writing the CA key"))?;
        if key_path(dir).exists() {
            let _ = std::fs::remove_file(&tmp_cert);
            let _ = std::fs::remove_file(&tmp_key);
            return Ok(());
        }
        std::fs::rename(&tmp_cert, cert_path(dir)).map_err(err("installing the CA certificate"))?;
        std::fs::rename(&tmp_key, key_path(dir)).map_err(err("installing the CA key"))
    }

    fn load(dir: &Path) -> Result<Self, ProxyError> {
        let key_pem = std::fs::read_to_string(key_path(dir)).map_err(err("reading the CA key"))?;
        let cert_pem = std::fs::read_to_string(cert_path(dir)).map_err(err("reading the CA certificate"))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| ProxyError::Ca(format!("the CA key: {e}")))?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| ProxyError::Ca(format!("the CA certificate: {e}")))?;
        // The issuer is rebuilt from the same name and key: that is all a signature needs.
        let params = ca_params().map_err(|e| ProxyError::Ca(e.to_string()))?;
        Ok(Self { cert_pem, cert_der, issuer: Issuer::new(params, key), issued: Mutex::new(HashMap::new()) })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A TLS server configuration presenting a certificate for `host`, issued on first use.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, ProxyError> {
        let mut issued =
            self.issued.lock().map_err(|_| ProxyError::Ca("certificate cache poisoned".into()))?;
        if let Some(cfg) = issued.get(host) {
            return Ok(cfg.clone());
        }
        let fail = |e: rcgen::Error| ProxyError::Ca(format!("issuing a certificate for {host}: {e}"));
        let key = KeyPair::generate().map_err(fail)?;
        let mut params = CertificateParams::new(vec![host.to_string()]).map_err(fail)?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2045, 1, 1);
        let cert = params.signed_by(&key, &self.issuer).map_err(fail)?;
        let chain = vec![cert.der().clone(), self.cert_der.clone()];
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut cfg = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ProxyError::Ca(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| ProxyError::Ca(e.to_string()))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        issued.insert(host.to_string(), cfg.clone());
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_a_private_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let ca = LocalCa::load_or_create(&ca_dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ca_dir), 0o700);
        assert_eq!(mode(&key_path(&ca_dir)), 0o600);
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let again = LocalCa::load_or_create(&ca_dir).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem(), "loaded, not created again");
        let a = ca.server_config("api.example.com").unwrap();
        let b = ca.server_config("api.example.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "issued once per host");
    }
}
