//! What the tests share: a CA in a temporary directory with the node's and the workloads'
//! certificates, the inbound side built by the production wiring from a config that names
//! them, workload servers, raw HBONE clients, a relay that can be frozen, and a log capture.

mod clients;
mod servers;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
pub use clients::{Ended, H2Client, connect_from, echo_round_trip, request, wait_end};
use rustls::sign::CertifiedKey;
pub use servers::{Echo, GoodbyeFirst, Relay, Silent};
use tokio::{sync::watch, task::JoinHandle};

pub use crate::test_support::Logs;
use crate::{
    app::wiring,
    ca::{self, Ca, InitOptions, IssueOptions, LeafSpec},
    config::Config,
    credentials::{ClientTls, Credentials, Snapshot},
    drain::{self, DrainTrigger},
    identity::{CertSummary, SpiffeId},
    proxy::{
        admission::Refusals,
        budget::BufferBudget,
        inbound::{Inbound, InboundInputs, InboundLimits},
        pool::{HboneStream, Pool, PoolError, PoolKey, PoolSettings},
    },
    telemetry::Telemetry,
    tls::{self, Credential, Trust},
};

pub const TRUST_DOMAIN: &str = "example.org";
/// The node whose inbound side the tests run.
pub const NODE: &str = "spiffe://example.org/node/b";
/// The caller; policy lets it reach `orders` and not `billing`.
pub const FRONTEND: &str = "spiffe://example.org/frontend";

/// A CA made by `tunnel ca init` in a temporary directory, and certificates it issues.
pub struct Pki {
    dir: tempfile::TempDir,
    pub trust: Trust,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory for the CA");
        ca::init(&InitOptions {
            trust_domain: TRUST_DOMAIN.parse().unwrap(),
            out: dir.path().join("ca"),
            force: false,
            root_ttl: ca::DEFAULT_ROOT_TTL,
            intermediate_ttl: ca::DEFAULT_INTERMEDIATE_TTL,
        })
        .expect("create the test CA");
        let trust = Trust::load_bundle(&dir.path().join("ca/bundle.pem"))
            .expect("load the test CA's bundle");
        Self { dir, trust }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `tunnel ca issue` for `id` into `<dir>/<name>/`.
    pub fn issue_files(&self, id: &str, name: &str) -> PathBuf {
        let out = self.dir.path().join(name);
        ca::issue(&IssueOptions {
            ca: self.dir.path().join("ca"),
            spiffe_id: id.into(),
            ttl: ca::DEFAULT_LEAF_TTL,
            out: out.clone(),
            force: true,
        })
        .unwrap_or_else(|e| panic!("issue a certificate for {id}: {e}"));
        out
    }

    /// A certificate the CA issues for `id`, loaded.
    pub fn issue(&self, id: &str) -> Arc<CertifiedKey> {
        let name = id.rsplit('/').next().unwrap_or("leaf").to_string();
        let out = self.issue_files(id, &format!("issued-{name}"));
        load(&out)
    }

    /// A certificate made as `spec` says (deliberately broken ones included), signed by the
    /// CA's intermediate.
    pub fn issue_spec(&self, spec: &LeafSpec, name: &str) -> Arc<CertifiedKey> {
        let out = self.dir.path().join(name);
        Ca::load(&self.dir.path().join("ca"))
            .expect("load the test CA")
            .issue(spec, &out, true)
            .unwrap_or_else(|e| panic!("issue {name}: {e}"));
        load(&out)
    }
}

fn load(dir: &Path) -> Arc<CertifiedKey> {
    Credential::load(&dir.join("cert.pem"), &dir.join("key.pem"))
        .expect("load an issued certificate")
        .key
}

/// A node as the daemon would run it: its config (from a CA in a temporary directory) and
/// the workload servers behind it. `orders` echoes and admits `frontend`; `billing` echoes
/// and admits only `spiffe://example.org/batch/*`.
pub struct Kit {
    pub pki: Pki,
    pub config: Config,
    pub credentials: Credentials,
    pub orders: Echo,
    pub billing: Echo,
    /// The frontend's TLS client config (expects a node identity, as without `[[peer]]`).
    pub frontend: Arc<ClientTls>,
    pub frontend_key: Arc<CertifiedKey>,
    /// What the daemon built from this kit counts and logs into.
    pub telemetry: Arc<Telemetry>,
}

impl Kit {
    pub async fn new() -> Self {
        let pki = Pki::new();
        let orders = Echo::start().await;
        let billing = Echo::start().await;
        let cert = |id: &str, name: &str| pki.issue_files(id, name).join("cert.pem");
        let node = cert(NODE, "node");
        let frontend = cert(FRONTEND, "frontend");
        let orders_cert = cert("spiffe://example.org/orders", "orders");
        let billing_cert = cert("spiffe://example.org/billing", "billing");
        let key = |cert: &Path| cert.with_file_name("key.pem");
        let text = format!(
            r#"
trust_domain = "example.org"
trust_bundle = "{dir}/ca/bundle.pem"
mode = "strict"

[node]
spiffe_id = "{NODE}"
cert = "{node}"
key = "{node_key}"

[capture]
cgroup = "/sys/fs/cgroup"
destinations = ["10.0.0.0/24"]

[[workload]]
name = "frontend"
spiffe_id = "{FRONTEND}"
cert = "{frontend}"
key = "{frontend_key}"
cgroup = "/sys/fs/cgroup/frontend"

[[workload]]
name = "orders"
spiffe_id = "spiffe://example.org/orders"
cert = "{orders_cert}"
key = "{orders_key}"
ports = [{orders_port}]

[[workload]]
name = "billing"
spiffe_id = "spiffe://example.org/billing"
cert = "{billing_cert}"
key = "{billing_key}"
ports = [{billing_port}]

[[policy]]
action = "allow"
to = "orders"
from = ["{FRONTEND}"]

[[policy]]
action = "allow"
to = "billing"
from = ["spiffe://example.org/batch/*"]
"#,
            dir = pki.dir().display(),
            node = node.display(),
            node_key = key(&node).display(),
            frontend = frontend.display(),
            frontend_key = key(&frontend).display(),
            orders_cert = orders_cert.display(),
            orders_key = key(&orders_cert).display(),
            orders_port = orders.addr.port(),
            billing_cert = billing_cert.display(),
            billing_key = key(&billing_cert).display(),
            billing_port = billing.addr.port(),
        );
        let config = Config::parse(&text, &pki.dir().join("tunnel.toml"))
            .unwrap_or_else(|e| panic!("the test config is refused:\n{e}\n{text}"));
        let credentials = Credentials::load(&config, wiring::credentials_spec(&config))
            .expect("load the test config's certificates");
        let frontend = credentials
            .current()
            .client("frontend", None)
            .expect("the frontend's TLS config")
            .clone();
        let frontend_key = load(&pki.dir().join("frontend"));
        Self {
            pki,
            config,
            credentials,
            orders,
            billing,
            frontend,
            frontend_key,
            telemetry: Telemetry::detached(),
        }
    }

    /// The inbound inputs the daemon would build from this config (`wiring::inbound_inputs`),
    /// with loopback delivery allowed (tests have nothing else to deliver to), every refusal
    /// logged (no rate limit, so the tests can read each reason), and `limits`.
    pub fn inputs(&self, limits: InboundLimits) -> InboundInputs {
        let mut inputs = wiring::inbound_inputs(
            &self.config,
            &self.credentials,
            &self.telemetry,
            &BufferBudget::new(self.config.limits.max_buffered_bytes),
            None,
        );
        inputs.deliver_to_loopback = true;
        inputs.refusals = Arc::new(Refusals::new(Duration::ZERO));
        inputs.limits = limits;
        inputs
    }

    /// A caller's TLS config presenting `certificate`, expecting the peer the daemon would:
    /// `pinned` as a `[[peer]]` entry pins it, else a node identity (`[outbound]
    /// peer_identity`).
    pub fn client_config(
        &self,
        certificate: &Arc<CertifiedKey>,
        pinned: Option<&str>,
    ) -> Arc<ClientTls> {
        let pinned = pinned.map(|id| id.parse::<SpiffeId>().unwrap());
        ClientTls::fixed(
            tls::client_config(
                certificate.clone(),
                &self.pki.trust,
                TRUST_DOMAIN.parse().unwrap(),
                wiring::peer_expectation(&self.config, pinned.as_ref()),
            )
            .expect("build the outbound TLS config"),
        )
    }

    /// Makes `inputs` present `node` instead of the configured node certificate.
    pub fn present_node(&self, inputs: &mut InboundInputs, node: &Arc<CertifiedKey>) {
        let current = self.credentials.current();
        let credential = Credential {
            key: node.clone(),
            leaf: CertSummary::parse(node.cert[0].as_ref()).expect("a parsable certificate"),
        };
        let snapshot = Snapshot::build(
            current.generation() + 1,
            current.spec().clone(),
            current.trust.clone(),
            Arc::new(credential),
            current.workloads.clone(),
        )
        .expect("build the inbound TLS config");
        inputs.snapshots = watch::channel(Arc::new(snapshot)).1;
    }

    /// The pool key of `frontend` calling through the daemon at `peer`.
    pub fn key(&self, peer: SocketAddr) -> PoolKey {
        PoolKey {
            workload: "frontend".into(),
            peer,
            via: None,
            identity: None,
        }
    }

    /// A pool counting into this kit's telemetry.
    pub fn pool(&self, settings: PoolSettings) -> Pool {
        Pool::following(settings, None, self.telemetry.clone())
    }

    /// Opens a stream from `frontend` to `orders` through the daemon at `peer`.
    pub async fn open(&self, pool: &Pool, peer: SocketAddr) -> Result<HboneStream, PoolError> {
        pool.open(
            &self.key(peer),
            &self.frontend,
            self.orders.addr,
            Bytes::new(),
            None,
        )
        .await
    }
}

/// Caps large enough not to matter, and timeouts long enough not to act, unless a test
/// lowers one.
pub fn limits() -> InboundLimits {
    InboundLimits {
        max_unauthenticated: 64,
        max_unauthenticated_per_address: 16,
        max_handshakes: 8,
        max_connections_per_peer: 8,
        max_streams_per_connection: 100,
        handshake_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        keepalive: Duration::from_secs(30),
    }
}

/// Pool settings that do not act during a test, unless the test lowers one.
pub fn pool_settings() -> PoolSettings {
    PoolSettings {
        max_streams_per_connection: 100,
        idle_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(2),
        keepalive: Duration::from_secs(30),
        budget: BufferBudget::new(crate::config::Limits::DEFAULT.max_buffered_bytes),
    }
}

/// An inbound side running on 127.0.0.1.
pub struct Daemon {
    pub addr: SocketAddr,
    pub refusals: Arc<Refusals>,
    drain: Option<DrainTrigger>,
    task: JoinHandle<()>,
}

impl Daemon {
    /// Binds 127.0.0.1 on a free port and serves `inputs`; the bound port joins the
    /// daemon's own ports as it does in production.
    pub fn start(inputs: InboundInputs) -> Self {
        Self::start_at("127.0.0.1:0".parse().unwrap(), inputs)
    }

    pub fn start_at(addr: SocketAddr, mut inputs: InboundInputs) -> Self {
        let inbound = Inbound::bind(&[addr], 128).expect("bind the inbound listener");
        let addr = inbound.addresses()[0];
        inputs.own_ports.insert(addr.port());
        let refusals = inputs.refusals.clone();
        let (trigger, watcher) = drain::channel();
        let task = tokio::spawn(
            inbound.run(
                crate::proxy::inbound::InboundService::new(inputs)
                    .expect("the handshake thread starts"),
                watcher,
            ),
        );
        Self {
            addr,
            refusals,
            drain: Some(trigger),
            task,
        }
    }

    /// Signals a drain (open connections get GOAWAY, their streams keep being served) and
    /// waits until the listener is closed.
    pub async fn drain(&mut self) {
        let trigger = self.drain.take().expect("drained once");
        tokio::spawn(trigger.drain(Duration::from_secs(30)));
        (&mut self.task).await.expect("the inbound side ran");
    }
}

/// Lets `inputs` deliver to `port` as workload `workload` (a server the test holds).
pub fn add_workload_port(inputs: &mut InboundInputs, port: u16, workload: &str) {
    Arc::make_mut(&mut inputs.workloads_by_port).insert(port, workload.into());
}
