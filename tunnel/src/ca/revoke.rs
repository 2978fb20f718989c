//! `tunnel ca revoke`: adds a certificate to the CRL of the CA that issued it. A leaf is
//! revoked by the intermediate, the intermediate by the root (which refuses every leaf under
//! it); only the signing CA's key is read, so the root's may stay offline until an
//! intermediate has to go. One CRL file per issuing CA: a run extends it (entries kept, CRL
//! number + 1) and replaces it atomically, because the daemon reloads it as soon as it
//! changes.

mod parse;

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use parse::{issued_by, subject_key_id};
use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair, RevocationReason,
    RevokedCertParams, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::num_bigint::BigUint;

use super::{CaError, files};
use crate::identity::{CertSummary, hex_serial};

/// When a CRL says its successor will be out, by default. The daemon keeps using a CRL past
/// this (a stale list still revokes), so it is a promise to readers, not an expiry.
pub const DEFAULT_NEXT_UPDATE: Duration = Duration::from_secs(7 * 86_400);

/// What `tunnel ca revoke` does.
#[derive(Clone, Debug)]
pub struct RevokeOptions {
    /// The CA directory made by `tunnel ca init`.
    pub ca: PathBuf,
    /// The certificate to revoke (the first one of the file: a leaf's cert.pem holds its chain).
    pub cert: PathBuf,
    /// The CRL file to create or extend.
    pub crl: PathBuf,
    pub reason: RevocationReason,
    /// nextUpdate = now + this.
    pub next_update: Duration,
}

/// The CA of the directory that signs the CRL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signer {
    Root,
    Intermediate,
}

impl Signer {
    /// Its certificate and key in the CA directory.
    fn files(self, files: &files::CaFiles) -> (&Path, &Path) {
        match self {
            Self::Root => (&files.root_cert, &files.root_key),
            Self::Intermediate => (&files.intermediate_cert, &files.intermediate_key),
        }
    }
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Root => "root",
            Self::Intermediate => "intermediate",
        })
    }
}

/// What a revocation did.
#[derive(Clone, Debug)]
pub struct Revocation {
    /// In hex, as CRLs and `openssl x509 -serial` show it.
    pub serial: String,
    /// Its URI SANs: a leaf's SPIFFE ID, or an intermediate's trust domain.
    pub uris: Vec<String>,
    pub crl: PathBuf,
    pub signer: Signer,
    pub entries: usize,
    pub crl_number: BigUint,
    pub next_update: OffsetDateTime,
    /// The serial was listed already, revoked then (unix seconds); that entry is kept as it
    /// was and the CRL only re-signed.
    pub already_revoked_at: Option<i64>,
}

/// Revokes `options.cert` in `options.crl`, signed by the CA of `options.ca` that issued it.
pub fn revoke(options: &RevokeOptions) -> Result<Revocation, CaError> {
    let now = OffsetDateTime::now_utc();
    let next_update = next_update(now, options.next_update)?;
    let files = files::CaFiles::new(&options.ca);
    let target_der = parse::read_certificate(&options.cert)?;
    let root_pem = files::read(&files.root_cert)?;
    let intermediate_pem = files::read(&files.intermediate_cert)?;
    let root_der = parse::ca_certificate(&files.root_cert, &root_pem)?;
    let intermediate_der = parse::ca_certificate(&files.intermediate_cert, &intermediate_pem)?;
    let read_error = |path: &Path, detail: String| CaError::Read {
        path: path.into(),
        detail,
    };
    let target = parse::certificate(&target_der).map_err(|e| CaError::Certificate {
        path: options.cert.clone(),
        detail: e.to_string(),
    })?;
    let root =
        parse::certificate(&root_der).map_err(|e| read_error(&files.root_cert, e.to_string()))?;
    let intermediate = parse::certificate(&intermediate_der)
        .map_err(|e| read_error(&files.intermediate_cert, e.to_string()))?;

    // A self-signed root says it issued itself; a CRL it signs about itself means nothing.
    if target.subject().as_raw() == root.subject().as_raw()
        && target.public_key().raw == root.public_key().raw
    {
        return Err(CaError::RootNotRevocable {
            cert: options.cert.clone(),
            bundle: files.bundle.clone(),
        });
    }
    let (signer, signer_cert, signer_pem) = if issued_by(&target, &intermediate) {
        (Signer::Intermediate, &intermediate, &intermediate_pem)
    } else if issued_by(&target, &root) {
        (Signer::Root, &root, &root_pem)
    } else {
        return Err(CaError::ForeignCertificate {
            cert: options.cert.clone(),
            root: files.root_cert.clone(),
            intermediate: files.intermediate_cert.clone(),
        });
    };
    let summary = CertSummary::parse(&target_der).map_err(|e| CaError::Certificate {
        path: options.cert.clone(),
        detail: e.to_string(),
    })?;

    let existing = parse::read_crl(&options.crl)?;
    let (mut entries, crl_number) = match &existing {
        Some(der) => {
            let crl = parse::crl(&options.crl, der)?;
            if !parse::same_issuer(&crl, signer_cert) {
                return Err(CaError::ForeignCrl {
                    path: options.crl.clone(),
                    signer,
                    dir: options.ca.clone(),
                    cert: options.cert.clone(),
                });
            }
            let number = crl.crl_number().cloned().unwrap_or_default() + 1u32;
            (
                crl.iter_revoked_certificates().map(parse::kept).collect(),
                number,
            )
        }
        None => (Vec::new(), BigUint::from(1u32)),
    };

    // As a number: the DER of a serial may carry a leading zero byte, an entry's bytes not.
    let serial = BigUint::from_bytes_be(target.raw_serial()).to_bytes_be();
    let already_revoked_at = entries
        .iter()
        .find(|entry: &&RevokedCertParams| entry.serial_number.as_ref() == serial.as_slice())
        .map(|entry| entry.revocation_time.unix_timestamp());
    if already_revoked_at.is_none() {
        entries.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: now,
            reason_code: Some(options.reason),
            invalidity_date: None,
        });
    }

    let (signer_cert_path, signer_key) = signer.files(&files);
    let key_pem = files::read(signer_key).map_err(|e| match (signer, e) {
        (Signer::Root, CaError::Read { path, detail }) => CaError::Read {
            path,
            detail: format!("{detail} (an intermediate is revoked by the root: its key is needed)"),
        },
        (_, e) => e,
    })?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| read_error(signer_key, e.to_string()))?;
    let issuer = Issuer::from_ca_cert_pem(signer_pem, key)
        .map_err(|e| read_error(signer_cert_path, e.to_string()))?;
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update,
        crl_number: SerialNumber::from_slice(&crl_number.to_bytes_be()),
        issuing_distribution_point: None,
        revoked_certs: entries,
        // The CRL's authority key identifier must be the signer's subject key identifier,
        // whatever method made that one.
        key_identifier_method: subject_key_id(signer_cert).map_or(KeyIdMethod::Sha256, |id| {
            KeyIdMethod::PreSpecified(id.to_vec())
        }),
    };
    let crl = params.signed_by(&issuer)?;
    files::replace_public_file(&options.crl, &crl.pem()?)?;

    Ok(Revocation {
        serial: hex_serial(target.raw_serial()),
        uris: summary.uris,
        crl: options.crl.clone(),
        signer,
        entries: params.revoked_certs.len(),
        crl_number,
        next_update,
        already_revoked_at,
    })
}

/// The CRL of a new CA, listing nothing yet: `tunnel ca init` writes it, so a config can name
/// it in `crl = [...]` from the first day and `tunnel ca revoke` extends it.
pub(super) fn empty_crl(
    issuer: &Issuer<'_, KeyPair>,
    issuer_der: &[u8],
    now: OffsetDateTime,
) -> Result<String, CaError> {
    let issuer_cert = parse::certificate(issuer_der).map_err(|e| CaError::Read {
        path: "intermediate.pem".into(),
        detail: e.to_string(),
    })?;
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: next_update(now, DEFAULT_NEXT_UPDATE)?,
        crl_number: SerialNumber::from_slice(&[1]),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: subject_key_id(&issuer_cert).map_or(KeyIdMethod::Sha256, |id| {
            KeyIdMethod::PreSpecified(id.to_vec())
        }),
    };
    Ok(params.signed_by(issuer)?.pem()?)
}

fn next_update(now: OffsetDateTime, after: Duration) -> Result<OffsetDateTime, CaError> {
    let invalid = |why| CaError::InvalidNextUpdate {
        next_update: crate::duration::format(after),
        why,
    };
    if after.is_zero() {
        return Err(invalid("a CRL must stay current for some time"));
    }
    time::Duration::try_from(after)
        .ok()
        .and_then(|after| now.checked_add(after))
        .ok_or_else(|| invalid("too far in the future"))
}

#[cfg(test)]
mod tests;
