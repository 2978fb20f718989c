//! Reading what a revocation starts from: the certificate, the CA's certificates, the CRL
//! file as it is, and which CA issued what.

use std::{fs, path::Path};

use rcgen::{RevocationReason, RevokedCertParams, SerialNumber};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, pem::PemObject};
use x509_parser::{
    certificate::X509Certificate,
    error::X509Error,
    extensions::{ParsedExtension, X509Extension},
    nom,
    prelude::FromDer as _,
    revocation_list::{CertificateRevocationList, RevokedCertificate},
    x509::ReasonCode,
};

use crate::ca::CaError;

/// The first certificate of a PEM file, or a DER file.
pub(super) fn read_certificate(path: &Path) -> Result<CertificateDer<'static>, CaError> {
    let error = |detail: String| CaError::Certificate {
        path: path.into(),
        detail,
    };
    let bytes = fs::read(path).map_err(|e| error(e.to_string()))?;
    // DER starts with a SEQUENCE tag; PEM with text.
    if bytes.first() == Some(&0x30) {
        return Ok(CertificateDer::from(bytes));
    }
    CertificateDer::from_pem_slice(&bytes).map_err(|e| error(e.to_string()))
}

pub(super) fn ca_certificate(path: &Path, pem: &str) -> Result<CertificateDer<'static>, CaError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| CaError::Read {
        path: path.into(),
        detail: e.to_string(),
    })
}

/// The parser's error says no file, so the caller words it.
pub(super) fn certificate(der: &[u8]) -> Result<X509Certificate<'_>, nom::Err<X509Error>> {
    X509Certificate::from_der(der).map(|(_, cert)| cert)
}

/// The CRL in `path` (PEM with one `X509 CRL` block, or DER), or none if there is no file.
pub(super) fn read_crl(
    path: &Path,
) -> Result<Option<CertificateRevocationListDer<'static>>, CaError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CaError::Read {
                path: path.into(),
                detail: e.to_string(),
            });
        }
    };
    let not_a_crl = |detail: String| CaError::NotACrl {
        path: path.into(),
        detail,
    };
    if bytes.first() == Some(&0x30) {
        return Ok(Some(CertificateRevocationListDer::from(bytes)));
    }
    let mut crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_a_crl(e.to_string()))?;
    match crls.len() {
        0 => Err(not_a_crl("no `X509 CRL` PEM block".into())),
        1 => Ok(crls.pop()),
        count => Err(CaError::SeveralCrls {
            path: path.into(),
            count,
        }),
    }
}

pub(super) fn crl<'a>(
    path: &Path,
    der: &'a [u8],
) -> Result<CertificateRevocationList<'a>, CaError> {
    CertificateRevocationList::from_der(der)
        .map(|(_, crl)| crl)
        .map_err(|e| CaError::NotACrl {
            path: path.into(),
            detail: e.to_string(),
        })
}

/// Whether `ca` issued `cert`: the issuer name, and the key identifiers when both carry one
/// (two CAs made for the same trust domain have the same names; only their keys differ).
pub(super) fn issued_by(cert: &X509Certificate<'_>, ca: &X509Certificate<'_>) -> bool {
    cert.issuer().as_raw() == ca.subject().as_raw()
        && matches_key(authority_key_id(cert.extensions()), ca)
}

/// Whether a CRL is by `ca`, by the same rule as [`issued_by`].
pub(super) fn same_issuer(crl: &CertificateRevocationList<'_>, ca: &X509Certificate<'_>) -> bool {
    crl.issuer().as_raw() == ca.subject().as_raw()
        && matches_key(authority_key_id(crl.extensions()), ca)
}

fn matches_key(authority_key_id: Option<&[u8]>, ca: &X509Certificate<'_>) -> bool {
    match (authority_key_id, subject_key_id(ca)) {
        (Some(authority), Some(subject)) => authority == subject,
        _ => true,
    }
}

fn authority_key_id<'a>(extensions: &'a [X509Extension<'_>]) -> Option<&'a [u8]> {
    extensions
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0)
            }
            _ => None,
        })
}

pub(super) fn subject_key_id<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(ski) => Some(ski.0),
            _ => None,
        })
}

/// An entry of the existing CRL, as it was.
pub(super) fn kept(entry: &RevokedCertificate<'_>) -> RevokedCertParams {
    RevokedCertParams {
        serial_number: SerialNumber::from_slice(&entry.serial().to_bytes_be()),
        revocation_time: entry.revocation_date.to_datetime(),
        reason_code: entry.reason_code().and_then(|(_, code)| reason(code)),
        invalidity_date: entry.invalidity_date().map(|(_, date)| date.to_datetime()),
    }
}

/// RFC 5280's reason codes; an undefined one (7, above 10) cannot be written again and is
/// dropped, which leaves the certificate revoked with no reason given.
pub(super) fn reason(code: ReasonCode) -> Option<RevocationReason> {
    use RevocationReason as R;
    Some(match code.0 {
        0 => R::Unspecified,
        1 => R::KeyCompromise,
        2 => R::CaCompromise,
        3 => R::AffiliationChanged,
        4 => R::Superseded,
        5 => R::CessationOfOperation,
        6 => R::CertificateHold,
        8 => R::RemoveFromCrl,
        9 => R::PrivilegeWithdrawn,
        10 => R::AaCompromise,
        _ => return None,
    })
}
