//! The trust section: the bundle every certificate must chain to, each of its roots, and
//! each configured CRL (who signed it, its dates, what it lists).

use std::path::Path;

use rustls_pki_types::CertificateDer;
use x509_parser::{certificate::X509Certificate, prelude::FromDer as _};

use super::{
    Life, Trusted, at, crl, life,
    report::{Lines, Report, Section},
    span,
};
use crate::{
    config::Config,
    errors,
    identity::timestamp,
    tls::{self, Trust},
};

/// Returns the trust certificates are judged by, as the daemon builds it: the bundle and
/// the CRLs, or the bundle alone when a CRL does not load (that CRL is a failure of its
/// own); `None` when the bundle itself does not load.
pub(super) fn check(report: &mut Report, config: &Config, now: i64) -> Option<Trusted> {
    let mut lines = Lines::new(report, Section::Trust);
    let bundle = &config.trust_bundle.value;
    let bundle_trust = match Trust::load_bundle(bundle) {
        Ok(trust) => {
            lines.ok(
                "bundle",
                format!(
                    "{} holds {} root(s), each a usable trust anchor",
                    bundle.display(),
                    trust.roots.len()
                ),
            );
            Some(trust)
        }
        Err(e) => {
            lines.fail(
                "bundle",
                errors::chain(&e),
                format!(
                    "it must hold the PEM root CA certificate(s) of the trust domain (tunnel ca \
                     init writes bundle.pem); fix the file or {}",
                    at(config, &config.trust_bundle.site)
                ),
            );
            None
        }
    };
    let roots = tls::read_certificates(bundle).unwrap_or_default();
    for (index, der) in roots.iter().enumerate() {
        root(&mut lines, bundle, index, der, now);
    }
    let signers = crl::signers(config, &roots);
    let mut crls_read = true;
    for (index, located) in config.crl.iter().enumerate() {
        crls_read &= crl::check(&mut lines, config, index, located, &signers, now);
    }
    let bundle_trust = bundle_trust?;
    let trust = if config.crl.is_empty() {
        bundle_trust
    } else {
        with_crls(&mut lines, config, bundle_trust, crls_read)
    };
    Some(Trusted { trust, roots })
}

/// The bundle and the CRLs, as the daemon loads them.
fn with_crls(
    lines: &mut Lines<'_>,
    config: &Config,
    bundle_trust: Trust,
    crls_read: bool,
) -> Trust {
    let crl_files: Vec<_> = config.crl.iter().map(|c| c.value.clone()).collect();
    match Trust::load(&config.trust_bundle.value, &crl_files) {
        Ok(trust) => trust,
        Err(e) => {
            // Said once: a CRL that failed above is what failed here.
            if crls_read {
                lines.fail(
                    "crl",
                    errors::chain(&e),
                    "tunnel run refuses to start with it; fix or remove that file".into(),
                );
            }
            bundle_trust
        }
    }
}

fn root(lines: &mut Lines<'_>, bundle: &Path, index: usize, der: &CertificateDer<'_>, now: i64) {
    let name = format!("root {}", index + 1);
    let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) else {
        lines.fail(
            format!("{name}: parses"),
            format!(
                "{}: certificate {} does not parse",
                bundle.display(),
                index + 1
            ),
            "replace it with the PEM of the root CA certificate".into(),
        );
        return;
    };
    let what = format!(
        "{}: root {} ({})",
        bundle.display(),
        index + 1,
        cert.subject()
    );
    if cert.is_ca() {
        lines.ok(format!("{name}: CA"), format!("{what} is a CA certificate"));
    } else {
        lines.fail(
            format!("{name}: CA"),
            format!("{what} is not a CA certificate (no basicConstraints cA=true)"),
            "the bundle holds root CA certificates only (a leaf was put there?); remove it".into(),
        );
    }
    let (not_before, not_after) = (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    );
    let check = format!("{name}: validity");
    let rotate = "rotate the CA: make a new one (tunnel ca init), add its root to the bundle \
                  beside this one on every host, reissue every certificate from it, then \
                  remove this root";
    match life(not_before, not_after, now) {
        Life::Expired { ago } => lines.fail(
            check,
            format!(
                "{what} expired {} ago ({}): every certificate under it is refused",
                span(ago),
                timestamp(not_after)
            ),
            rotate.into(),
        ),
        Life::NotYet { left } => lines.fail(
            check,
            format!(
                "{what} is not valid for another {} ({})",
                span(left),
                timestamp(not_before)
            ),
            "check NTP on this host and on the CA's".into(),
        ),
        Life::Aging => lines.warn(
            check,
            format!(
                "{what} expires in {} ({}), past 2/3 of its lifetime",
                span(not_after - now),
                timestamp(not_after)
            ),
            rotate.into(),
        ),
        Life::Fresh => lines.ok(
            check,
            format!(
                "{what} is valid until {} (in {})",
                timestamp(not_after),
                span(not_after - now)
            ),
        ),
    }
}
