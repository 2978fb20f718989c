//! `tunnel idle`: prints a message and waits until SIGTERM or SIGINT, then exits 0. The
//! uninstall DaemonSet's pods end on it once their init containers have cleaned the node, so
//! that `kubectl rollout status` returns when every node is clean; the image has no shell and
//! no `sleep` to do that with. As a container's PID 1 it must handle SIGTERM itself (the
//! kernel ignores signals without a handler for PID 1), or every stop would wait for SIGKILL.

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  tunnel idle --message 'tunnel removed from this node'")]
pub struct IdleArgs {
    /// Printed on stdout once, at the start.
    #[arg(long)]
    pub message: Option<String>,
}

pub fn run(args: IdleArgs) -> ExitCode {
    if let Some(message) = &args.message {
        println!("{message}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts");
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => (term, int),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("tunnel idle: cannot handle signals: {e}");
                return ExitCode::FAILURE;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        ExitCode::SUCCESS
    })
}
