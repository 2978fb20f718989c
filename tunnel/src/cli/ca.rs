//! `tunnel ca init`, `tunnel ca issue` and `tunnel ca revoke`.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Subcommand, ValueEnum};
use rcgen::RevocationReason;

use crate::{
    ca::{self, InitOptions, IssueOptions, Revocation, RevokeOptions, Signer},
    duration, errors,
    identity::{TrustDomain, timestamp},
};

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a root and an intermediate CA for a trust domain, and its bundle.pem.
    #[command(
        after_help = "Example:\n  tunnel ca init --trust-domain example.org --out /etc/tunnel/ca"
    )]
    Init(InitArgs),
    /// Issue a certificate (X.509-SVID) for a workload or a node.
    #[command(
        after_help = "Example:\n  tunnel ca issue --ca /etc/tunnel/ca --spiffe-id spiffe://example.org/frontend --ttl 24h --out /etc/tunnel/frontend"
    )]
    Issue(IssueArgs),
    /// Revoke a certificate: add it to the CRL of the CA that issued it (created if missing).
    #[command(
        after_help = "A leaf is revoked by the intermediate; the intermediate by the root (every leaf under it is then refused). Keep one CRL file per issuing CA and list them in the daemon's crl = [...].\n\nExample:\n  tunnel ca revoke --ca /etc/tunnel/ca --cert /etc/tunnel/batch/cert.pem --crl /etc/tunnel/ca/crl.pem --reason key-compromise"
    )]
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The trust domain, e.g. example.org.
    #[arg(long)]
    pub trust_domain: TrustDomain,
    /// Directory to create the CA in.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing CA in that directory.
    #[arg(long)]
    pub force: bool,
    /// Validity of the root.
    #[arg(long, value_parser = duration::parse, default_value = "3650d")]
    pub root_ttl: Duration,
    /// Validity of the intermediate (capped at the root's).
    #[arg(long, value_parser = duration::parse, default_value = "730d")]
    pub intermediate_ttl: Duration,
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The CA directory made by `tunnel ca init`.
    #[arg(long)]
    pub ca: PathBuf,
    /// The identity, spiffe://<trust domain>/<path>.
    #[arg(long)]
    pub spiffe_id: String,
    /// Validity: 90s, 30m, 24h, 7d...
    #[arg(long, value_parser = duration::parse, default_value = "24h")]
    pub ttl: Duration,
    /// Directory to write cert.pem and key.pem to.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The CA directory made by `tunnel ca init`.
    #[arg(long)]
    pub ca: PathBuf,
    /// The certificate to revoke (PEM or DER; of a PEM chain, the first certificate).
    #[arg(long)]
    pub cert: PathBuf,
    /// The CRL file to create, or to extend (it must be by the same CA).
    #[arg(long)]
    pub crl: PathBuf,
    /// Why, as the CRL records it.
    #[arg(long, value_enum, default_value_t = Reason::Unspecified)]
    pub reason: Reason,
    /// When the CRL says its next version will be out (nextUpdate = now + this).
    #[arg(long, value_parser = duration::parse, default_value = "7d")]
    pub next_update: Duration,
}

/// The reasons of RFC 5280 that fit this CA (no holds, no attribute authorities).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Reason {
    KeyCompromise,
    Superseded,
    CessationOfOperation,
    AffiliationChanged,
    CaCompromise,
    Unspecified,
}

impl From<Reason> for RevocationReason {
    fn from(reason: Reason) -> Self {
        match reason {
            Reason::KeyCompromise => Self::KeyCompromise,
            Reason::Superseded => Self::Superseded,
            Reason::CessationOfOperation => Self::CessationOfOperation,
            Reason::AffiliationChanged => Self::AffiliationChanged,
            Reason::CaCompromise => Self::CaCompromise,
            Reason::Unspecified => Self::Unspecified,
        }
    }
}

pub fn run(command: CaCommand) -> ExitCode {
    let result = match command {
        CaCommand::Init(args) => ca::init(&InitOptions {
            trust_domain: args.trust_domain,
            out: args.out,
            force: args.force,
            root_ttl: args.root_ttl,
            intermediate_ttl: args.intermediate_ttl,
        })
        .map(|files| {
            format!(
                "CA created in {}; peers trust {}",
                files.dir.display(),
                files.bundle.display()
            )
        }),
        CaCommand::Issue(args) => ca::issue(&IssueOptions {
            ca: args.ca,
            spiffe_id: args.spiffe_id.clone(),
            ttl: args.ttl,
            out: args.out,
            force: args.force,
        })
        .map(|files| {
            format!(
                "issued {} for {}: {} {}",
                duration::format(args.ttl),
                args.spiffe_id,
                files.cert.display(),
                files.key.display()
            )
        }),
        CaCommand::Revoke(args) => ca::revoke(&RevokeOptions {
            ca: args.ca,
            cert: args.cert,
            crl: args.crl,
            reason: args.reason.into(),
            next_update: args.next_update,
        })
        .map(|revocation| revoked(&revocation)),
    };
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tunnel ca: {}", errors::chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// "revoked serial 1A2B… (spiffe://example.org/batch) in crl.pem, signed by the intermediate
/// CA; 3 entries, CRL number 4, next update …".
fn revoked(revocation: &Revocation) -> String {
    let uris = revocation.uris.join(", ");
    let (what, consequence) = match revocation.signer {
        Signer::Intermediate => (uris, ""),
        Signer::Root => (
            format!("the intermediate CA of {uris}"),
            "; every certificate it issued is refused",
        ),
    };
    let serial = &revocation.serial;
    let done = match revocation.already_revoked_at {
        None => format!("revoked serial {serial} ({what}) in"),
        Some(at) => format!(
            "serial {serial} ({what}) was already revoked at {}, entry kept; re-signed",
            timestamp(at)
        ),
    };
    let entries = match revocation.entries {
        1 => "1 entry".to_string(),
        n => format!("{n} entries"),
    };
    format!(
        "{done} {}, signed by the {} CA{consequence}; {entries}, CRL number {}, next update {}",
        revocation.crl.display(),
        revocation.signer,
        revocation.crl_number,
        timestamp(revocation.next_update.unix_timestamp())
    )
}
