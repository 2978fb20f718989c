//! Revocations judged the way the daemon judges peers: the CRL that `revoke` writes is loaded
//! with the bundle by `tls::Trust::load` and checked by both verifiers.

use std::{
    net::Ipv4Addr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use rustls::{
    CertificateError, Error,
    client::danger::ServerCertVerifier as _,
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::danger::ClientCertVerifier as _,
};
use x509_parser::{prelude::FromDer as _, revocation_list::CertificateRevocationList};

use super::{RevocationReason as R, *};
use crate::{
    ca::{self, CaFiles, IssueOptions},
    identity::{CertSummary, Purpose, TrustDomain, svid_identity},
    tls,
};

fn td() -> TrustDomain {
    "example.org".parse().unwrap()
}

/// A CA for example.org in a temporary directory, and the leaves it issued.
struct Lab {
    dir: tempfile::TempDir,
    ca: CaFiles,
}

impl Lab {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca::init(&ca::InitOptions {
            trust_domain: td(),
            out: dir.path().join("ca"),
            force: false,
            root_ttl: ca::DEFAULT_ROOT_TTL,
            intermediate_ttl: ca::DEFAULT_INTERMEDIATE_TTL,
        })
        .unwrap();
        Self { dir, ca }
    }

    /// Issues `spiffe://example.org/<name>` into `<name>/cert.pem`; returns that file.
    fn issue(&self, name: &str) -> PathBuf {
        let issued = ca::issue(&IssueOptions {
            ca: self.ca.dir.clone(),
            spiffe_id: format!("spiffe://example.org/{name}"),
            ttl: ca::DEFAULT_LEAF_TTL,
            out: self.dir.path().join(name),
            force: false,
        })
        .unwrap();
        issued.cert
    }

    fn crl(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn revoke(&self, cert: &Path, crl: &Path, reason: R) -> Revocation {
        revoke(&self.options(cert, crl, reason)).unwrap()
    }

    fn refusal(&self, cert: &Path, crl: &Path) -> String {
        let options = self.options(cert, crl, R::Unspecified);
        revoke(&options).unwrap_err().to_string()
    }

    fn options(&self, cert: &Path, crl: &Path, reason: R) -> RevokeOptions {
        RevokeOptions {
            ca: self.ca.dir.clone(),
            cert: cert.into(),
            crl: crl.into(),
            reason,
            next_update: DEFAULT_NEXT_UPDATE,
        }
    }

    fn trust(&self, crls: &[&Path]) -> tls::Trust {
        let crls: Vec<PathBuf> = crls.iter().map(|c| c.to_path_buf()).collect();
        tls::Trust::load(&self.ca.bundle, &crls).unwrap()
    }
}

fn chain(cert: &Path) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Entries and CRL number.
fn counts(revocation: &Revocation) -> (usize, String) {
    (revocation.entries, revocation.crl_number.to_string())
}

/// What the inbound side (a caller presenting `chain`) and the outbound side (a peer daemon
/// presenting it, pinned to its own identity) say.
fn verdicts(trust: &tls::Trust, chain: &[CertificateDer<'static>]) -> [Result<(), Error>; 2] {
    let now = UnixTime::now();
    let client = tls::SpiffeClientVerifier::new(trust, td())
        .unwrap()
        .verify_client_cert(&chain[0], &chain[1..], now)
        .map(|_| ());
    let id = svid_identity(chain[0].as_ref(), Purpose::ServerAuth).unwrap();
    let name = ServerName::IpAddress(Ipv4Addr::new(10, 0, 0, 2).into());
    let server = tls::SpiffeServerVerifier::new(trust, td(), tls::PeerExpectation::Pinned(id))
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], now)
        .map(|_| ());
    [client, server]
}

fn assert_revoked(trust: &tls::Trust, cert: &Path) {
    for verdict in verdicts(trust, &chain(cert)) {
        assert!(
            matches!(
                verdict,
                Err(Error::InvalidCertificate(CertificateError::Revoked))
            ),
            "{} should be refused as revoked: {verdict:?}",
            cert.display()
        );
    }
}

fn assert_accepted(trust: &tls::Trust, cert: &Path) {
    for verdict in verdicts(trust, &chain(cert)) {
        verdict.unwrap_or_else(|e| panic!("{} should be accepted: {e:?}", cert.display()));
    }
}

#[test]
fn a_revoked_leaf_is_refused_on_both_sides_and_its_neighbour_is_not() {
    let lab = Lab::new();
    let batch = lab.issue("batch");
    let frontend = lab.issue("frontend");
    let crl = lab.crl("crl.pem");

    let done = lab.revoke(&batch, &crl, R::KeyCompromise);
    assert_eq!(done.signer, Signer::Intermediate);
    let leaf = CertSummary::parse(chain(&batch)[0].as_ref()).unwrap();
    assert_eq!(done.serial, leaf.serial);
    assert_eq!(done.uris, ["spiffe://example.org/batch"]);
    assert_eq!(counts(&done), (1, "1".into()));
    assert_eq!(done.already_revoked_at, None);

    let trust = lab.trust(&[&crl]);
    assert_revoked(&trust, &batch);
    assert_accepted(&trust, &frontend);
    // Without the CRL the same leaf passes: the refusal is the CRL's doing.
    assert_accepted(&lab.trust(&[]), &batch);

    let entry = tls::revocation_entry(&trust, &chain(&batch))
        .expect("listed")
        .to_string();
    assert!(
        entry.starts_with(&format!("serial {} (the leaf) revoked at ", done.serial)),
        "{entry}"
    );
    assert!(entry.ends_with(": KeyCompromise"), "{entry}");
    assert_eq!(tls::revocation_entry(&trust, &chain(&frontend)), None);

    // Replaced by a rename, so no temporary file is left; public, as peers read it.
    let mode = std::fs::metadata(&crl).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let names: Vec<_> = std::fs::read_dir(lab.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.contains("crl"))
        .collect();
    assert_eq!(names, ["crl.pem"]);
}

#[test]
fn a_revoked_intermediate_refuses_every_leaf_under_it() {
    let lab = Lab::new();
    let leaves = [lab.issue("batch"), lab.issue("node/host-b")];
    let crl = lab.crl("root-crl.pem");

    let done = lab.revoke(&lab.ca.intermediate_cert, &crl, R::CaCompromise);
    assert_eq!(done.signer, Signer::Root);
    assert_eq!(done.uris, ["spiffe://example.org"]);

    let trust = lab.trust(&[&crl]);
    for leaf in &leaves {
        assert_revoked(&trust, leaf);
        let entry = tls::revocation_entry(&trust, &chain(leaf))
            .expect("listed")
            .to_string();
        assert!(
            entry.starts_with(&format!(
                "serial {} (an intermediate CA of its chain) revoked at ",
                done.serial
            )),
            "{entry}"
        );
        assert!(entry.ends_with(": CaCompromise"), "{entry}");
    }
}

#[test]
fn revoking_again_extends_the_crl() {
    let lab = Lab::new();
    let (batch, frontend) = (lab.issue("batch"), lab.issue("frontend"));
    let crl = lab.crl("crl.pem");

    lab.revoke(&batch, &crl, R::KeyCompromise);
    let second = lab.revoke(&frontend, &crl, R::Superseded);
    assert_eq!(counts(&second), (2, "2".into()));
    let der = tls::read_crls(&crl).unwrap().remove(0);
    let (_, parsed) = CertificateRevocationList::from_der(der.as_ref()).unwrap();
    assert_eq!(parsed.iter_revoked_certificates().count(), 2);
    assert_eq!(parsed.crl_number().unwrap().to_string(), "2");
    let trust = lab.trust(&[&crl]);
    assert_revoked(&trust, &batch);
    assert_revoked(&trust, &frontend);

    // Once more: not an error, the first entry (and its reason) stays, the list is re-signed.
    let again = lab.revoke(&batch, &crl, R::Unspecified);
    assert!(again.already_revoked_at.is_some());
    assert_eq!(counts(&again), (2, "3".into()));
    let trust = lab.trust(&[&crl]);
    let entry = tls::revocation_entry(&trust, &chain(&batch))
        .unwrap()
        .to_string();
    assert!(entry.ends_with(": KeyCompromise"), "{entry}");
}

#[test]
fn refusals_name_the_file_and_leave_the_crl_alone() {
    let lab = Lab::new();
    let other = Lab::new();
    let batch = lab.issue("batch");
    let crl = lab.crl("crl.pem");
    lab.revoke(&batch, &crl, R::KeyCompromise);
    let before = std::fs::read(&crl).unwrap();

    // A certificate of another CA of the same trust domain: same names, other keys.
    let stranger = other.issue("batch");
    let error = lab.refusal(&stranger, &crl);
    assert!(
        error.contains(&format!("{} was issued by neither", stranger.display())),
        "{error}"
    );

    // A CRL of another CA (same names again), and the root's CRL for a leaf.
    let foreign = other.crl("crl.pem");
    other.revoke(&other.issue("frontend"), &foreign, R::Superseded);
    let root_crl = lab.crl("root-crl.pem");
    lab.revoke(&lab.ca.intermediate_cert, &root_crl, R::Superseded);
    for crl in [&foreign, &root_crl] {
        let error = lab.refusal(&batch, crl);
        assert!(
            error.contains(&format!("{} is the CRL of another CA", crl.display())),
            "{error}"
        );
    }

    // Files that are not one CRL: a certificate, text, DER garbage, two CRLs.
    let not_crl = lab.crl("not-a-crl.pem");
    let two = [before.clone(), before.clone()].concat();
    for (contents, expected) in [
        (std::fs::read(&batch).unwrap(), "no `X509 CRL` PEM block"),
        (b"hello\n".to_vec(), "no `X509 CRL` PEM block"),
        (
            vec![0x30, 0x03, 0x02, 0x01, 0x01],
            "is not a certificate revocation list",
        ),
        (two, "holds 2 CRLs"),
    ] {
        std::fs::write(&not_crl, &contents).unwrap();
        let error = lab.refusal(&batch, &not_crl);
        assert!(error.contains(&not_crl.display().to_string()), "{error}");
        assert!(error.contains(expected), "{error}");
        assert_eq!(std::fs::read(&not_crl).unwrap(), contents, "left as it was");
    }

    // The root itself, and a --cert that is no certificate.
    let error = lab.refusal(&lab.ca.root_cert, &root_crl);
    assert!(
        error.contains("is the root CA itself, which no CRL can revoke"),
        "{error}"
    );
    let error = lab.refusal(&crl, &crl);
    assert!(
        error.contains(&format!("cannot read a certificate from {}", crl.display())),
        "{error}"
    );
    // A CRL that would be stale from the start.
    let options = RevokeOptions {
        next_update: std::time::Duration::ZERO,
        ..lab.options(&batch, &crl, R::Superseded)
    };
    let error = revoke(&options).unwrap_err().to_string();
    assert!(error.starts_with("--next-update 0ms: "), "{error}");
    assert_eq!(std::fs::read(&crl).unwrap(), before);
}
