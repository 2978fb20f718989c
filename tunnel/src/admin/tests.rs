//! The admin API in process: the admin port and the health port on 127.0.0.1:0 and the
//! control socket in the fixture's directory, over the test fixture's config and
//! certificates, asked over real HTTP/1.1.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use http::Method;
use rustls_pki_types::pem::PemObject as _;

use super::{
    AdminListener, ControlSocket, HealthListener, OPENMETRICS, Readiness, State,
    client::{self, Answer},
};
use crate::{
    app::wiring,
    credentials::Credentials,
    logging,
    policy::{LivePolicy, Policy},
    telemetry::{ConnectionInfo, Telemetry},
    test_support::{Fixture, Logs},
};

pub(crate) struct Server {
    /// The admin port.
    pub addr: SocketAddr,
    pub health: SocketAddr,
    pub control: PathBuf,
    pub state: Arc<State>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Serves the fixture's config, not yet ready.
pub(crate) async fn serve(fixture: &Fixture) -> Server {
    serve_with(fixture, fixture.config()).await
}

/// Serves `config` (the fixture's, changed), not yet ready.
pub(crate) async fn serve_with(fixture: &Fixture, config: crate::config::Config) -> Server {
    let credentials = Credentials::load(&config, wiring::credentials_spec(&config)).unwrap();
    let state = Arc::new(State {
        policy: LivePolicy::new(Policy::from_config(&config)),
        config: Arc::new(config),
        telemetry: Arc::new(Telemetry::new(Arc::new(logging::detached("info")))),
        credentials: Arc::new(credentials),
        capture: None,
        readiness: Arc::new(Readiness::new()),
    });
    let listener = AdminListener::bind("127.0.0.1:0".parse().unwrap(), 128)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let health = HealthListener::bind("127.0.0.1:0".parse().unwrap(), 128)
        .await
        .unwrap();
    let health_addr = health.local_addr().unwrap();
    let control = fixture.path("run/control.sock");
    let socket = ControlSocket::bind(&control).unwrap();
    let tasks = vec![
        tokio::spawn(listener.serve(state.clone())),
        tokio::spawn(health.serve(state.clone())),
        tokio::spawn(socket.serve(state.clone())),
    ];
    Server {
        addr,
        health: health_addr,
        control,
        state,
        tasks,
    }
}

async fn ask(server: &Server, method: Method, path: &str) -> Answer {
    client::request(server.addr, method, path, Duration::from_secs(5))
        .await
        .unwrap()
}

async fn get(server: &Server, path: &str) -> Answer {
    ask(server, Method::GET, path).await
}

#[tokio::test]
async fn ready_is_503_with_the_reason_until_startup_completes_then_200_until_the_drain() {
    let fixture = Fixture::new();
    let server = serve(&fixture).await;
    let answer = get(&server, "/healthz/ready").await;
    assert_eq!(answer.status, 503);
    assert!(
        answer.body.starts_with("not ready: starting"),
        "{}",
        answer.body
    );

    server.state.readiness.set_ready();
    let answer = get(&server, "/healthz/ready").await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "ready\n"));

    server.state.readiness.set_draining();
    let answer = get(&server, "/healthz/ready").await;
    assert_eq!(answer.status, 503);
    assert!(
        answer.body.starts_with("not ready: draining"),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn the_config_dump_shows_the_certificates_in_force_and_never_a_private_key() {
    let fixture = Fixture::new();
    let server = serve(&fixture).await;
    let answer = get(&server, "/config_dump").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    let dump: serde_json::Value = serde_json::from_str(&answer.body).unwrap();

    let snapshot = server.state.credentials.current();
    let node = &dump["node"]["certificate"];
    assert_eq!(node["serial"], snapshot.node.leaf.serial.as_str());
    assert_eq!(node["state"], "ok");
    assert_eq!(node["uris"][0], crate::test_support::NODE_ID);
    assert!(node["seconds_to_expiry"].as_i64().unwrap() > 0);
    assert!(
        node["origin"].as_str().unwrap().ends_with("node/cert.pem"),
        "{node}"
    );
    // The leaf and its intermediate, each named by its subject and issuer.
    assert_eq!(node["chain"].as_array().unwrap().len(), 2, "{node}");
    assert_eq!(node["chain"][0]["issuer"], node["chain"][1]["subject"]);
    let frontend = &dump["workloads"][0];
    assert_eq!(frontend["name"], "frontend");
    assert_eq!(frontend["mode"], "strict");
    assert_eq!(
        frontend["certificate"]["serial"],
        snapshot.workloads["frontend"].leaf.serial.as_str()
    );
    assert_eq!(dump["trust"]["roots"].as_array().unwrap().len(), 1);
    assert_eq!(dump["trust"]["roots_in_force"], 1);
    assert_eq!(dump["listen"]["admin"], "127.0.0.1:15000");
    assert_eq!(dump["capture"]["destinations"][0], "10.0.0.0/24");

    assert_no_key_material(&answer.body, fixture.dir.path());
}

/// No PEM key marker, and no key of any file of the fixture: raw, base64 (whole or any PEM
/// line of it) or hex.
fn assert_no_key_material(body: &str, dir: &Path) {
    assert!(!body.contains("PRIVATE KEY"), "a PEM key marker in {body}");
    let mut keys = 0;
    for path in files(dir) {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if !text.contains("PRIVATE KEY") {
            continue;
        }
        keys += 1;
        let base64: String = text
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        assert!(!body.contains(&base64), "{} in the dump", path.display());
        for line in text
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        {
            assert!(
                !body.contains(line),
                "a line of {} in the dump",
                path.display()
            );
        }
        let der = rustls_pki_types::PrivateKeyDer::from_pem_file(&path).unwrap();
        let der = der.secret_der();
        assert!(
            !body.as_bytes().windows(der.len()).any(|w| w == der),
            "{} (raw) in the dump",
            path.display()
        );
        let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            !body.to_lowercase().contains(&hex),
            "{} (hex)",
            path.display()
        );
    }
    // node, frontend, and the CA's root and intermediate keys.
    assert!(keys >= 4, "the fixture has {keys} key files");
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn the_admin_port_shows_the_log_filter_and_answers_a_change_with_where_to_go() {
    let fixture = Fixture::new();
    let server = serve(&fixture).await;
    let control = server.state.telemetry.logging.clone();
    let answer = get(&server, "/logging").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "warn,tunnel=info\n")
    );
    for (method, path, status) in [
        (Method::GET, "/logging?level=debug", 403),
        (Method::POST, "/logging?level=debug", 405),
        (Method::POST, "/logging", 405),
        (Method::GET, "/logging?level=%FF", 403),
    ] {
        let answer = ask(&server, method.clone(), path).await;
        println!("{method} {path}: {} {}", answer.status, answer.body.trim());
        assert_eq!(answer.status, status, "{method} {path}");
        assert!(
            answer.body.contains("the admin port is read-only")
                && answer.body.contains("/run/tunnel/control.sock")
                && answer.body.contains("tunnel log-level"),
            "{}",
            answer.body
        );
    }
    assert_eq!(control.current(), "warn,tunnel=info", "nothing changed");
}

async fn change(server: &Server, method: Method, path: &str) -> Answer {
    client::request_unix(&server.control, method, path, Duration::from_secs(5))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_control_socket_changes_the_filter_strictly_and_logs_who_did() {
    let logs = Logs::capture();
    let fixture = Fixture::new();
    let server = serve(&fixture).await;
    let control = server.state.telemetry.logging.clone();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&server.control).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the socket is root's alone");

    let answer = change(&server, Method::POST, "/logging?level=debug").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "warn,tunnel=debug\n")
    );
    assert_eq!(control.current(), "warn,tunnel=debug");
    let line = logs
        .wait_for(
            "log filter changed through the control socket",
            Duration::from_secs(1),
        )
        .await;
    println!("{line}");
    let uid = nix::unistd::geteuid().as_raw();
    for field in [
        format!("uid={uid}"),
        format!("pid={}", std::process::id()),
        "from=warn,tunnel=info".into(),
        "to=warn,tunnel=debug".into(),
    ] {
        assert!(line.contains(&field), "{field} in {line}");
    }

    // The examples, and what the query cannot carry.
    for (path, status, says) in [
        (
            "/logging?level=garbage%25%25%25",
            400,
            "is not a log target of this daemon",
        ),
        (
            "/logging?level=tunnel%5B%7Bx%7D%5D%3Ddebug",
            400,
            "span and field filters",
        ),
        (
            "/logging?level=tunnel%3A%3Aaccess%3Doff",
            403,
            "would lower tunnel::access from info to off",
        ),
        (
            "/logging?level=warn",
            403,
            "keep them: warn,tunnel=warn,tunnel::access=info",
        ),
        ("/logging?level=%FF", 400, "does not decode to UTF-8"),
        (
            "/logging?level=debug%zz",
            400,
            "bad percent escape at byte 5",
        ),
        ("/logging?level=", 400, "the filter is empty"),
        ("/logging", 400, "no filter"),
    ] {
        let answer = change(&server, Method::POST, path).await;
        println!("POST {path}: {} {}", answer.status, answer.body.trim());
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert!(answer.body.contains(says), "{path}: {}", answer.body);
    }
    assert_eq!(
        control.current(),
        "warn,tunnel=debug",
        "refusals change nothing"
    );
    assert!(
        !logs.lines_with("log filter change refused").is_empty(),
        "refusals are logged with who asked"
    );
    let answer = change(&server, Method::GET, "/logging?level=info").await;
    assert_eq!(answer.status, 405, "a change is a POST: {}", answer.body);
    let answer = change(&server, Method::GET, "/logging").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "warn,tunnel=debug\n")
    );
    // The rest of the API answers there too.
    assert_eq!(change(&server, Method::GET, "/metrics").await.status, 200);
}

#[tokio::test]
async fn a_config_that_allows_it_may_lower_the_audit_trail() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.logging.allow_lowering_access_and_auth = true;
    let server = serve_with(&fixture, config).await;
    let answer = change(&server, Method::POST, "/logging?level=warn").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "warn,tunnel=warn\n")
    );
}

#[tokio::test]
async fn a_quieting_change_is_recorded_before_it_takes_effect() {
    let logs = Logs::capture();
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.logging.allow_lowering_access_and_auth = true;
    let server = serve_with(&fixture, config).await;
    let answer = change(&server, Method::POST, "/logging?level=error").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let line = logs
        .wait_for(
            "log filter changed through the control socket",
            Duration::from_secs(1),
        )
        .await;
    assert!(line.contains("to=warn,tunnel=error"), "{line}");
}

#[tokio::test]
async fn an_unknown_path_is_404_listing_the_endpoints_and_a_wrong_method_405() {
    let fixture = Fixture::new();
    let server = serve(&fixture).await;
    let answer = get(&server, "/nope").await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.body.lines().count(), 1, "{}", answer.body);
    for endpoint in [
        "/healthz/ready",
        "/metrics",
        "/config_dump",
        "/connections",
        "/logging",
        "/debug/capture",
    ] {
        assert!(answer.body.contains(endpoint), "{}", answer.body);
    }
    let answer = ask(&server, Method::POST, "/config_dump").await;
    assert_eq!(answer.status, 405);
    let answer = ask(&server, Method::DELETE, "/logging").await;
    assert_eq!(answer.status, 405);
}

#[tokio::test]
async fn metrics_are_openmetrics_text() {
    let fixture = Fixture::new();
    let server = serve(&fixture).await;
    let answer = get(&server, "/metrics").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type.as_deref(), Some(OPENMETRICS));
    assert!(answer.body.ends_with("# EOF\n"), "{}", answer.body);
}

#[tokio::test]
async fn connections_and_capture_are_json() {
    let fixture = Fixture::new();
    let server = serve(&fixture).await;
    let _open = server.state.telemetry.connections.open(ConnectionInfo {
        direction: "inbound",
        src: "10.0.0.1:40000".parse().unwrap(),
        dst: "10.0.0.2:8080".parse().unwrap(),
        src_identity: Some(crate::test_support::FRONTEND_ID.into()),
        dst_identity: None,
        workload: "frontend".into(),
        peer: "10.0.0.1:15008".parse().unwrap(),
    });
    let answer = get(&server, "/connections").await;
    let listed: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["direction"], "inbound");

    let answer = get(&server, "/debug/capture").await;
    let capture: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(capture["installed"], false);
}

#[tokio::test]
async fn the_health_port_answers_readiness_alone() {
    let fixture = Fixture::new();
    let server = serve(&fixture).await;
    let health = |path: &'static str| {
        let addr = server.health;
        async move {
            client::request(addr, Method::GET, path, Duration::from_secs(5))
                .await
                .unwrap()
        }
    };
    assert_eq!(health("/healthz/ready").await.status, 503);
    server.state.readiness.set_ready();
    let answer = health("/healthz/ready").await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "ready\n"));
    let answer = health("/metrics").await;
    assert_eq!(answer.status, 404);
    assert!(
        answer
            .body
            .contains("this port answers GET /healthz/ready only")
            && answer.body.contains("127.0.0.1:15000"),
        "{}",
        answer.body
    );
    let answer = health("/logging").await;
    assert_eq!(answer.status, 404);
}

/// Opens `n` connections to `addr` that never send a request.
async fn hold(addr: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    held
}

/// The attack, in process: silent connections on both ports, first as many as the
/// issue's (200), then more than either port holds, while readiness is asked on both. Each
/// answer comes within 100 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connections_even_past_the_cap_do_not_keep_readiness_from_answering() {
    let fixture = Fixture::new();
    let server = serve(&fixture).await;
    server.state.readiness.set_ready();
    let mut held = Vec::new();
    for n in [200, super::server::MAX_CONNECTIONS + 100 - 200] {
        held.extend(hold(server.addr, n).await);
        held.extend(hold(server.health, n).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut times = Vec::new();
        for i in 0..40 {
            let addr = if i % 2 == 0 {
                server.addr
            } else {
                server.health
            };
            let started = Instant::now();
            let answer =
                client::request(addr, Method::GET, "/healthz/ready", Duration::from_secs(2))
                    .await
                    .unwrap_or_else(|e| panic!("ask {i} ({addr}): {e}"));
            times.push(started.elapsed());
            assert_eq!(answer.status, 200);
        }
        times.sort();
        println!(
            "readiness with {} silent connections on each port: p50 {:?}, max {:?}",
            held.len() / 2,
            times[times.len() / 2],
            times[times.len() - 1]
        );
        assert!(
            times[times.len() - 1] < Duration::from_millis(100),
            "{times:?}"
        );
    }
}

#[tokio::test]
async fn a_connection_past_the_cap_takes_the_place_of_the_oldest_idle_one() {
    use tokio::io::AsyncReadExt as _;
    let fixture = Fixture::new();
    let server = serve(&fixture).await;
    let mut held = hold(server.addr, super::server::MAX_CONNECTIONS).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _newcomer = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), held[0].read(&mut byte))
        .await
        .expect("the oldest is closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "closed: {read:?}");
    assert_eq!(get(&server, "/metrics").await.status, 200);
}

#[tokio::test]
async fn a_connection_that_sends_no_head_is_closed_after_the_header_timeout() {
    use tokio::io::AsyncReadExt as _;
    let fixture = Fixture::new();
    let server = serve(&fixture).await;
    let mut silent = hold(server.addr, 1).await.pop().unwrap();
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut byte))
        .await
        .expect("closed by the server");
    let after = started.elapsed();
    println!("a silent connection closed after {after:?}: {read:?}");
    assert!(matches!(read, Ok(0) | Err(_)), "closed: {read:?}");
    let timeout = super::server::HEADER_TIMEOUT;
    assert!(
        after >= timeout - Duration::from_millis(100) && after < timeout + Duration::from_secs(1),
        "{after:?}"
    );
}
