//! A certificate the daemon issues itself (`issuer` + `ttl`): the issuer directory and its
//! intermediate CA, and a certificate issued from it in memory, exactly as the daemon
//! issues one at start, judged by the verifier peers use.

use std::{path::PathBuf, time::Duration};

use x509_parser::{certificate::X509Certificate, prelude::FromDer as _};

use super::{
    Life, Trusted, at, chain, leaf, life,
    owner::{Leaf, Owner},
    report::Lines,
    span,
};
use crate::{
    ca::{Ca, CaFiles},
    config::{Config, Located},
    credentials::issued::IssuerState,
    duration, errors,
    identity::timestamp,
    tls,
};

pub(super) fn check(
    lines: &mut Lines<'_>,
    config: &Config,
    trusted: Option<&Trusted>,
    owner: &Owner<'_>,
    dir: &Located<PathBuf>,
    ttl: Duration,
    now: i64,
) {
    let who = &owner.who;
    let files = CaFiles::new(&dir.value);
    let rotate = rotate(dir);
    let missing: Vec<String> = [&files.intermediate_cert, &files.intermediate_key]
        .into_iter()
        .filter(|file| !file.is_file())
        .map(|file| file.display().to_string())
        .collect();
    if !missing.is_empty() {
        lines.fail(
            format!("{who}: issuer files"),
            format!("{} is missing", missing.join(" and ")),
            format!(
                "{rotate}, or point {} at the directory that holds them",
                at(config, &dir.site)
            ),
        );
        return;
    }
    lines.ok(
        format!("{who}: issuer files"),
        format!(
            "{} holds intermediate.pem and intermediate.key",
            dir.value.display()
        ),
    );
    let ca = match Ca::load_for(&dir.value, Some(&config.trust_domain)) {
        Ok(ca) => ca,
        Err(e) => {
            lines.fail(format!("{who}: issuer loads"), errors::chain(&e), rotate);
            return;
        }
    };
    lines.ok(
        format!("{who}: issuer loads"),
        format!(
            "the issuer in {} loads (trust domain {})",
            dir.value.display(),
            ca.trust_domain
        ),
    );
    let cert_file = files.intermediate_cert.display();
    let intermediate = tls::read_certificates(&files.intermediate_cert)
        .ok()
        .and_then(|certs| certs.into_iter().next());
    let parsed = intermediate
        .as_ref()
        .and_then(|der| X509Certificate::from_der(der.as_ref()).ok());
    let Some((_, cert)) = parsed else {
        // Ca::load read it; this cannot fail unless the file changed in between.
        return;
    };
    if cert.is_ca() {
        lines.ok(
            format!("{who}: issuer CA"),
            format!("{cert_file} is a CA certificate ({})", cert.subject()),
        );
    } else {
        lines.fail(
            format!("{who}: issuer CA"),
            format!(
                "{cert_file} is not a CA certificate (no basicConstraints cA=true): it cannot issue"
            ),
            rotate.clone(),
        );
    }
    let (not_before, not_after) = (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    );
    match life(not_before, not_after, now) {
        Life::Expired { ago } => {
            lines.fail(
                format!("{who}: issuer validity"),
                format!(
                    "{cert_file} expired {} ago ({}): certificates it issues are refused",
                    span(ago),
                    timestamp(not_after)
                ),
                rotate,
            );
            return;
        }
        Life::NotYet { left } => lines.fail(
            format!("{who}: issuer validity"),
            format!(
                "{cert_file} is not valid for another {} ({})",
                span(left),
                timestamp(not_before)
            ),
            "check NTP on this host and on the CA's".into(),
        ),
        Life::Fresh | Life::Aging => lines.ok(
            format!("{who}: issuer validity"),
            format!(
                "{cert_file} is valid from {} until {}",
                timestamp(not_before),
                timestamp(not_after)
            ),
        ),
    }
    let left = not_after - now;
    let ttl_text = duration::format(ttl);
    if left < ttl.as_secs() as i64 {
        lines.warn(
            format!("{who}: issuer ttl"),
            format!(
                "{cert_file} expires in {} ({}), sooner than the ttl of {ttl_text}: certificates \
                 are cut to its expiry, and none can be issued after it",
                span(left),
                timestamp(not_after)
            ),
            format!(
                "rotate the issuer before {}: {rotate}",
                timestamp(not_after)
            ),
        );
    } else {
        lines.ok(
            format!("{who}: issuer ttl"),
            format!(
                "{cert_file} is valid for another {}, longer than the ttl of {ttl_text}",
                span(left)
            ),
        );
    }
    issued(lines, config, trusted, owner, dir, ttl, now);
}

/// What to do about an issuer that cannot issue, for hints.
fn rotate(dir: &Located<PathBuf>) -> String {
    format!(
        "put an intermediate CA of the trust domain in {} (tunnel ca init --out DIR writes \
         intermediate.pem and intermediate.key; its root goes into the bundle)",
        dir.value.display()
    )
}

/// A certificate issued as the daemon issues it at start, judged as peers judge it.
fn issued(
    lines: &mut Lines<'_>,
    config: &Config,
    trusted: Option<&Trusted>,
    owner: &Owner<'_>,
    dir: &Located<PathBuf>,
    ttl: Duration,
    now: i64,
) {
    let credential = IssuerState::load(&dir.value, ttl, owner.id.trust_domain())
        .and_then(|mut issuer| issuer.issue(owner.id));
    let credential = match credential {
        Ok(credential) => credential,
        Err(e) => {
            lines.fail(
                format!("{}: chain", owner.who),
                errors::chain(&e),
                rotate(dir),
            );
            return;
        }
    };
    let leaf = Leaf {
        who: &owner.who,
        id: owner.id,
        purpose: owner.purpose,
        origin: format!("a certificate issued from {}", dir.value.display()),
        reissue: rotate(dir),
    };
    chain::check(lines, config, trusted, &leaf, &credential.key.cert, now);
    leaf::revocation(lines, trusted, &leaf, &credential.key.cert);
}
