//! One certificate, every rule on its own line: what peers decide (the daemon's verifiers),
//! then each reason they could have for it (dates, EKU, SPIFFE ID, CA, revocation) and the
//! time left, so every problem of a certificate shows at once.

use rustls_pki_types::CertificateDer;
use x509_parser::{certificate::X509Certificate, prelude::FromDer as _};

use super::{Life, Trusted, chain, life, owner::Leaf, report::Lines, span};
use crate::{
    config::Config,
    identity::{CertSummary, SpiffeId, SvidError, svid_rules, timestamp},
    tls::{self, CertificateProblem, VerifyError},
};

pub(super) fn check(
    lines: &mut Lines<'_>,
    config: &Config,
    trusted: Option<&Trusted>,
    leaf: &Leaf<'_>,
    chain: &[CertificateDer<'static>],
    now: i64,
) {
    let rules = match svid_rules(chain[0].as_ref(), leaf.purpose) {
        Ok(rules) => rules,
        Err(e) => {
            lines.fail(
                leaf.check("parses"),
                format!("{}: {e}", leaf.origin),
                format!("replace it: {}", leaf.reissue),
            );
            return;
        }
    };
    let summary = CertSummary::parse(chain[0].as_ref()).expect("it parsed just above");
    chain::check(lines, config, trusted, leaf, chain, now);
    validity(lines, leaf, &summary, now);
    match rules.extended_key_usage {
        Ok(()) => lines.ok(
            leaf.check("EKU"),
            format!(
                "{} allows {} (extended key usages: {})",
                leaf.origin,
                leaf.purpose,
                usages(&chain[0])
            ),
        ),
        Err(_) => lines.fail(
            leaf.check("EKU"),
            format!(
                "{} has no {} extended key usage (it has: {}): peers refuse it {}",
                leaf.origin,
                leaf.purpose,
                usages(&chain[0]),
                leaf.role()
            ),
            format!(
                "reissue it with the {} EKU: {} (it sets clientAuth and serverAuth), or openssl \
                 x509 -req … -extfile with extendedKeyUsage=clientAuth,serverAuth",
                leaf.purpose, leaf.reissue
            ),
        ),
    }
    identity(lines, config, leaf, rules.id, &summary);
    match rules.leaf {
        Ok(()) => lines.ok(
            leaf.check("leaf"),
            format!(
                "{} is a leaf (not a CA, no certificate- or CRL-signing key usage)",
                leaf.origin
            ),
        ),
        Err(e) => lines.fail(
            leaf.check("leaf"),
            format!("{}: {e}", leaf.origin),
            format!(
                "the file must start with the {}'s own certificate, not a CA's: {}",
                leaf.who, leaf.reissue
            ),
        ),
    }
    revocation(lines, trusted, leaf, chain);
    expiry(lines, leaf, &summary, now);
}

/// Whether a configured CRL lists the leaf or a CA of its chain (no line without CRLs).
pub(super) fn revocation(
    lines: &mut Lines<'_>,
    trusted: Option<&Trusted>,
    leaf: &Leaf<'_>,
    chain: &[CertificateDer<'static>],
) {
    let Some(trusted) = trusted.filter(|t| !t.trust.crls.is_empty()) else {
        return;
    };
    match tls::revocation_entry(&trusted.trust, chain) {
        Some(entry) if entry.is_leaf() => lines.fail(
            leaf.check("revocation"),
            format!("{}: {entry}, in a configured CRL", leaf.origin),
            format!(
                "a revoked certificate stays refused: issue a new one ({})",
                leaf.reissue
            ),
        ),
        // A new leaf from the same intermediate would be refused as well.
        Some(entry) => lines.fail(
            leaf.check("revocation"),
            format!("{}: {entry}, in a configured CRL", leaf.origin),
            "everything that CA issued is refused: issue this certificate from another \
             intermediate CA of the trust domain (a new one signed by the root, then `tunnel \
             ca issue` from it) and replace the revoked intermediate in the cert file"
                .to_string(),
        ),
        None => lines.ok(
            leaf.check("revocation"),
            format!(
                "{}: no certificate of its chain is in the {} configured CRL(s)",
                leaf.origin,
                trusted.trust.crls.len()
            ),
        ),
    }
}

fn validity(lines: &mut Lines<'_>, leaf: &Leaf<'_>, summary: &CertSummary, now: i64) {
    let check = leaf.check("validity");
    let (not_before, not_after) = (summary.not_before, summary.not_after);
    match life(not_before, not_after, now) {
        Life::Expired { ago } => lines.fail(
            check,
            format!(
                "{} expired {} ago (not after {})",
                leaf.origin,
                span(ago),
                timestamp(not_after)
            ),
            format!("renew it: {}", leaf.reissue),
        ),
        // Issuers backdate by minutes for exactly this; a few minutes ahead is a clock.
        Life::NotYet { left } if left < 300 => lines.fail(
            check,
            format!(
                "{} is not valid for another {} (not before {}): clock skew suspected: check NTP \
                 on this host and the issuer",
                leaf.origin,
                span(left),
                timestamp(not_before)
            ),
            "compare the clocks (chronyc tracking or timedatectl, here and on the issuer); peers \
             whose clock agrees with this host's refuse it until then"
                .into(),
        ),
        Life::NotYet { left } => lines.fail(
            check,
            format!(
                "{} is not valid for another {} (not before {})",
                leaf.origin,
                span(left),
                timestamp(not_before)
            ),
            format!(
                "it was issued for a later time: reissue it valid from now ({})",
                leaf.reissue
            ),
        ),
        Life::Fresh | Life::Aging => lines.ok(
            check,
            format!(
                "{} is valid from {} until {}",
                leaf.origin,
                timestamp(not_before),
                timestamp(not_after)
            ),
        ),
    }
}

fn identity(
    lines: &mut Lines<'_>,
    config: &Config,
    leaf: &Leaf<'_>,
    found: Result<SpiffeId, SvidError>,
    summary: &CertSummary,
) {
    let check = leaf.check("SPIFFE ID");
    let problem = match found {
        Ok(found) if !found.is_in(&config.trust_domain) => VerifyError::ForeignTrustDomain {
            id: found,
            trust_domain: config.trust_domain.clone(),
        }
        .to_string(),
        Ok(found) if &found != leaf.id => CertificateProblem::OtherIdentity {
            found,
            expected: leaf.id.clone(),
        }
        .to_string(),
        Ok(_) => {
            lines.ok(check, format!("{} is {}", leaf.origin, leaf.id));
            return;
        }
        Err(SvidError::MultipleUriSans(n)) => format!(
            "the certificate has {n} URI SANs ({}); an X.509-SVID has exactly one",
            summary.uris.join(", ")
        ),
        Err(e) => e.to_string(),
    };
    lines.fail(
        check,
        format!("{}: {problem}", leaf.origin),
        format!(
            "reissue it with exactly one URI SAN, {}: {}",
            leaf.id, leaf.reissue
        ),
    );
}

fn expiry(lines: &mut Lines<'_>, leaf: &Leaf<'_>, summary: &CertSummary, now: i64) {
    let check = leaf.check("expiry");
    let not_after = summary.not_after;
    match life(summary.not_before, not_after, now) {
        Life::Expired { ago } => lines.fail(
            check,
            format!(
                "{} expired {} ago ({})",
                leaf.origin,
                span(ago),
                timestamp(not_after)
            ),
            format!("renew it: {}", leaf.reissue),
        ),
        Life::Aging => lines.warn(
            check,
            format!(
                "{} expires in {} ({}), past its warning point (2/3 of its lifetime, or a day \
                 before expiry)",
                leaf.origin,
                span(not_after - now),
                timestamp(not_after)
            ),
            format!(
                "it should have been renewed by now; whatever renews it is not working: {}",
                leaf.reissue
            ),
        ),
        Life::Fresh | Life::NotYet { .. } => lines.ok(
            check,
            format!(
                "{} expires in {} ({})",
                leaf.origin,
                span(not_after - now),
                timestamp(not_after)
            ),
        ),
    }
}

/// The extended key usages of a certificate, by name.
fn usages(der: &CertificateDer<'_>) -> String {
    let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) else {
        return "unreadable".into();
    };
    let Ok(Some(eku)) = cert.extended_key_usage() else {
        return "no extended key usage extension".into();
    };
    let eku = &eku.value;
    let mut names: Vec<String> = [
        (eku.server_auth, "serverAuth"),
        (eku.client_auth, "clientAuth"),
        (eku.any, "anyExtendedKeyUsage"),
        (eku.code_signing, "codeSigning"),
        (eku.email_protection, "emailProtection"),
        (eku.time_stamping, "timeStamping"),
        (eku.ocsp_signing, "OCSPSigning"),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .map(|(_, name)| name.to_string())
    .collect();
    names.extend(eku.other.iter().map(ToString::to_string));
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
