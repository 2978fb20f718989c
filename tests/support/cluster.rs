//! The cluster `tests/pods.rs` builds: two "nodes" (test hosts 10.0.0.1 and 10.0.0.2), each
//! with dual-stack pods in network namespaces of their own behind a Linux bridge. The pods'
//! network is made by Debian's containernetworking-plugins `bridge` + `host-local`, driven
//! exactly as a container runtime drives CNI (testbed's `CniRuntime`), with `tunnel-cni`
//! chained after them. Each node's daemon runs under the node's capture cgroup, in a cgroup
//! namespace of its own, as a DaemonSet's container does.
//!
//! Kubernetes itself cannot run on the test machines: the daemon's API calls (a pod's Pod at
//! ADD, and the list+watch of every Pod its cluster view keeps) are answered by
//! `tests/support/kubeapi.py`, an HTTPS stand-in that speaks the real list and watch protocol
//! (resourceVersions, bookmarks, the 410 ERROR event) with the real object and list shapes.
//! It serves what three files list, which the tests edit: the pods (records it makes Pods of:
//! `add_pod`, `edit_api_pod`), and the Services and EndpointSlices (the objects themselves,
//! as a user writes them, completed with the API server's defaults: `set_api_services`,
//! `set_api_slices`), each resource's list and watch apart, on one resourceVersion counter.
//! `api_control` drops its watches, compacts its history or takes it away for a while.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use serde_json::{Value, json};
use testbed::{CniFailure, CniRuntime, Host, HostCommand, Netns};

use super::support::{LONG, NETPROBE, Pki, Proc, SHORT, TUNNEL, Testbed, admin_get};

pub const KUBEAPI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/support/kubeapi.py");
/// Debian's reference plugins (package containernetworking-plugins).
pub const CNI_PLUGINS: &str = "/usr/lib/cni";
pub const API_TOKEN: &str = "test-service-account-token";

pub static NEXT_POD: AtomicU32 = AtomicU32::new(0);

/// `tunnel-cni`, built with the workspace (`cargo xtask test` builds every package first).
pub fn tunnel_cni() -> PathBuf {
    let path = Path::new(TUNNEL).with_file_name("tunnel-cni");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p tunnel-cni` (cargo xtask test does)",
        path.display()
    );
    path
}

pub struct Node {
    pub host: Host,
    pub label: String,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub cni: CniRuntime,
    /// The same network without `tunnel-cni`: how pods made before the DaemonSet was
    /// installed were set up.
    pub plain_cni: CniRuntime,
    pub daemon: Option<Proc>,
    pub _kubeapi: Proc,
}

pub struct Cluster {
    pub testbed: Testbed,
    pub pki: Pki,
    pub nodes: Vec<Node>,
    /// The pods the API stand-in knows (it reads the file on every request).
    pub api_pods: PathBuf,
    /// The Services the API stand-in knows, as a JSON list of Service objects
    /// (`set_api_services`).
    pub api_services: PathBuf,
    /// The EndpointSlices the API stand-in knows, as a JSON list of EndpointSlice objects
    /// (`set_api_slices`).
    pub api_slices: PathBuf,
}

pub struct Pod {
    pub netns: Netns,
    pub node: usize,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub container: String,
    pub ip: String,
    /// The pod's IPv6 address (every pod is dual stack).
    pub ip6: String,
    pub cgroup: PathBuf,
    /// The sandbox's process (the "pause" container), for a pod made by
    /// [`Cluster::add_running_pod`]: killed when dropped.
    pub pause: Option<Proc>,
}

impl Pod {
    /// A process of the pod: in its network namespace and its cgroup (below the node's
    /// capture cgroup, as the kubelet puts a pod's containers under kubepods).
    pub fn command(&self, program: &str) -> HostCommand {
        HostCommand::new(self.netns.path(), self.cgroup.clone(), program)
    }

    pub fn netprobe(&self, args: &[&str]) -> testbed::Output {
        self.command("python3")
            .arg(NETPROBE)
            .args(args)
            .output(LONG)
    }

    pub fn serve(&self, args: &[&str]) -> Proc {
        let mut server = self.command("python3").arg(NETPROBE).args(args).spawn();
        server.wait_for("listening", SHORT);
        server
    }

    /// TCP listeners in the pod's namespace (`ss`), one line each.
    pub fn listeners(&self) -> String {
        self.command("ss").args(["-Hltn"]).output(SHORT).stdout
    }

    pub fn k8s_args(&self) -> [(&str, &str); 3] {
        [
            ("K8S_POD_NAMESPACE", self.namespace.as_str()),
            ("K8S_POD_NAME", self.name.as_str()),
            ("K8S_POD_UID", self.uid.as_str()),
        ]
    }
}

/// How a cluster's daemons differ between tests.
pub struct Setup<'a> {
    pub mode: &'a str,
    /// Appended to each config.
    pub policy: &'a str,
    /// `[pods]`' certificate keys; `None`: issued from the test CA's intermediate.
    pub pod_certificates: Option<&'a str>,
}

/// The config a node's daemon runs with: the shape of deploy/kubernetes/30-configmap.yaml
/// (node and pod certificates issued by the daemon, `${NODE_NAME}`, the Istio identity
/// template), with this testbed's paths.
pub fn node_config(cluster_dir: &Path, testbed: &Testbed, label: &str, setup: &Setup) -> String {
    let dir = cluster_dir.display();
    let Setup {
        mode,
        policy,
        pod_certificates,
    } = setup;
    let issued = format!("issuer = \"{dir}/ca\"\nttl = \"1h\"");
    let pod_certificates = pod_certificates.unwrap_or(&issued);
    let cgroup = testbed.cgroup(&format!("{label}/pods"));
    let bpf = testbed.bpf_dir(label);
    super::support::sockmap_from_env(format!(
        r#"
trust_domain = "example.org"
trust_bundle = "{dir}/ca/bundle.pem"
mode = "{mode}"

[node]
spiffe_id = "spiffe://example.org/node/${{NODE_NAME}}"
issuer = "{dir}/ca"
ttl = "1h"

[listen]
admin = "127.0.0.1:15000"
control = "{dir}/{label}/control.sock"

[capture]
cgroup = "{cgroup}"
destinations = ["10.1.0.0/16", "fd01::/16"]
bpf_dir = "{bpf}"

[outbound]
peer_identity = "spiffe://example.org/ns/*"

[pods]
socket = "{dir}/{label}/pods.sock"
state_dir = "{dir}/{label}/state"
spiffe_id = "spiffe://{{trust_domain}}/ns/{{namespace}}/sa/{{service_account}}"
{pod_certificates}

[kubernetes]
api_server = "https://127.0.0.1:6443"
token_file = "{dir}/{label}/kube/token"
ca_file = "{dir}/{label}/kube/ca.crt"
node_name = "${{NODE_NAME}}"
service_cidrs = ["10.96.0.0/16", "fd00:96::/112"]
{policy}
"#,
        cgroup = cgroup.display(),
        bpf = bpf.display(),
    ))
}

impl Cluster {
    /// Two nodes with their daemons running in strict mode; `policy` is appended to both
    /// configs.
    pub fn new(name: &str, policy: &str) -> Self {
        Self::with(
            name,
            &Setup {
                mode: "strict",
                policy,
                pod_certificates: None,
            },
        )
    }

    pub fn with(name: &str, setup: &Setup) -> Self {
        Self::with_daemons(name, setup, &[1, 0])
    }

    /// Two nodes, with daemons started on `started` only, in that order (a node without
    /// one stands for a node the DaemonSet has not reached yet).
    pub fn with_daemons(name: &str, setup: &Setup, started: &[usize]) -> Self {
        let mut testbed = Testbed::new(name);
        let pki = Pki::new(testbed.dir());
        let dir = testbed.dir().to_path_buf();
        let api_pods = dir.join("api-pods.json");
        let api_services = dir.join("api-services.json");
        let api_slices = dir.join("api-slices.json");
        for file in [&api_pods, &api_services, &api_slices] {
            fs::write(file, "[]").unwrap();
        }
        let mut nodes = Vec::new();
        for index in 1..=2u8 {
            let label = format!("n{index}");
            let host = testbed.add_host(&label);
            let node_dir = dir.join(&label);
            fs::create_dir_all(node_dir.join("kube")).unwrap();
            fs::write(node_dir.join("kube/token"), API_TOKEN).unwrap();
            // Each node reaches "its" API server on its own loopback.
            let mut kubeapi = host
                .command("python3")
                .arg(KUBEAPI)
                .arg(node_dir.join("kube"))
                .args(["6443", API_TOKEN])
                .arg(&api_pods)
                .arg(&api_services)
                .arg(&api_slices)
                .spawn();
            kubeapi.wait_for("listening", SHORT);
            let other = 3 - index;
            host.command("ip")
                .args(["route", "add", &format!("10.1.{other}.0/24"), "via"])
                .arg(format!("10.0.0.{other}"))
                .output(SHORT);
            host.command("ip")
                .args(["-6", "route", "add", &format!("fd01:{other}::/64"), "via"])
                .arg(format!("fd00::{other}"))
                .output(SHORT);
            host.command("sysctl")
                .args([
                    "-qw",
                    "net.ipv4.ip_forward=1",
                    "net.ipv6.conf.all.forwarding=1",
                ])
                .output(SHORT);
            let config = dir.join(format!("{label}.toml"));
            fs::write(&config, node_config(&dir, &testbed, &label, setup)).unwrap();
            // Under the capture cgroup, as the DaemonSet's own pod is under kubepods: the daemon
            // must find (and exempt) its real cgroup from inside its cgroup namespace.
            testbed.cgroup(&format!("{label}/pods/tunnel-daemon"));
            let conflist = json!({
                "cniVersion": "1.0.0",
                "name": "pods",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": "cni0",
                        "isGateway": true,
                        "ipMasq": false,
                        "ipam": {
                            "type": "host-local",
                            "dataDir": node_dir.join("ipam"),
                            // Dual stack: every pod gets an IPv4 and an IPv6 address.
                            "ranges": [
                                [{ "subnet": format!("10.1.{index}.0/24") }],
                                [{ "subnet": format!("fd01:{index}::/64") }]
                            ],
                            "routes": [{ "dst": "0.0.0.0/0" }, { "dst": "::/0" }]
                        }
                    },
                    {
                        "type": "tunnel-cni",
                        "socket": node_dir.join("pods.sock"),
                        "timeout_seconds": 10
                    }
                ]
            });
            let plugin_dirs = vec![
                tunnel_cni().parent().unwrap().to_path_buf(),
                PathBuf::from(CNI_PLUGINS),
            ];
            let mut plain = conflist.clone();
            plain["plugins"]
                .as_array_mut()
                .expect("plugins")
                .retain(|p| p["type"] != "tunnel-cni");
            let plain_cni = CniRuntime::new(plugin_dirs.clone(), plain).in_netns(&host.netns);
            let cni = CniRuntime::new(plugin_dirs, conflist).in_netns(&host.netns);
            nodes.push(Node {
                host,
                plain_cni,
                socket: node_dir.join("pods.sock"),
                state_dir: node_dir.join("state"),
                label,
                config,
                cni,
                daemon: None,
                _kubeapi: kubeapi,
            });
        }
        let mut cluster = Self {
            testbed,
            pki,
            nodes,
            api_pods,
            api_services,
            api_slices,
        };
        for &node in started {
            cluster.start(node);
        }
        cluster
    }

    /// Stops a node's daemon (SIGTERM, as the kubelet stops a container) and waits for it
    /// to exit.
    pub fn stop(&mut self, node: usize) {
        if let Some(mut daemon) = self.nodes[node].daemon.take() {
            daemon.signal("TERM");
            assert!(
                daemon.wait_timeout(LONG).is_some(),
                "the daemon of {} did not exit",
                self.nodes[node].label
            );
        }
    }

    /// Starts (or restarts) a node's daemon in its own cgroup, and in a cgroup namespace of
    /// its own as a container runtime would put it (its /proc/self/cgroup then says `/`);
    /// waits until its pod API is served.
    pub fn start(&mut self, node: usize) {
        self.nodes[node].daemon = None; // SIGKILL and reap the earlier one, if any
        let daemon = self.spawn_daemon(node);
        self.nodes[node].daemon = Some(daemon);
    }

    /// A daemon for a node, as [`Cluster::start`] runs it, beside any already running there.
    pub fn spawn_daemon(&self, node: usize) -> Proc {
        let testbed = &self.testbed;
        let n = &self.nodes[node];
        let mut daemon = n
            .host
            .command("unshare")
            .args([
                "--cgroup",
                TUNNEL,
                "run",
                "--log-level",
                "debug",
                "--config",
            ])
            .arg(&n.config)
            .env("NODE_NAME", &n.label)
            .in_cgroup(&testbed.cgroup(&format!("{}/pods/tunnel-daemon", n.label)))
            .spawn();
        daemon.wait_for("pod API ready", SHORT);
        daemon
    }

    pub fn logs(&self, node: usize) -> String {
        self.nodes[node].daemon.as_ref().expect("started").logs()
    }

    /// Makes the pod's namespace, tells the API stand-in about it (`service_account`, on
    /// this node), and runs the CNI ADD chain as a runtime would: the pod, and whether the
    /// chain succeeded (the pod's address is known only then).
    pub fn add_pod(
        &self,
        node: usize,
        namespace: &str,
        name: &str,
        service_account: Option<&str>,
    ) -> (Pod, Result<(), CniFailure>) {
        let n = &self.nodes[node];
        let serial = NEXT_POD.fetch_add(1, Ordering::Relaxed);
        let uid = format!("0000{serial:04}-1b7e-4c1e-9d7a-2f5a8e0c3b11");
        if let Some(sa) = service_account {
            let mut pods: Vec<Value> =
                serde_json::from_str(&fs::read_to_string(&self.api_pods).unwrap()).unwrap();
            pods.push(json!({
                "namespace": namespace, "name": name, "uid": uid,
                "serviceAccountName": sa, "nodeName": n.label,
            }));
            fs::write(&self.api_pods, serde_json::to_vec(&pods).unwrap()).unwrap();
        }
        let mut pod = Pod {
            netns: Netns::new("p"),
            node,
            namespace: namespace.into(),
            name: name.into(),
            uid,
            container: format!("sandbox{serial}"),
            ip: String::new(),
            ip6: String::new(),
            cgroup: self
                .testbed
                .cgroup(&format!("{}/pods/{name}-{serial}", n.label)),
            pause: None,
        };
        match n
            .cni
            .add(&pod.container, &pod.netns.path(), "eth0", &pod.k8s_args())
        {
            Ok(result) => {
                let address = result["ips"][0]["address"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no address in the chain's result: {result}"));
                pod.ip = address.split('/').next().unwrap().into();
                pod.ip6 = result["ips"][1]["address"]
                    .as_str()
                    .and_then(|a| a.split('/').next())
                    .unwrap_or_else(|| panic!("no IPv6 address in the chain's result: {result}"))
                    .into();
                // As the kubelet does once the network is up: the pod's status has its
                // addresses, both of a dual-stack pod's (podIP is the first, IPv4).
                let (ip, ip6) = (pod.ip.clone(), pod.ip6.clone());
                self.edit_api_pod(&pod.uid, |record| {
                    record["podIP"] = json!(ip);
                    record["podIPs"] = json!([ip, ip6]);
                });
                (pod, Ok(()))
            }
            Err(failure) => (pod, Err(failure)),
        }
    }

    /// A pod as one made before the DaemonSet was installed looks to a node: its network
    /// set up by the conflist without `tunnel-cni` (so no daemon knows it), its sandbox
    /// process (`sleep infinity`, the "pause" container) in its namespace and in the cgroup
    /// the kubelet makes for it under the capture cgroup (kubepods): the cgroupfs driver's
    /// `besteffort/pod<uid>/<container>`, or the systemd driver's
    /// `kubepods-besteffort.slice/kubepods-besteffort-pod<uid with _>.slice/<scope>`. The
    /// API stand-in knows it, running on this node with both addresses. Its uid has this
    /// process's id in it: no other test binary's pod can have it.
    pub fn add_running_pod(&self, node: usize, name: &str, systemd_driver: bool) -> Pod {
        let n = &self.nodes[node];
        let serial = NEXT_POD.fetch_add(1, Ordering::Relaxed);
        let uid = format!(
            "{:08x}-{serial:04x}-4e1a-9d7a-2f5a8e0c3b11",
            std::process::id()
        );
        let container = format!("sandbox{serial}");
        let pod_cgroup = if systemd_driver {
            format!(
                "{}/pods/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
                n.label,
                uid.replace('-', "_")
            )
        } else {
            format!("{}/pods/besteffort/pod{uid}", n.label)
        };
        let netns = Netns::new("p");
        let result = n
            .plain_cni
            .add(
                &container,
                &netns.path(),
                "eth0",
                &[
                    ("K8S_POD_NAMESPACE", "shop"),
                    ("K8S_POD_NAME", name),
                    ("K8S_POD_UID", &uid),
                ],
            )
            .unwrap_or_else(|e| panic!("ADD of {name} without tunnel-cni: {e}"));
        let address = |i: usize| -> String {
            result["ips"][i]["address"]
                .as_str()
                .and_then(|a| a.split('/').next())
                .unwrap_or_else(|| panic!("no address {i} in the chain's result: {result}"))
                .into()
        };
        let (ip, ip6) = (address(0), address(1));
        let mut pods: Vec<Value> =
            serde_json::from_str(&fs::read_to_string(&self.api_pods).unwrap()).unwrap();
        pods.push(json!({
            "namespace": "shop", "name": name, "uid": uid,
            "serviceAccountName": name, "nodeName": n.label,
            "podIP": ip, "podIPs": [ip, ip6],
        }));
        fs::write(&self.api_pods, serde_json::to_vec(&pods).unwrap()).unwrap();
        let pause = HostCommand::new(
            netns.path(),
            self.testbed.cgroup(&format!("{pod_cgroup}/pause")),
            "sleep",
        )
        .arg("infinity")
        .spawn();
        // Running once it is in the pod's namespace (the shell joins the cgroup first).
        let namespace = |path: &Path| fs::metadata(path).map(|m| (m.dev(), m.ino())).ok();
        let pod_netns = namespace(&netns.path());
        let in_pod = Path::new("/proc")
            .join(pause.pid().to_string())
            .join("ns/net");
        testbed::wait_until(
            SHORT,
            Duration::from_millis(5),
            || pod_netns.is_some() && namespace(&in_pod) == pod_netns,
            || format!("the sandbox process of {name} did not enter its namespace"),
        );
        Pod {
            netns,
            node,
            namespace: "shop".into(),
            name: name.into(),
            uid,
            container,
            ip,
            ip6,
            // Its application's processes: a container's cgroup beside the sandbox's.
            cgroup: self.testbed.cgroup(&format!("{pod_cgroup}/app")),
            pause: Some(pause),
        }
    }

    /// Changes what the API stand-in says of a pod (if it knows the pod).
    pub fn edit_api_pod(&self, uid: &str, edit: impl FnOnce(&mut Value)) {
        let mut pods: Vec<Value> =
            serde_json::from_str(&fs::read_to_string(&self.api_pods).unwrap()).unwrap();
        if let Some(record) = pods.iter_mut().find(|p| p["uid"] == uid) {
            edit(record);
        }
        fs::write(&self.api_pods, serde_json::to_vec(&pods).unwrap()).unwrap();
    }

    /// Sets the Services the API stand-in serves (to every node's daemon): Service objects as
    /// a user writes them (`metadata.namespace`, `.name`, `.uid` (required), `.labels`,
    /// `spec`); the stand-in sets `apiVersion`, `kind`, `resourceVersion` and
    /// `creationTimestamp` and fills in the API server's defaults (kubeapi.py's docstring
    /// says which). What changed since the last call becomes watch events.
    #[allow(
        dead_code,
        reason = "tests/services.rs sets them; tests/pods.rs includes this file too"
    )]
    pub fn set_api_services(&self, services: &[Value]) {
        write_atomically(&self.api_services, services);
    }

    /// Sets the EndpointSlices (discovery.k8s.io/v1) the API stand-in serves, as
    /// [`Cluster::set_api_services`] does the Services: objects with `metadata` (labelled
    /// `kubernetes.io/service-name` for their Service), `addressType`, `endpoints` and
    /// `ports`.
    #[allow(
        dead_code,
        reason = "tests/services.rs sets them; tests/pods.rs includes this file too"
    )]
    pub fn set_api_slices(&self, slices: &[Value]) {
        write_atomically(&self.api_slices, slices);
    }

    /// Tells a node's API stand-in one control command (`drop-watches`, `drop-watches
    /// abrupt`, `compact`, `pause SECONDS`: kubeapi.py's docstring says what each does) and
    /// waits until it has taken effect (the stand-in removes the file then).
    pub fn api_control(&self, node: usize, command: &str) {
        let kube = self
            .testbed
            .dir()
            .join(&self.nodes[node].label)
            .join("kube");
        let file = kube.join("control");
        let tmp = kube.join("control.tmp");
        fs::write(&tmp, format!("{command}\n")).unwrap();
        fs::rename(&tmp, &file).unwrap();
        let deadline = std::time::Instant::now() + SHORT;
        while file.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the API stand-in of {} did not take `{command}`",
                self.nodes[node].label
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    pub fn del_pod(&self, pod: &Pod) {
        let n = &self.nodes[pod.node];
        n.cni
            .del(&pod.container, &pod.netns.path(), "eth0", &pod.k8s_args())
            .unwrap_or_else(|e| panic!("CNI DEL of {}: {e}", pod.name));
    }

    /// `tunnel pod <args>` against a node's registration socket.
    pub fn pod_cli(&self, node: usize, args: &[&str]) -> testbed::Output {
        let n = &self.nodes[node];
        n.host
            .command(TUNNEL)
            .arg("pod")
            .args(args)
            .arg("--socket")
            .arg(&n.socket)
            .output(SHORT)
    }
}

/// Writes a JSON list whole: to `<file>.tmp`, then renamed over the file, so the API stand-in
/// (which reads it every 50 ms) never sees half of it.
fn write_atomically(path: &Path, items: &[Value]) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    fs::write(&tmp, serde_json::to_vec(items).unwrap()).unwrap();
    fs::rename(&tmp, path).unwrap();
}

pub fn add(cluster: &Cluster, node: usize, name: &str) -> Pod {
    let (pod, added) = cluster.add_pod(node, "shop", name, Some(name));
    added.unwrap_or_else(|e| panic!("ADD of {name}: {e}"));
    pod
}

/// One 32-byte block of netprobe's payload: any of it in clear on a wire would show.
pub fn payload_block() -> Vec<u8> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys; sys.stdout.buffer.write(hashlib.sha256(b'tunnel-test-payload').digest()*2)",
        ])
        .output()
        .unwrap();
    out.stdout
}

pub fn line_with<'a>(logs: &'a str, needles: &[&str]) -> Option<&'a str> {
    logs.lines().find(|l| needles.iter().all(|n| l.contains(n)))
}

/// Process figures of a daemon: open fds, threads, resident memory.
pub fn process_figures(pid: u32) -> (usize, usize, u64) {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let threads = fs::read_dir(format!("/proc/{pid}/task")).unwrap().count();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    (fds, threads, rss_kib)
}

/// Each capture map's entries, counted when asked (`/debug/capture`), as "NAME=N ...".
pub fn map_entries(node: &Node) -> String {
    let capture: Value = serde_json::from_str(&admin_get(&node.host, "/debug/capture")).unwrap();
    capture["maps"]
        .as_array()
        .expect("maps in /debug/capture")
        .iter()
        .filter(|m| !m["entries"].is_null())
        .map(|m| format!("{}={}", m["name"].as_str().unwrap(), m["entries"]))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Tasks alive in the daemon's runtime (`tunnel_runtime_alive_tasks`).
pub fn alive_tasks(node: &Node) -> u64 {
    admin_get(&node.host, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix("tunnel_runtime_alive_tasks "))
        .and_then(|v| v.trim().parse().ok())
        .expect("tunnel_runtime_alive_tasks in /metrics")
}
