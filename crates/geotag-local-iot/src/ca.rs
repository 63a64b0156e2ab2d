//! The local certificate authority: IoT Core's part of signing a tag's
//! certificate, played by a CA that `geotag up` makes at start (rcgen).
//!
//! A tag's key pair is made where the tag is provisioned and never leaves it:
//! provisioning sends a certificate signing request, as `aws iot
//! create-certificate-from-csr` takes one, and the CA signs it. The broker's
//! own certificate is signed by the same CA, so a tag that trusts `ca.pem`
//! can check it is talking to this broker.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject as _};

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";

pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// A certificate and its private key, as PEM.
pub struct Identity {
    pub certificate_pem: String,
    pub private_key_pem: String,
}

impl LocalCa {
    /// A new CA, valid from now on (rcgen's default validity).
    pub fn create() -> Result<LocalCa> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "geotag local IoT CA");
        let cert = params.self_signed(&key)?;
        Ok(LocalCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Writes `ca.pem` and `ca.key` (mode 0600) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_file(&dir.join(CA_CERT), &self.cert_pem, 0o644)?;
        write_file(&dir.join(CA_KEY), &self.issuer.key().serialize_pem(), 0o600)
    }

    /// The CA a running local stack saved in `dir`.
    pub fn load(dir: &Path) -> Result<LocalCa> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "reading {} (is `geotag up` running? it makes the local CA)",
                    path.display()
                )
            })
        };
        let cert_pem = read(CA_CERT)?;
        let key = KeyPair::from_pem(&read(CA_KEY)?)?;
        Ok(LocalCa {
            issuer: Issuer::from_ca_cert_pem(&cert_pem, key)?,
            cert_pem,
        })
    }

    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn certificate_der(&self) -> Result<CertificateDer<'static>> {
        Ok(CertificateDer::from_pem_slice(self.cert_pem.as_bytes())?)
    }

    /// The broker's certificate: `localhost` and `127.0.0.1`.
    pub fn server_identity(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params
            .distinguished_name
            .push(DnType::CommonName, "geotag local IoT broker");
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((
            vec![cert.der().clone(), self.certificate_der()?],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        ))
    }

    /// Signs a tag's certificate signing request, as IoT Core's
    /// CreateCertificateFromCsr does (the subject is the request's).
    pub fn sign_request(&self, csr_pem: &str) -> Result<String> {
        let request = CertificateSigningRequestParams::from_pem(csr_pem)
            .context("the certificate signing request does not parse")?;
        Ok(request.signed_by(&self.issuer)?.pem())
    }
}

/// A tag's TLS client configuration: trusting `ca_pem` (the broker's CA), presenting the identity in
/// `dir` (`certificate.pem`, `private.key`, as `geotag device provision`
/// writes them), or none.
pub fn client_tls_config(
    ca_pem: &str,
    identity_dir: Option<&Path>,
) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes())?)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match identity_dir {
        Some(dir) => builder.with_client_auth_cert(
            vec![
                CertificateDer::from_pem_file(dir.join("certificate.pem"))
                    .with_context(|| format!("reading {}/certificate.pem", dir.display()))?,
            ],
            PrivateKeyDer::from_pem_file(dir.join("private.key"))
                .with_context(|| format!("reading {}/private.key", dir.display()))?,
        )?,
        None => builder.with_no_client_auth(),
    })
}

/// A new key pair for `thing` and a certificate signing request naming it.
pub fn key_and_request(thing: &str) -> Result<(KeyPair, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, thing);
    let request = params.serialize_request(&key)?;
    Ok((key, request.pem()?))
}

/// IoT Core's certificate id: the SHA-256 of the certificate's DER, in hex.
pub fn certificate_id(der: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(der))
}

/// The DER of a PEM certificate.
pub fn der_of(pem: &str) -> Result<Vec<u8>> {
    Ok(CertificateDer::from_pem_slice(pem.as_bytes())
        .context("not a PEM certificate")?
        .to_vec())
}

/// Writes `contents` to `path` with `mode`, the mode set at creation so that
/// a private key is never readable by others, not even for a moment.
pub fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_saved_ca_signs_requests_and_its_key_is_private() {
        let dir = std::env::temp_dir().join(format!("geotag-ca-{}", std::process::id()));
        let ca = LocalCa::create().unwrap();
        ca.save(&dir).unwrap();
        let mode = std::fs::metadata(dir.join(CA_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let loaded = LocalCa::load(&dir).unwrap();
        let (_, request) = key_and_request("tag-0001").unwrap();
        let pem = loaded.sign_request(&request).unwrap();
        let der = der_of(&pem).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            parsed
                .subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "tag-0001"
        );
        assert_eq!(parsed.issuer().to_string(), "CN=geotag local IoT CA");
        assert_eq!(certificate_id(&der).len(), 64);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
