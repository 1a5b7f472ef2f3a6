//! The API server's certificates: a cluster CA (kept in the replicated
//! store so every member shares it), a serving certificate per member, the
//! admin client certificate and `admin.kubeconfig`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

fn validity(params: &mut CertificateParams, years: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365 * years);
}

/// A new self-signed cluster CA (ECDSA P-256, ten years).
pub fn new_ca(common_name: &str) -> Result<CertPair, PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, 10);
    let cert = params.self_signed(&key)?;
    Ok(CertPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

fn issue(ca: &CertPair, mut params: CertificateParams) -> Result<CertPair, PkiError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    validity(&mut params, 1);
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// A serving certificate for the given host names and IP addresses (plus
/// the names kube-apiserver always carries).
pub fn issue_serving(ca: &CertPair, hosts: &[String]) -> Result<CertPair, PkiError> {
    let mut names: Vec<String> = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    names.push("127.0.0.1".into());
    for h in hosts {
        if !names.contains(h) {
            names.push(h.clone());
        }
    }
    let mut params = CertificateParams::default();
    for n in &names {
        params.subject_alt_names.push(match n.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(n.clone().try_into()?),
        });
    }
    params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    issue(ca, params)
}

/// A client certificate: the user is the common name, the groups the
/// organizations (kube-apiserver's x509 authenticator).
pub fn issue_client(ca: &CertPair, user: &str, groups: &[&str]) -> Result<CertPair, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, user);
    for g in groups {
        params.distinguished_name.push(DnType::OrganizationName, *g);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    issue(ca, params)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A kubeconfig with the CA and a client certificate embedded.
pub fn kubeconfig(server: &str, ca_pem: &str, client: &CertPair, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: keelson\ncontexts:\n- context:\n    cluster: keelson\n    user: {user}\n  name: {user}@keelson\ncurrent-context: {user}@keelson\npreferences: {{}}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n",
        ca = b64(ca_pem),
        cert = b64(&client.cert_pem),
        key = b64(&client.key_pem),
    )
}

/// Writes `contents` to `path` (mode 0600 for keys and kubeconfigs).
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| PkiError::Io(dir.into(), e))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| PkiError::Io(tmp.clone(), e))?;
    f.write_all(contents.as_bytes()).map_err(|e| PkiError::Io(tmp.clone(), e))?;
    f.sync_all().map_err(|e| PkiError::Io(tmp.clone(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| PkiError::Io(path.into(), e))
}

pub fn read_file(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|e| PkiError::Io(path.into(), e))
}

/// The rustls server configuration: `serving` as the certificate, client
/// certificates checked against `client_ca_pem` but not required (an
/// anonymous request is refused later, with a Status).
pub fn server_config(serving: &CertPair, client_ca_pem: &str) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| PkiError::Invalid(format!("serving certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes())
        .map_err(|e| PkiError::Invalid(format!("serving key: {e}")))?;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        let c = c.map_err(|e| PkiError::Invalid(format!("client CA: {e}")))?;
        roots.add(c)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Invalid(format!("client CA: {e}")))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The user (common name) and groups (organizations) of a verified client
/// certificate.
pub fn identity_of(cert: &CertificateDer<'_>) -> Option<(String, Vec<String>)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let user = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let groups = subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    Some((user, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_client_certificate_names_its_user_and_groups() {
        let ca = new_ca("keelson-ca").unwrap();
        let admin = issue_client(&ca, "admin", &["system:masters"]).unwrap();
        let der = CertificateDer::from_pem_slice(admin.cert_pem.as_bytes()).unwrap();
        assert_eq!(identity_of(&der), Some(("admin".into(), vec!["system:masters".into()])));
        let serving = issue_serving(&ca, &["10.0.0.1".into(), "node1".into()]).unwrap();
        server_config(&serving, &ca.cert_pem).unwrap();
    }
}
