//! `tunnel probe`: one HBONE connection to a peer daemon as a given workload, with each step
//! and its outcome explained: TCP, mTLS (and who the peer is), then the CONNECT answer.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::Args;

use crate::{
    app::wiring,
    config::Config,
    credentials::Credentials,
    proxy::budget::BufferBudget,
    proxy::pool::{Pool, PoolError, PoolKey},
    tls::PeerExpectation,
};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  tunnel probe --config /etc/tunnel/tunnel.toml --as frontend 10.0.0.2:8080\n  \
tunnel probe --config /etc/tunnel/tunnel.toml --as frontend --via 10.0.0.2:15008 10.0.0.3:8080\n\n\
Exit codes: 0 the tunnel opened, 1 it did not (the reason is printed), 64 bad config."
)]
pub struct ProbeArgs {
    /// The config of the daemon on this host (identities, bundle, peers).
    #[arg(long, short)]
    pub config: PathBuf,
    /// The workload to call as (its certificate is presented).
    #[arg(long = "as", value_name = "WORKLOAD")]
    pub workload: String,
    /// The tunnel endpoint to use instead of DESTINATION's own host (ip:15008).
    #[arg(long)]
    pub via: Option<SocketAddr>,
    /// What an application would dial, ip:port.
    pub destination: SocketAddr,
}

pub fn run(args: ProbeArgs) -> ExitCode {
    super::init_logging("warn");
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(64);
        }
    };
    let Some(workload) = config.workload(&args.workload) else {
        let names: Vec<&str> = config.workloads.iter().map(|w| w.name.as_str()).collect();
        eprintln!(
            "tunnel probe: no workload {:?} in {} (workloads: {})",
            args.workload,
            args.config.display(),
            names.join(", ")
        );
        return ExitCode::from(64);
    };
    let credentials = match Credentials::load(&config, wiring::credentials_spec(&config)) {
        Ok(credentials) => credentials,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(64);
        }
    };
    let peer = args.via.unwrap_or(SocketAddr::new(
        args.destination.ip(),
        config.outbound.peer_port,
    ));
    // The daemon's own rule, so the probe expects of the peer exactly what the daemon would.
    let peers = wiring::peer_identities(&config);
    let pinned = peers.expected(peer.ip());
    let expected = wiring::peer_expectation(&config, pinned);
    println!(
        "probe: {} ({}) -> {} via {peer}",
        workload.name, workload.spiffe_id, args.destination
    );
    for problem in credentials.workload_problems(&workload.name, &workload.spiffe_id) {
        println!("  warning: our certificate: {problem}");
    }
    match &expected {
        PeerExpectation::Pinned(id) => println!("  expecting the peer to be {id} ([[peer]] entry)"),
        PeerExpectation::Node(pattern) => println!(
            "  expecting the peer to present a node identity matching {pattern} ([outbound] peer_identity)"
        ),
    }
    let snapshot = credentials.current();
    let client = snapshot
        .client(&workload.name, pinned)
        .expect("a TLS config exists for every workload and peer identity");
    let budget = BufferBudget::new(config.limits.max_buffered_bytes);
    let mut settings = wiring::pool_settings(&config, &budget);
    settings.max_streams_per_connection = 1;
    let pool = Pool::new(settings);
    let key = PoolKey {
        workload: workload.name.as_str().into(),
        peer,
        via: None,
        identity: pinned.cloned(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts");
    match runtime.block_on(pool.open(&key, client, args.destination, bytes::Bytes::new(), None)) {
        Ok(stream) => {
            let peer_id = stream
                .peer_identity
                .as_ref()
                .map_or_else(|| "unknown".into(), ToString::to_string);
            println!("  mTLS: ok (TLS 1.3), the peer is {peer_id}");
            println!("  CONNECT {}: 200, the tunnel is open", args.destination);
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("  failed: {}", crate::errors::chain(&e));
            // A tunnel daemon says why it refused a CONNECT; for anything else its log does.
            if !matches!(
                e,
                PoolError::Refused {
                    reason: Some(_),
                    ..
                }
            ) {
                println!("  the peer's log has its side of it (look for \"refused\")");
            }
            ExitCode::FAILURE
        }
    }
}
