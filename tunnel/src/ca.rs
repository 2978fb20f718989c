//! A small built-in CA for labs, tests and small setups: a root and an intermediate per trust
//! domain, and short-lived X.509-SVIDs for workloads and nodes. Files, not a service:
//!
//! ```text
//! DIR/root.pem  root.key  intermediate.pem  intermediate.key  bundle.pem (= the roots)
//!     crl.pem (the intermediate's CRL, empty until `tunnel ca revoke` extends it)
//! OUT/cert.pem (leaf + intermediate)  key.pem
//! CRL files (`tunnel ca revoke`), one per issuing CA, wherever --crl says
//! ```
//! Keys are ECDSA P-256, PKCS#8, created with mode 0600 (never world-readable, not even
//! between create and chmod).

mod files;
mod leaf;
mod revoke;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

pub use files::{CaFiles, IssuedFiles};
pub use leaf::{LeafSpec, valid_until};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
pub use revoke::{DEFAULT_NEXT_UPDATE, Revocation, RevokeOptions, Signer, revoke};
use time::OffsetDateTime;

use crate::identity::{IdError, SpiffeId, TrustDomain};

pub const DEFAULT_ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 86_400);
pub const DEFAULT_INTERMEDIATE_TTL: Duration = Duration::from_secs(2 * 365 * 86_400);
pub const DEFAULT_LEAF_TTL: Duration = Duration::from_secs(86_400);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    Id(#[from] IdError),
    #[error("{path} already exists; pass --force to replace it")]
    Exists { path: PathBuf },
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the CA file {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("{id} is not in the CA's trust domain {trust_domain} (CA at {dir})")]
    ForeignTrustDomain {
        id: SpiffeId,
        trust_domain: TrustDomain,
        dir: PathBuf,
    },
    #[error("a TTL of zero issues a certificate that is never valid")]
    ZeroTtl,
    #[error(
        "a TTL of {ttl} reaches past the intermediate's expiry ({expiry}); issue a shorter one or rotate the CA"
    )]
    TtlPastIssuer { ttl: String, expiry: String },
    #[error("certificate generation failed")]
    Generate(#[from] rcgen::Error),
    #[error(
        "cannot read a certificate from {path}: {detail}; --cert takes the PEM file of the \
         certificate to revoke (the cert.pem of `tunnel ca issue`, or intermediate.pem)"
    )]
    Certificate { path: PathBuf, detail: String },
    #[error(
        "{cert} was issued by neither {root} nor {intermediate}; revoke it with the CA that issued it"
    )]
    ForeignCertificate {
        cert: PathBuf,
        root: PathBuf,
        intermediate: PathBuf,
    },
    #[error(
        "{cert} is the root CA itself, which no CRL can revoke; take it out of {bundle} (and \
         every copy of it) instead"
    )]
    RootNotRevocable { cert: PathBuf, bundle: PathBuf },
    #[error(
        "{path} is not a certificate revocation list ({detail}); pass another --crl file or move \
         this one away"
    )]
    NotACrl { path: PathBuf, detail: String },
    #[error(
        "{path} holds {count} CRLs; `tunnel ca revoke` extends a file holding exactly one (one \
         file per issuing CA)"
    )]
    SeveralCrls { path: PathBuf, count: usize },
    #[error(
        "{path} is the CRL of another CA than the {signer} CA in {dir}, which issued {cert}; each \
         CA's CRL goes in a file of its own: pass another --crl file (and list both in crl = [...])"
    )]
    ForeignCrl {
        path: PathBuf,
        signer: Signer,
        dir: PathBuf,
        cert: PathBuf,
    },
    #[error("--next-update {next_update}: {why}")]
    InvalidNextUpdate {
        next_update: String,
        why: &'static str,
    },
}

/// What `tunnel ca init` makes.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub trust_domain: TrustDomain,
    pub out: PathBuf,
    pub force: bool,
    pub root_ttl: Duration,
    pub intermediate_ttl: Duration,
}

/// What `tunnel ca issue` makes.
#[derive(Clone, Debug)]
pub struct IssueOptions {
    pub ca: PathBuf,
    pub spiffe_id: String,
    pub ttl: Duration,
    pub out: PathBuf,
    pub force: bool,
}

/// Creates a CA: a root, an intermediate it signs, and the bundle (the root).
pub fn init(options: &InitOptions) -> Result<files::CaFiles, CaError> {
    let files = files::CaFiles::new(&options.out);
    files.prepare(options.force)?;
    let now = OffsetDateTime::now_utc();
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let root_params = ca_params(&options.trust_domain, "root", 1, now, options.root_ttl)?;
    let root_cert = root_params.self_signed(&root_key)?;
    let root = Issuer::new(root_params, root_key);

    let intermediate_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let intermediate_ttl = options.intermediate_ttl.min(options.root_ttl);
    let intermediate_params = ca_params(
        &options.trust_domain,
        "intermediate",
        0,
        now,
        intermediate_ttl,
    )?;
    let intermediate_cert = intermediate_params.signed_by(&intermediate_key, &root)?;
    let intermediate_der = intermediate_cert.der().to_vec();
    let intermediate = Issuer::new(intermediate_params, intermediate_key);
    let crl = revoke::empty_crl(&intermediate, &intermediate_der, now)?;

    files.write_key(&files.root_key, &root.key().serialize_pem())?;
    files.write_key(&files.intermediate_key, &intermediate.key().serialize_pem())?;
    files.write_public(&files.root_cert, &root_cert.pem())?;
    files.write_public(&files.intermediate_cert, &intermediate_cert.pem())?;
    files.write_public(&files.bundle, &root_cert.pem())?;
    files.write_public(&files.crl, &crl)?;
    Ok(files)
}

/// Issues a workload or node certificate after checking the request.
pub fn issue(options: &IssueOptions) -> Result<files::IssuedFiles, CaError> {
    let ca = Ca::load(&options.ca)?;
    let id: SpiffeId = options.spiffe_id.parse()?;
    if !id.is_in(&ca.trust_domain) {
        return Err(CaError::ForeignTrustDomain {
            id,
            trust_domain: ca.trust_domain.clone(),
            dir: options.ca.clone(),
        });
    }
    if options.ttl.is_zero() {
        return Err(CaError::ZeroTtl);
    }
    let spec = LeafSpec::workload(&id, options.ttl);
    if spec.not_after > ca.not_after {
        return Err(CaError::TtlPastIssuer {
            ttl: crate::duration::format(options.ttl),
            expiry: crate::identity::timestamp(ca.not_after.unix_timestamp()),
        });
    }
    ca.issue(&spec, &options.out, options.force)
}

/// A loaded CA (its intermediate signs leaves).
pub struct Ca {
    pub trust_domain: TrustDomain,
    issuer: Issuer<'static, KeyPair>,
    intermediate_pem: String,
    pub not_after: OffsetDateTime,
}

/// A certificate issued in memory: the chain (leaf, intermediate) and the leaf's key, PKCS#8.
pub struct InMemory {
    pub chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    pub key: rustls_pki_types::PrivateKeyDer<'static>,
}

impl Ca {
    /// The CA in `dir`, for the trust domain its certificate names (a `spiffe://<trust
    /// domain>` URI SAN, as `tunnel ca init` writes).
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        Self::load_for(dir, None)
    }

    /// The CA in `dir`, for the trust domain its certificate names or, if it names none,
    /// for `trust_domain`: the X.509-SVID specification asks nothing of a signing
    /// certificate's SANs, and existing cluster CAs (Istio's `cacerts`, most cert-manager
    /// issuers) have none. A CA that names another trust domain than `trust_domain` keeps
    /// its own, and refuses to issue outside it.
    pub fn load_for(dir: &Path, trust_domain: Option<&TrustDomain>) -> Result<Self, CaError> {
        let files = files::CaFiles::new(dir);
        let cert_pem = files::read(&files.intermediate_cert)?;
        let key_pem = files::read(&files.intermediate_key)?;
        let read_error = |path: &Path, detail: String| CaError::Read {
            path: path.into(),
            detail,
        };
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| read_error(&files.intermediate_key, e.to_string()))?;
        let summary = files::intermediate_summary(&files.intermediate_cert, &cert_pem)?;
        let named = summary
            .uris
            .iter()
            .find_map(|uri| TrustDomain::from_spiffe_uri(uri).ok());
        let trust_domain = named.or_else(|| trust_domain.cloned()).ok_or_else(|| {
            read_error(
                &files.intermediate_cert,
                "no spiffe://<trust domain> URI SAN, and no trust domain was given for it".into(),
            )
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| read_error(&files.intermediate_cert, e.to_string()))?;
        let not_after = OffsetDateTime::from_unix_timestamp(summary.not_after)
            .map_err(|e| read_error(&files.intermediate_cert, e.to_string()))?;
        Ok(Self {
            trust_domain,
            issuer,
            intermediate_pem: cert_pem,
            not_after,
        })
    }

    /// Signs a leaf as described with a new key, both kept in memory: the daemon's own
    /// certificates (`issuer` in the config) never touch the disk.
    pub fn issue_in_memory(&self, spec: &LeafSpec) -> Result<InMemory, CaError> {
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject};
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = spec.params()?.signed_by(&key, &self.issuer)?;
        let intermediate = CertificateDer::from_pem_slice(self.intermediate_pem.as_bytes())
            .map_err(|e| CaError::Read {
                path: "intermediate.pem".into(),
                detail: e.to_string(),
            })?;
        Ok(InMemory {
            chain: vec![cert.der().clone(), intermediate],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// Signs a leaf as described and writes `cert.pem` (leaf + intermediate) and `key.pem`.
    /// No checks: [`issue`] checks requests; tests use this to mint broken certificates.
    pub fn issue(
        &self,
        spec: &LeafSpec,
        out: &Path,
        force: bool,
    ) -> Result<files::IssuedFiles, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = spec.params()?.signed_by(&key, &self.issuer)?;
        let issued = files::IssuedFiles::new(out);
        issued.prepare(force)?;
        files::write_key_file(&issued.key, &key.serialize_pem())?;
        files::write_public_file(
            &issued.cert,
            &format!("{}{}", cert.pem(), self.intermediate_pem),
        )?;
        Ok(issued)
    }
}

fn ca_params(
    trust_domain: &TrustDomain,
    role: &str,
    path_len: u8,
    now: OffsetDateTime,
    ttl: Duration,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, trust_domain.to_string());
    name.push(
        DnType::CommonName,
        format!("tunnel {role} CA for {trust_domain}"),
    );
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    // A SPIFFE signing certificate names its trust domain with no path. No URI name
    // constraints: webpki cannot evaluate them and would refuse every leaf.
    params.subject_alt_names = vec![SanType::URI(format!("spiffe://{trust_domain}").try_into()?)];
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = valid_until(now, ttl);
    params.serial_number = Some(leaf::random_serial());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

#[cfg(test)]
mod tests;
