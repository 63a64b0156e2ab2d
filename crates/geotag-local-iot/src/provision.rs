//! Provisioning a tag as IoT Core knows it: a thing, a certificate for a key
//! pair made here (the private key never leaves this machine: IoT Core, or
//! the local CA, signs a certificate signing request), the stack's device
//! policy and the thing attached to the certificate, and the PEM files
//! written with mode 0600 for the key.
//!
//! The same calls serve a deployed stack (`CreateCertificateFromCsr`, signed
//! by Amazon's CA) and the local one (the local CA signs, and
//! `RegisterCertificateWithoutCA` registers the certificate in the emulator).
//! Registering the tag to a customer is the registry's business (the Devices
//! table), done beside this by the command.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow};
use aws_sdk_iot::types::CertificateStatus;

use crate::ca::{LocalCa, key_and_request, write_file};

/// Who signs a tag's certificate.
pub enum Signer<'a> {
    /// IoT Core itself (a deployed stack).
    IotCore,
    /// The local stack's CA.
    Local(&'a LocalCa),
}

/// What provisioning made, and where it wrote it.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub thing: String,
    pub certificate_id: String,
    pub certificate_arn: String,
    pub certificate_file: PathBuf,
    pub private_key_file: PathBuf,
    /// The CA a tag checks the broker against (the local CA's; for AWS, the
    /// README says where Amazon's root CA is).
    pub ca_file: Option<PathBuf>,
}

/// Provisions `thing` with `policy`, writing its files under `out_dir/thing/`.
pub async fn provision_device(
    iot: &aws_sdk_iot::Client,
    signer: Signer<'_>,
    policy: &str,
    thing: &str,
    out_dir: &Path,
) -> Result<Provisioned> {
    if !geotag::reading::is_valid_device_id(thing) {
        anyhow::bail!("{thing:?} is not a device id: 1 to 64 characters of A-Z a-z 0-9 . _ : -");
    }
    match iot.create_thing().thing_name(thing).send().await {
        Ok(_) => {}
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_already_exists_exception()) => {}
        Err(error) => {
            return Err(anyhow!(
                aws_sdk_iot::error::DisplayErrorContext(error).to_string()
            ))
            .context("creating the thing");
        }
    }
    let (key, request) = key_and_request(thing)?;
    let (certificate_pem, certificate_id, certificate_arn) = match signer {
        Signer::IotCore => {
            let output = iot
                .create_certificate_from_csr()
                .certificate_signing_request(&request)
                .set_as_active(true)
                .send()
                .await
                .map_err(sdk_error)
                .context("CreateCertificateFromCsr")?;
            (
                output.certificate_pem.unwrap_or_default(),
                output.certificate_id.unwrap_or_default(),
                output.certificate_arn.unwrap_or_default(),
            )
        }
        Signer::Local(ca) => {
            let pem = ca.sign_request(&request)?;
            let output = iot
                .register_certificate_without_ca()
                .certificate_pem(&pem)
                .status(CertificateStatus::Active)
                .send()
                .await
                .map_err(sdk_error)
                .context("RegisterCertificateWithoutCA")?;
            (
                pem,
                output.certificate_id.unwrap_or_default(),
                output.certificate_arn.unwrap_or_default(),
            )
        }
    };
    iot.attach_policy()
        .policy_name(policy)
        .target(&certificate_arn)
        .send()
        .await
        .map_err(sdk_error)
        .with_context(|| format!("attaching the policy {policy}"))?;
    iot.attach_thing_principal()
        .thing_name(thing)
        .principal(&certificate_arn)
        .send()
        .await
        .map_err(sdk_error)
        .context("attaching the thing to its certificate")?;

    let dir = out_dir.join(thing);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let certificate_file = dir.join("certificate.pem");
    let private_key_file = dir.join("private.key");
    write_file(&certificate_file, &certificate_pem, 0o600)?;
    write_file(&private_key_file, &key.serialize_pem(), 0o600)?;
    let ca_file = match signer {
        Signer::Local(ca) => {
            let path = dir.join("ca.pem");
            write_file(&path, ca.certificate_pem(), 0o644)?;
            Some(path)
        }
        Signer::IotCore => None,
    };
    Ok(Provisioned {
        thing: thing.to_owned(),
        certificate_id,
        certificate_arn,
        certificate_file,
        private_key_file,
        ca_file,
    })
}

/// Deactivates every certificate attached to `thing`; returns their ids. A
/// connection is then refused at the broker (IoT Core also closes the open
/// ones within minutes; the local broker checks at each connect).
pub async fn revoke_device(iot: &aws_sdk_iot::Client, thing: &str) -> Result<Vec<String>> {
    let principals = iot
        .list_thing_principals()
        .thing_name(thing)
        .send()
        .await
        .map_err(sdk_error)
        .with_context(|| format!("listing {thing}'s certificates"))?
        .principals
        .unwrap_or_default();
    let mut revoked = Vec::new();
    for arn in principals {
        let Some(id) = arn
            .strip_prefix("arn:")
            .and_then(|_| arn.rsplit_once("cert/"))
            .map(|(_, id)| id.to_owned())
        else {
            continue;
        };
        iot.update_certificate()
            .certificate_id(&id)
            .new_status(CertificateStatus::Inactive)
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("deactivating the certificate {id}"))?;
        revoked.push(id);
    }
    if revoked.is_empty() {
        anyhow::bail!("{thing} has no certificate to revoke");
    }
    Ok(revoked)
}

/// An SDK error with its whole chain (the service's code and message), which
/// its `Display` leaves out.
fn sdk_error(error: impl std::error::Error) -> anyhow::Error {
    anyhow!(aws_sdk_iot::error::DisplayErrorContext(error).to_string())
}
