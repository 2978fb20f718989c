//! The admin API in process: a server on 127.0.0.1:0 over the test fixture's config and
//! certificates, asked over real HTTP/1.1.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use http::Method;
use rustls_pki_types::pem::PemObject as _;

use super::{
    AdminListener, OPENMETRICS, Readiness, State,
    client::{self, Answer},
};
use crate::{
    app::wiring,
    credentials::Credentials,
    logging,
    policy::{LivePolicy, Policy},
    telemetry::{ConnectionInfo, Telemetry},
    test_support::Fixture,
};

pub(crate) struct Server {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the fixture's config, not yet ready.
pub(crate) async fn serve(fixture: &Fixture) -> Server {
    let config = fixture.config();
    let credentials = Credentials::load(&config, wiring::credentials_spec(&config)).unwrap();
    let state = Arc::new(State {
        policy: LivePolicy::new(Policy::from_config(&config)),
        config: Arc::new(config),
        telemetry: Arc::new(Telemetry::new(Arc::new(logging::detached("info")))),
        credentials: Arc::new(credentials),
        capture: None,
        readiness: Arc::new(Readiness::new()),
    });
    let listener = AdminListener::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(listener.serve(state.clone()));
    Server { addr, state, task }
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
async fn logging_shows_the_filter_and_changes_it_on_get_or_post_refusing_a_bad_one() {
    let fixture = Fixture::new();
    let server = serve(&fixture).await;
    let control = server.state.telemetry.logging.clone();
    let answer = get(&server, "/logging").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "warn,tunnel=info\n")
    );

    let answer = get(&server, "/logging?level=debug").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "warn,tunnel=debug\n")
    );
    assert_eq!(control.current(), "warn,tunnel=debug");

    let answer = ask(&server, Method::POST, "/logging?level=warn%2Ch2%3Dtrace").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "warn,h2=trace\n")
    );
    assert_eq!(control.current(), "warn,h2=trace");

    let answer = get(&server, "/logging?level=tunnel%3Dloud").await;
    assert_eq!(answer.status, 400);
    assert!(
        answer
            .body
            .contains("not a level or a filter directive list"),
        "{}",
        answer.body
    );
    assert_eq!(
        control.current(),
        "warn,h2=trace",
        "a refused filter changes nothing"
    );
    let answer = get(&server, "/logging?level=").await;
    assert_eq!(answer.status, 400);
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
async fn connections_past_the_cap_are_closed_and_the_api_answers_again_once_one_ends() {
    use tokio::io::AsyncReadExt as _;
    let fixture = Fixture::new();
    let server = serve(&fixture).await;
    let mut held = Vec::new();
    for _ in 0..super::server::MAX_CONNECTIONS {
        held.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    // Give the server the time to take each one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut byte))
        .await
        .expect("closed at once, not left waiting");
    assert!(matches!(read, Ok(0) | Err(_)), "closed: {read:?}");
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(&server, "/metrics").await.status, 200);
}
