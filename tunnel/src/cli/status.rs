//! `tunnel status`: what the running daemon says through its admin API, in a few lines:
//! ready or why not, the certificates and their time left, peers and their pooled
//! connections, open connections, and recent auth failures when the daemon reports them.

use std::{
    io::IsTerminal as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use clap::Args;
use http::Method;
use serde::Serialize;
use serde_json::Value;

use crate::{
    admin::client::{self, ClientError},
    config::{Config, ConfigError, DEFAULT_ADMIN},
    duration::span,
};

/// Each request's limit, connect included.
const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  tunnel status\n  tunnel status --config /etc/tunnel/tunnel.toml\n  \
tunnel status --admin 127.0.0.1:15000 --json\n  tunnel status --admin 127.0.0.1:15000 --wait-gone\n\n\
Exit codes: 0 the daemon is ready, 1 it is not or does not answer.\n\
With --wait-gone: 0 once no daemon answers."
)]
pub struct StatusArgs {
    /// The daemon's admin API address [default: 127.0.0.1:15000, or listen.admin of --config].
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Read the admin address (listen.admin) from this config.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// One JSON document of everything fetched, instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Instead of the status: wait while a daemon answers on the admin address, ready or not
    /// (saying so every 5 s), and exit 0 once none does. For a step that must not run under a
    /// live daemon (the uninstall DaemonSet's first).
    #[arg(long, conflicts_with = "json")]
    pub wait_gone: bool,
}

/// What the daemon said, endpoint by endpoint (`--json` prints it).
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub admin: SocketAddr,
    pub ready: bool,
    /// `/healthz/ready`'s answer: `ready`, or the reasons.
    pub readiness: String,
    /// `/config_dump`.
    pub config: Option<Value>,
    /// `/connections`.
    pub connections: Option<Value>,
    /// `tunnel_pool_connections` from `/metrics`, per peer identity.
    pub pools: Vec<PoolSize>,
    /// Recent refused handshakes, when the daemon serves them (see [`auth_failures`]).
    pub auth_failures: Option<Value>,
    /// Endpoints that did not answer as expected.
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PoolSize {
    pub peer_principal: String,
    pub connections: f64,
}

pub fn run(args: StatusArgs) -> ExitCode {
    let addr = match admin_address(&args) {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts");
    if args.wait_gone {
        runtime.block_on(wait_gone(addr));
        return ExitCode::SUCCESS;
    }
    let status = match runtime.block_on(fetch(addr)) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("tunnel status: {e}");
            return ExitCode::from(1);
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("a JSON value encodes")
        );
    } else {
        let colour = std::io::stdout().is_terminal();
        print!("{}", render(&status, colour));
    }
    if status.ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `--admin`, else `listen.admin` of `--config` (a wildcard asked on loopback), else the
/// default.
fn admin_address(args: &StatusArgs) -> Result<SocketAddr, ConfigError> {
    if let Some(addr) = args.admin {
        return Ok(addr);
    }
    let Some(path) = &args.config else {
        return Ok(DEFAULT_ADMIN
            .parse()
            .expect("the default admin address parses"));
    };
    let config = Config::load(path)?;
    let mut addr = config.listen.admin;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(addr)
}

/// Returns once nothing answers on `addr`: the connection is refused (or fails otherwise,
/// which no daemon does). An answer of any status, or a connection that is accepted but not
/// answered in time (a stuck daemon), is a daemon still there.
async fn wait_gone(addr: SocketAddr) {
    loop {
        match client::request(addr, Method::GET, "/healthz/ready", TIMEOUT).await {
            Ok(_) | Err(ClientError::Timeout { .. }) => {
                println!(
                    "a tunnel daemon still answers on {addr}: waiting until it is gone \
                     (on Kubernetes: delete ds/tunnel first)"
                );
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            // (NoSocket and NotAllowed are the control socket's; an HTTP port never says them.)
            Err(
                ClientError::Refused { .. }
                | ClientError::Other { .. }
                | ClientError::NoSocket { .. }
                | ClientError::NotAllowed { .. },
            ) => return,
        }
    }
}

/// Asks every endpoint `status` uses. Only an unreachable daemon is an error; an endpoint
/// that fails is noted in `errors` and the rest is still shown.
pub async fn fetch(addr: SocketAddr) -> Result<Status, ClientError> {
    let ready = client::request(addr, Method::GET, "/healthz/ready", TIMEOUT).await?;
    let mut errors = Vec::new();
    let mut json = async |path: &str| match client::request(addr, Method::GET, path, TIMEOUT).await
    {
        Ok(answer) if answer.status == 200 => match serde_json::from_str::<Value>(&answer.body) {
            Ok(value) => Some(value),
            Err(e) => {
                errors.push(format!("{path}: not JSON: {e}"));
                None
            }
        },
        Ok(answer) => {
            errors.push(format!("{path}: HTTP {}", answer.status));
            None
        }
        Err(e) => {
            errors.push(e.to_string());
            None
        }
    };
    let config = json("/config_dump").await;
    let connections = json("/connections").await;
    let pools = match client::request(addr, Method::GET, "/metrics", TIMEOUT).await {
        Ok(answer) if answer.status == 200 => pool_sizes(&answer.body),
        Ok(answer) => {
            errors.push(format!("/metrics: HTTP {}", answer.status));
            Vec::new()
        }
        Err(e) => {
            errors.push(e.to_string());
            Vec::new()
        }
    };
    let auth_failures = auth_failures(addr).await;
    Ok(Status {
        admin: addr,
        ready: ready.status == 200,
        readiness: ready.body.trim_end().to_string(),
        config,
        connections,
        pools,
        auth_failures,
        errors,
    })
}

/// The daemon's last refused handshakes (`/auth_failures`: a JSON array of `at` (unix
/// seconds), `direction`, `peer`, `peer_identity`, `workload`, `reason`); `None` from a
/// daemon that does not serve them.
async fn auth_failures(addr: SocketAddr) -> Option<Value> {
    let answer = client::request(addr, Method::GET, "/auth_failures", TIMEOUT)
        .await
        .ok()?;
    (answer.status == 200)
        .then(|| serde_json::from_str(&answer.body).ok())
        .flatten()
}

/// `tunnel_pool_connections{peer_principal="..."} N` lines of the OpenMetrics text.
fn pool_sizes(metrics: &str) -> Vec<PoolSize> {
    metrics
        .lines()
        .filter_map(|line| {
            let labels = line.strip_prefix("tunnel_pool_connections{")?;
            let (labels, value) = labels.split_once("} ")?;
            let principal = labels
                .split(',')
                .find_map(|l| l.strip_prefix("peer_principal=\""))?
                .strip_suffix('"')?;
            Some(PoolSize {
                peer_principal: principal.to_string(),
                connections: value.split_whitespace().next()?.parse().ok()?,
            })
        })
        .collect()
}

const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// The human summary. `colour`: ANSI colours (stdout is a terminal).
pub fn render(status: &Status, colour: bool) -> String {
    let paint = |code: &str, text: String| {
        if colour {
            format!("{code}{text}{RESET}")
        } else {
            text
        }
    };
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    if status.ready {
        line(format!(
            "tunnel on {}: {}",
            status.admin,
            paint(BOLD, "ready".into())
        ));
    } else {
        line(format!(
            "tunnel on {}: {}",
            status.admin,
            paint(RED, "NOT READY".into())
        ));
        for reason in status.readiness.lines() {
            line(format!("  {}", reason.trim_start_matches("not ready: ")));
        }
    }
    if let Some(config) = &status.config {
        let node = &config["node"];
        line(String::new());
        line(format!(
            "node      {}  {}",
            text(&node["spiffe_id"]),
            certificate(&node["certificate"], &paint)
        ));
        let workloads = config["workloads"].as_array().map_or(&[][..], |w| w);
        if workloads.is_empty() {
            line("workloads none".into());
        } else {
            line("workloads".into());
        }
        let width = workloads
            .iter()
            .map(|w| text(&w["name"]).len())
            .max()
            .unwrap_or(0);
        for workload in workloads {
            line(format!(
                "  {:width$}  {}  {}  {}",
                text(&workload["name"]),
                text(&workload["spiffe_id"]),
                text(&workload["mode"]),
                certificate(&workload["certificate"], &paint),
            ));
        }
        let peers = config["peers"].as_array().map_or(&[][..], |p| p);
        for peer in peers {
            let destinations: Vec<String> = peer["destinations"]
                .as_array()
                .map(|d| d.iter().map(text).collect())
                .unwrap_or_default();
            line(format!(
                "peer      {} at {}",
                text(&peer["spiffe_id"]),
                destinations.join(", ")
            ));
        }
    }
    if !status.pools.is_empty() {
        line("pooled connections to peers".into());
        for pool in &status.pools {
            line(format!("  {}  {}", pool.peer_principal, pool.connections));
        }
    }
    if let Some(connections) = status.connections.as_ref().and_then(Value::as_array) {
        let count = |direction: &str| {
            connections
                .iter()
                .filter(|c| c["direction"] == direction)
                .count()
        };
        line(format!(
            "connections {} open ({} outbound, {} inbound)",
            connections.len(),
            count("outbound"),
            count("inbound")
        ));
    }
    if let Some(failures) = status.auth_failures.as_ref().and_then(Value::as_array) {
        if failures.is_empty() {
            line("auth failures: none recently".into());
        } else {
            line(format!("auth failures (last {})", failures.len()));
        }
        for failure in failures.iter().rev().take(5) {
            let at = failure["at"]
                .as_i64()
                .map_or_else(|| "?".into(), crate::identity::timestamp);
            line(format!(
                "  {at}  {}  {}  {}",
                text(&failure["direction"]),
                text(&failure["peer"]),
                text(&failure["reason"])
            ));
        }
    }
    for error in &status.errors {
        line(format!("(could not read {error})"));
    }
    out
}

/// A certificate in one phrase: time left and expiry, coloured by how much life is left.
fn certificate(cert: &Value, paint: &dyn Fn(&str, String) -> String) -> String {
    let (Some(left), Some(lifetime)) = (
        cert["seconds_to_expiry"].as_i64(),
        cert["lifetime_seconds"].as_i64(),
    ) else {
        return "no certificate".into();
    };
    let until = text(&cert["not_after"]);
    if left < 0 {
        return paint(
            RED,
            format!("EXPIRED {} ago ({until})", span(left.unsigned_abs())),
        );
    }
    let phrase = format!("expires in {} ({until})", span(left.unsigned_abs()));
    if left * 3 < lifetime {
        paint(YELLOW, phrase)
    } else {
        phrase
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{admin::tests::serve, test_support::Fixture};

    #[tokio::test]
    async fn status_summarises_a_live_daemon_and_says_when_none_answers() {
        let fixture = Fixture::new();
        let server = serve(&fixture).await;
        let status = fetch(server.addr).await.unwrap();
        assert!(!status.ready);
        let text = render(&status, false);
        assert!(text.contains(": NOT READY\n  starting:"), "{text}");

        server.state.readiness.set_ready();
        let status = fetch(server.addr).await.unwrap();
        assert!(status.ready, "{status:?}");
        assert!(status.errors.is_empty(), "{:?}", status.errors);
        let text = render(&status, false);
        assert!(
            text.starts_with(&format!("tunnel on {}: ready\n", server.addr)),
            "{text}"
        );
        assert!(
            text.contains("node      spiffe://example.org/node/a  expires in "),
            "{text}"
        );
        assert!(
            text.contains("  frontend  spiffe://example.org/frontend  strict  expires in "),
            "{text}"
        );
        assert!(text.contains("connections 0 open"), "{text}");
        assert!(
            !text.contains('\x1b'),
            "no colour when asked for none: {text}"
        );
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["ready"], true);
        assert_eq!(json["config"]["workloads"][0]["name"], "frontend");

        // A port nobody listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let error = fetch(closed_addr).await.unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "no daemon answers on {closed_addr} (is tunnel running? is listen.admin elsewhere?)"
            )
        );
    }

    #[test]
    fn certificates_turn_yellow_in_their_last_third_and_red_once_expired() {
        let paint = |code: &str, text: String| format!("{code}{text}{RESET}");
        let cert = |left: i64| {
            serde_json::json!({
                "seconds_to_expiry": left, "lifetime_seconds": 90_000, "not_after": "T"
            })
        };
        assert!(!certificate(&cert(60_000), &paint).starts_with(YELLOW));
        assert!(certificate(&cert(29_000), &paint).starts_with(YELLOW));
        let expired = certificate(&cert(-60), &paint);
        assert!(
            expired.starts_with(&format!("{RED}EXPIRED 1m ago")),
            "{expired}"
        );
    }

    #[test]
    fn pool_sizes_are_read_from_the_metrics_text() {
        let text = "# TYPE tunnel_pool_connections gauge\n\
tunnel_pool_connections{peer_principal=\"spiffe://example.org/node/b\"} 2\n\
tunnel_pool_connections_other 9\n# EOF\n";
        let pools = pool_sizes(text);
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].peer_principal, "spiffe://example.org/node/b");
        assert_eq!(pools[0].connections, 2.0);
    }
}

#[cfg(test)]
mod wait_gone_tests {
    use super::*;

    #[tokio::test]
    async fn returns_once_nothing_listens() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        tokio::time::timeout(Duration::from_secs(5), wait_gone(addr))
            .await
            .expect("wait_gone returns when the connection is refused");
    }
}
