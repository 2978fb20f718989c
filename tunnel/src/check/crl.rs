//! Each configured CRL: that it parses, which CA of this host signed it (a bad signature
//! makes peers refuse every certificate of the CA it names), its dates, what it lists.

use std::path::PathBuf;

use rustls_pki_types::CertificateDer;
use x509_parser::{
    certificate::X509Certificate, prelude::FromDer as _, revocation_list::CertificateRevocationList,
};

use super::{at, report::Lines, span};
use crate::{
    ca::CaFiles,
    config::{CertSource, Config, Located},
    errors,
    identity::timestamp,
    tls,
};

/// A CA that may sign a CRL, and how to name it.
pub(super) struct Signer {
    description: String,
    der: CertificateDer<'static>,
}

/// The CAs this host knows: the roots, and the intermediates of every configured
/// certificate (behind the leaf in a cert file, or an issuer's intermediate.pem). Files that
/// do not read are left out here; the certificates section says why.
pub(super) fn signers(config: &Config, roots: &[CertificateDer<'static>]) -> Vec<Signer> {
    let bundle = config.trust_bundle.value.display();
    let mut signers: Vec<Signer> = roots
        .iter()
        .enumerate()
        .map(|(i, der)| Signer {
            description: format!("root {} of {bundle}", i + 1),
            der: der.clone(),
        })
        .collect();
    let sources = std::iter::once(&config.node.credential)
        .chain(config.workloads.iter().map(|w| &w.credential));
    for source in sources {
        let (file, skip) = match source {
            CertSource::Files { cert, .. } => (cert.value.clone(), 1),
            CertSource::Issuer { dir, .. } => (CaFiles::new(&dir.value).intermediate_cert, 0),
        };
        for der in tls::read_certificates(&file)
            .unwrap_or_default()
            .into_iter()
            .skip(skip)
        {
            if !signers.iter().any(|s| s.der == der) {
                signers.push(Signer {
                    description: format!("the intermediate CA in {}", file.display()),
                    der,
                });
            }
        }
    }
    signers
}

/// The checks of one `crl` entry; false when the file does not read or a CRL in it does
/// not parse.
pub(super) fn check(
    lines: &mut Lines<'_>,
    config: &Config,
    index: usize,
    located: &Located<PathBuf>,
    signers: &[Signer],
    now: i64,
) -> bool {
    let path = located.value.display();
    let crls = match tls::read_crls(&located.value) {
        Ok(crls) => crls,
        Err(e) => {
            lines.fail(
                format!("crl[{index}]: parses"),
                errors::chain(&e),
                format!(
                    "the file must hold PEM X509 CRL blocks or one DER CRL; fix it or remove it \
                     from {}",
                    at(config, &located.site)
                ),
            );
            return false;
        }
    };
    let mut parsed = true;
    for (n, der) in crls.iter().enumerate() {
        let name = match crls.len() {
            1 => format!("crl[{index}]"),
            _ => format!("crl[{index}] #{}", n + 1),
        };
        let Ok((_, crl)) = CertificateRevocationList::from_der(der.as_ref()) else {
            lines.fail(
                format!("{name}: parses"),
                format!("{path}: CRL {} is not a valid CRL", n + 1),
                "replace it with the CRL as the CA publishes it".into(),
            );
            parsed = false;
            continue;
        };
        lines.ok(
            format!("{name}: parses"),
            format!("{path}: a CRL of {}", crl.issuer()),
        );
        crl_signer(lines, &name, &path.to_string(), &crl, signers);
        crl_dates(lines, &name, &path.to_string(), &crl, now);
        let entries = crl.iter_revoked_certificates().count();
        lines.ok(
            format!("{name}: entries"),
            format!("{path}: {entries} revoked certificate(s) listed"),
        );
    }
    parsed
}

fn crl_signer(
    lines: &mut Lines<'_>,
    name: &str,
    path: &str,
    crl: &CertificateRevocationList<'_>,
    signers: &[Signer],
) {
    let check = format!("{name}: signer");
    let mut same_name = Vec::new();
    for signer in signers {
        let Ok((_, ca)) = X509Certificate::from_der(signer.der.as_ref()) else {
            continue;
        };
        if ca.subject().as_raw() != crl.issuer().as_raw() {
            continue;
        }
        if crl.verify_signature(ca.public_key()).is_ok() {
            lines.ok(
                check,
                format!(
                    "{path}: signed by {} ({})",
                    signer.description,
                    ca.subject()
                ),
            );
            return;
        }
        same_name.push(signer.description.as_str());
    }
    if same_name.is_empty() {
        // A peer's intermediate this host does not hold may be its rightful signer.
        lines.warn(
            check,
            format!(
                "{path}: issued by {}, which is neither a root of the bundle nor the \
                 intermediate of a configured certificate",
                crl.issuer()
            ),
            "fine if it is the CA of peers' certificates; otherwise it revokes nothing here: \
             configure the CRL of the CA that issues your certificates"
                .into(),
        );
    } else {
        lines.fail(
            check,
            format!(
                "{path}: names {} as its issuer, but its signature does not verify with the key \
                 of {}: peers holding it refuse every certificate that CA issued",
                crl.issuer(),
                same_name.join(" or ")
            ),
            "use the CRL that CA publishes (signed by its key), or remove this one".into(),
        );
    }
}

fn crl_dates(
    lines: &mut Lines<'_>,
    name: &str,
    path: &str,
    crl: &CertificateRevocationList<'_>,
    now: i64,
) {
    let this_update = crl.last_update().timestamp();
    if this_update > now {
        // webpki does not judge thisUpdate: the list is enforced anyway, but one of the
        // clocks is wrong, and certificates' dates are judged by the same clocks.
        lines.warn(
            format!("{name}: thisUpdate"),
            format!(
                "{path}: thisUpdate is {}, {} in the future",
                timestamp(this_update),
                span(this_update - now)
            ),
            "clock skew suspected: check NTP on this host and on the CA".into(),
        );
    } else {
        lines.ok(
            format!("{name}: thisUpdate"),
            format!("{path}: published {}", timestamp(this_update)),
        );
    }
    let check = format!("{name}: nextUpdate");
    match crl.next_update().map(|t| t.timestamp()) {
        None => lines.ok(
            check,
            format!("{path}: no nextUpdate (it never goes stale)"),
        ),
        Some(next) if next < now => lines.warn(
            check,
            format!(
                "{path}: nextUpdate {} passed {} ago: stale: still enforced; publish a new one",
                timestamp(next),
                span(now - next)
            ),
            format!(
                "have the CA publish a fresh CRL and replace {path} (the daemon reloads it when \
                 the file changes)"
            ),
        ),
        Some(next) => lines.ok(
            check,
            format!(
                "{path}: next update due {} (in {})",
                timestamp(next),
                span(next - now)
            ),
        ),
    }
}
