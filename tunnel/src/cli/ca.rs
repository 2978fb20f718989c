//! `tunnel ca init` and `tunnel ca issue`.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Subcommand};

use crate::{
    ca::{self, InitOptions, IssueOptions},
    duration, errors,
    identity::TrustDomain,
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
    #[arg(long, value_parser = parse_duration, default_value = "3650d")]
    pub root_ttl: Duration,
    /// Validity of the intermediate (capped at the root's).
    #[arg(long, value_parser = parse_duration, default_value = "730d")]
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
    #[arg(long, value_parser = parse_duration, default_value = "24h")]
    pub ttl: Duration,
    /// Directory to write cert.pem and key.pem to.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
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

fn parse_duration(text: &str) -> Result<Duration, String> {
    duration::parse(text).map_err(|e| e.to_string())
}
