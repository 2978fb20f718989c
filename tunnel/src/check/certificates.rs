//! The certificates section: the node's and each workload's, from files (read, key, then
//! every rule of the leaf) or from an issuer directory (see `issuer`).

use std::path::Path;

use rustls_pki_types::{PrivateKeyDer, pem::PemObject as _};

use super::{
    Trusted, at, issuer, leaf,
    owner::{Leaf, Owner},
    report::{Lines, Report, Section},
};
use crate::{
    config::{CertSource, Config, Located, PodCertificates, Pods},
    errors,
    identity::{PodNames, Purpose, SpiffeId},
    tls::{self, Credential, MaterialError},
};

pub(super) fn check(report: &mut Report, config: &Config, trusted: Option<&Trusted>, now: i64) {
    let mut lines = Lines::new(report, Section::Certificates);
    let node = (
        Owner {
            who: "node".into(),
            id: &config.node.spiffe_id,
            purpose: Purpose::ServerAuth,
        },
        &config.node.credential,
    );
    let workloads = config.workloads.iter().map(|w| {
        let owner = Owner {
            who: format!("workload {}", w.name),
            id: &w.spiffe_id,
            purpose: Purpose::ClientAuth,
        };
        (owner, &w.credential)
    });
    for (owner, source) in std::iter::once(node).chain(workloads) {
        match source {
            CertSource::Files { cert, key } => {
                files(&mut lines, config, trusted, &owner, cert, key, now);
            }
            CertSource::Issuer { dir, ttl } => {
                issuer::check(&mut lines, config, trusted, &owner, dir, *ttl, now);
            }
        }
    }
    if let Some(pods) = &config.pods {
        pods_certificates(&mut lines, config, pods, trusted, now);
    }
}

/// `[pods]`: an issuer is judged as the daemon would use it, issuing for an identity of the
/// template's shape; files per identity can only be judged when a pod is added.
fn pods_certificates(
    lines: &mut Lines<'_>,
    config: &Config,
    pods: &Pods,
    trusted: Option<&Trusted>,
    now: i64,
) {
    let sample = pods.spiffe_id.render(&PodNames {
        trust_domain: &config.trust_domain,
        namespace: "default",
        name: "pod",
        service_account: Some("default"),
    });
    let Ok(sample) = sample else {
        // The template was checked at load; a rendering that fails here cannot happen.
        return;
    };
    match &pods.certificates {
        PodCertificates::Issuer { dir, ttl } => {
            let owner = Owner {
                who: format!("pods (as {sample})"),
                id: &sample,
                purpose: Purpose::ClientAuth,
            };
            issuer::check(lines, config, trusted, &owner, dir, *ttl, now);
        }
        PodCertificates::Files { dir } => {
            let example = dir.value.join(sample.path().trim_start_matches('/'));
            let message = format!(
                "each pod's certificate is read at its ADD from {}/cert.pem and key.pem (for {sample}), and judged then",
                example.display()
            );
            if dir.value.is_dir() {
                lines.ok("pods: certificate files", message);
            } else {
                lines.warn(
                    "pods: certificate files",
                    format!("{} does not exist yet; {message}", dir.value.display()),
                    format!(
                        "the daemon makes it at start; the outside issuer must write each identity's files there ({})",
                        at(config, &dir.site)
                    ),
                );
            }
        }
    }
}

fn files(
    lines: &mut Lines<'_>,
    config: &Config,
    trusted: Option<&Trusted>,
    owner: &Owner<'_>,
    cert: &Located<std::path::PathBuf>,
    key: &Located<std::path::PathBuf>,
    now: i64,
) {
    let who = &owner.who;
    let (cert_path, key_path) = (cert.value.as_path(), key.value.as_path());
    let chain = match tls::read_certificates(cert_path) {
        Ok(chain) => {
            lines.ok(
                format!("{who}: cert file"),
                format!(
                    "{} holds a leaf and {}",
                    cert_path.display(),
                    match chain.len() - 1 {
                        0 => "nothing behind it".to_string(),
                        1 => "one CA certificate behind it".to_string(),
                        n => format!("{n} CA certificates behind it"),
                    }
                ),
            );
            Some(chain)
        }
        Err(e) => {
            lines.fail(
                format!("{who}: cert file"),
                errors::chain(&e),
                format!(
                    "write the certificate there (PEM: the leaf, then its intermediate CA), or \
                     fix {}",
                    at(config, &cert.site)
                ),
            );
            None
        }
    };
    key_file(lines, config, owner, cert, key, chain.is_some());
    let Some(chain) = chain else {
        return;
    };
    let leaf = Leaf {
        who,
        id: owner.id,
        purpose: owner.purpose,
        origin: cert_path.display().to_string(),
        reissue: reissue(owner.id, cert_path, key_path),
    };
    leaf::check(lines, config, trusted, &leaf, &chain, now);
}

/// The key, matched against the certificate as `tunnel run` matches it; when the
/// certificate does not read, whether the key file at least holds a key.
fn key_file(
    lines: &mut Lines<'_>,
    config: &Config,
    owner: &Owner<'_>,
    cert: &Located<std::path::PathBuf>,
    key: &Located<std::path::PathBuf>,
    cert_read: bool,
) {
    let check = format!("{}: key", owner.who);
    let (cert_path, key_path) = (cert.value.as_path(), key.value.as_path());
    let fix_file = format!(
        "write the private key issued with the certificate there (PEM), or fix {}",
        at(config, &key.site)
    );
    if !cert_read {
        match PrivateKeyDer::from_pem_file(key_path) {
            Ok(_) => lines.ok(
                check,
                format!(
                    "{} holds a private key (not matched: the certificate does not read)",
                    key_path.display()
                ),
            ),
            Err(e) => {
                let error = MaterialError::ReadKey {
                    path: key_path.into(),
                    detail: e.to_string(),
                };
                lines.fail(check, errors::chain(&error), fix_file);
            }
        }
        return;
    }
    match Credential::load(cert_path, key_path) {
        Ok(_) => lines.ok(
            check,
            format!(
                "{} holds the private key of the certificate in {}",
                key_path.display(),
                cert_path.display()
            ),
        ),
        Err(e @ MaterialError::KeyMismatch { .. }) => lines.fail(
            check,
            errors::chain(&e),
            format!(
                "install the key that was issued with {} (or reissue both: {})",
                cert_path.display(),
                reissue(owner.id, cert_path, key_path)
            ),
        ),
        Err(e @ (MaterialError::ReadKey { .. } | MaterialError::UnsupportedKey { .. })) => {
            lines.fail(check, errors::chain(&e), fix_file);
        }
        // The leaf itself does not parse: the lines after this one say so.
        Err(e) => lines.fail(
            check,
            format!("not matched: {}", errors::chain(&e)),
            format!(
                "replace {} with a readable certificate",
                cert_path.display()
            ),
        ),
    }
}

/// How to get a new certificate for `id` into these files, for hints.
fn reissue(id: &SpiffeId, cert: &Path, key: &Path) -> String {
    let dir = cert.parent().unwrap_or(Path::new("."));
    // `tunnel ca issue` writes DIR/cert.pem and DIR/key.pem.
    if cert.file_name().is_some_and(|n| n == "cert.pem") && key == dir.join("key.pem") {
        format!(
            "tunnel ca issue --ca CA_DIR --spiffe-id {id} --out {} --force",
            dir.display()
        )
    } else {
        format!(
            "tunnel ca issue --ca CA_DIR --spiffe-id {id} --out DIR, then install DIR/cert.pem \
             as {} and DIR/key.pem as {}",
            cert.display(),
            key.display()
        )
    }
}
