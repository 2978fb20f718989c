//! `tunnel log-level`: the running daemon's log filter, shown, or replaced through its
//! control socket (root only). The daemon checks the filter and logs the change with the
//! caller's uid and pid; this prints what it answered.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::Args;
use http::Method;

use crate::{
    admin::client::{self, Answer, ClientError},
    config::{Config, DEFAULT_CONTROL},
};

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  tunnel log-level                       # the filter in force\n  \
tunnel log-level debug                 # tunnel's own lines at debug, libraries at warn\n  \
tunnel log-level warn,tunnel::proxy=debug,h2=info\n  \
tunnel log-level info --config /etc/tunnel/tunnel.toml\n\n\
A filter is a level (off, error, warn, info, debug, trace) or a list of LEVEL and\n\
TARGET=LEVEL items; targets are tunnel and its modules, tunnel::access (the access log),\n\
tunnel::auth (the auth-failure stream), h2, hyper_util, kube_client, kube_runtime, tower,\n\
tower_http. The access log and the auth-failure stream keep at least their level at start\n\
unless the config sets [logging] allow_lowering_access_and_auth = true.\n\n\
Exit codes: 0 shown or changed, 1 refused (the daemon says why) or no daemon answers."
)]
pub struct LogLevelArgs {
    /// The new filter; without it, the filter in force is printed.
    pub filter: Option<String>,
    /// The daemon's control socket [default: /run/tunnel/control.sock, or listen.control of
    /// --config].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Read the control socket's path (listen.control) from this config.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

pub fn run(args: LogLevelArgs) -> ExitCode {
    let socket = match (&args.socket, &args.config) {
        (Some(socket), _) => socket.clone(),
        (None, Some(config)) => match Config::load(config) {
            Ok(config) => config.listen.control,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        },
        (None, None) => PathBuf::from(DEFAULT_CONTROL),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts");
    match runtime.block_on(ask(&socket, args.filter.as_deref())) {
        Ok(answer) if answer.status == 200 => {
            print!("{}", answer.body);
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            eprint!("tunnel log-level: {}", answer.body);
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("tunnel log-level: {e}");
            ExitCode::from(1)
        }
    }
}

/// `GET /logging`, or `POST /logging?level=<filter>` with `filter`.
pub async fn ask(socket: &Path, filter: Option<&str>) -> Result<Answer, ClientError> {
    match filter {
        None => client::request_unix(socket, Method::GET, "/logging", TIMEOUT).await,
        Some(filter) => {
            let query =
                percent_encoding::utf8_percent_encode(filter, percent_encoding::NON_ALPHANUMERIC);
            let path = format!("/logging?level={query}");
            client::request_unix(socket, Method::POST, &path, TIMEOUT).await
        }
    }
}
