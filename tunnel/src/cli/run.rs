//! `tunnel run`: the daemon.

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::Args;
use tracing::{error, info};

use crate::{
    app::{Daemon, StartError},
    config::{Aead, Config},
    duration, errors, logging,
    telemetry::Telemetry,
    tls::{self, aead::AeadImplementation},
};

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  tunnel run --config /etc/tunnel/tunnel.toml\n\n\
Exit codes: 64 bad config, 69 host lacks a requirement (kernel, cgroup v2, privileges), 1 other startup failure."
)]
pub struct RunArgs {
    /// The config file (TOML; see config/ for examples).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Log filter: a level (error, warn, info, debug, trace) or a tracing directive list.
    /// RUST_LOG overrides it; `tunnel log-level` changes it at run time (root only).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log lines as readable text or as one JSON object each.
    #[arg(long, value_enum, default_value_t = logging::Format::Text)]
    pub log_format: logging::Format,
    /// Drop the access log (one line per connection when it closes, target tunnel::access).
    #[arg(long)]
    pub no_access_log: bool,
    /// Also append the auth-failure stream (target tunnel::auth) to this file.
    #[arg(long, value_name = "FILE")]
    pub auth_log: Option<PathBuf>,
    /// How long open connections may take to finish after SIGTERM/SIGINT.
    #[arg(long, default_value = "5s", value_parser = duration::parse)]
    pub drain_timeout: Duration,
}

pub fn run(args: RunArgs) -> ExitCode {
    let logging = Arc::new(logging::init(&logging::Options {
        level: args.log_level.clone(),
        format: args.log_format,
        access_log: !args.no_access_log,
        auth_log: args.auth_log.clone(),
    }));
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(64);
        }
    };
    logging::flush_on_panic();
    choose_record_cipher(config.crypto.aead);
    let mut builder = match config.runtime.worker_threads {
        1 => {
            // block_on runs the current-thread runtime on this thread.
            logging::batch_this_thread();
            tokio::runtime::Builder::new_current_thread()
        }
        workers => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder
                .worker_threads(workers)
                .on_thread_start(logging::batch_this_thread)
                .on_thread_stop(logging::flush_this_thread);
            builder
        }
    };
    // A runtime thread's log lines are written when it has nothing left to run.
    builder.on_thread_park(logging::flush_this_thread);
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "failed to start the async runtime");
            logging::flush_this_thread();
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        let daemon = match Daemon::start(config, Arc::new(Telemetry::new(logging))).await {
            Ok(daemon) => daemon,
            Err(StartError::Config(e)) => {
                eprintln!("{e}");
                return ExitCode::from(64);
            }
            Err(e) => {
                eprintln!("tunnel: {}", errors::chain(&e));
                return ExitCode::from(e.exit_code());
            }
        };
        daemon.run(shutdown_signal(), args.drain_timeout).await;
        ExitCode::SUCCESS
    });
    logging::flush_this_thread();
    code
}

/// Before any TLS configuration is built: the provider reads the choice once.
fn choose_record_cipher(setting: Aead) {
    let forced = match setting {
        Aead::Auto => None,
        Aead::AwsLc => Some(AeadImplementation::AwsLc),
        #[cfg(feature = "ring-aead")]
        Aead::Ring => Some(AeadImplementation::Ring),
        // The config refuses it in a build without ring.
        #[cfg(not(feature = "ring-aead"))]
        Aead::Ring => Some(AeadImplementation::AwsLc),
    };
    let choice = tls::choose_record_cipher(forced);
    info!(aead = %choice, "record cipher chosen");
}

/// SIGTERM (systemd, kubelet) or SIGINT (a terminal).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
