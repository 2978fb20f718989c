//! End to end: the built plugin chained after the reference `bridge` and `host-local`
//! plugins (Debian's containernetworking-plugins), run by a libcni-like runtime with real
//! network namespaces for the node and the pod, against a stand-in for the daemon's pod API.
//! Needs root. Every address is inside the namespaces the test makes.

mod support;

use std::{
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

use serde_json::{Value, json};
use support::{PodApi, TUNNEL_CNI};
use testbed::{CniRuntime, Netns};
use tunnel_pod_api::{PodSpec, Request, Response};

const REFERENCE_PLUGINS: &str = "/usr/lib/cni";
const NETWORK: &str = "tnl-e2e";

/// A node: its namespace with the bridge, the plugin dirs and host-local's state, all
/// removed on drop (also when the test panics).
struct Node {
    runtime: CniRuntime,
    subnet_prefix: String,
    ipam: tempfile::TempDir,
    _plugins: tempfile::TempDir,
    netns: Netns,
}

impl Node {
    /// `third_octet` keeps each test's pod network apart from the others'.
    fn new(api: &PodApi, third_octet: u8) -> Self {
        assert!(
            Path::new(REFERENCE_PLUGINS).join("bridge").is_file(),
            "{REFERENCE_PLUGINS}/bridge is missing: run `cargo xtask setup` \
             (containernetworking-plugins)"
        );
        let netns = Netns::new("node");
        // Our plugin by its type name, first in CNI_PATH; the reference plugins after it.
        let plugins = tempfile::tempdir().unwrap();
        symlink(TUNNEL_CNI, plugins.path().join("tunnel-cni")).unwrap();
        let ipam = tempfile::tempdir().unwrap();
        // The second octet varies with the pid, so that runs side by side differ too.
        let subnet_prefix = format!("10.{}.{third_octet}", 100 + std::process::id() % 100);
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "tnl0",
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": format!("{subnet_prefix}.0/24")}]],
                        "dataDir": ipam.path(),
                    },
                },
                {"type": "tunnel-cni", "socket": api.socket(), "timeout_seconds": 5},
            ],
        });
        let runtime = CniRuntime::new(
            vec![plugins.path().to_owned(), REFERENCE_PLUGINS.into()],
            conflist,
        )
        .in_netns(netns.name());
        Self {
            runtime,
            subnet_prefix,
            ipam,
            _plugins: plugins,
            netns,
        }
    }

    /// host-local's record of an allocated address: a file named after it.
    fn lease(&self, ip: &str) -> PathBuf {
        self.ipam.path().join(NETWORK).join(ip)
    }
}

fn pod_args(uid: &str) -> [(&'static str, &str); 3] {
    [
        ("K8S_POD_NAMESPACE", "shop"),
        ("K8S_POD_NAME", "cart-0"),
        ("K8S_POD_UID", uid),
    ]
}

/// The pod's IPv4 address (without the prefix length) from a CNI result.
fn address(result: &Value) -> String {
    let cidr = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in the result {result}"));
    cidr.split('/').next().unwrap().to_owned()
}

#[test]
fn a_pod_gets_its_address_from_the_bridge_and_is_registered_until_deleted() {
    let api = PodApi::daemon();
    let node = Node::new(&api, 1);
    let pod = Netns::new("pod");
    let container = format!("sandbox-{}-a", std::process::id());
    let uid = format!("uid-{}-a", std::process::id());

    let result = node
        .runtime
        .add(&container, &pod.path(), "eth0", &pod_args(&uid))
        .unwrap_or_else(|e| panic!("{e}"));
    // The chain's result is the bridge's, passed through: the pod's address is there.
    let ip = address(&result);
    assert!(
        ip.starts_with(&format!("{}.", node.subnet_prefix)),
        "{result}"
    );
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(
        result["ips"][0]["gateway"],
        format!("{}.1", node.subnet_prefix)
    );
    let sandbox = pod.path().display().to_string();
    assert!(
        result["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "eth0" && i["sandbox"] == sandbox.as_str()),
        "{result}"
    );
    assert!(
        pod.ip(&["-4", "-o", "addr", "show", "dev", "eth0"])
            .contains(&format!("{ip}/24")),
        "the pod's eth0 has no {ip}"
    );
    assert!(
        node.netns
            .ip(&["-4", "-o", "addr", "show", "dev", "tnl0"])
            .contains(&format!("{}.1/24", node.subnet_prefix)),
        "the node's bridge is not the gateway"
    );
    assert!(node.lease(&ip).exists(), "host-local recorded no lease");
    assert_eq!(
        api.requests(),
        [Request::Add(PodSpec {
            namespace: "shop".into(),
            name: "cart-0".into(),
            uid: uid.clone(),
            netns: pod.path(),
            spiffe_id: None,
        })]
    );

    node.runtime
        .check(&container, &pod.path(), "eth0", &pod_args(&uid))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        api.requests().last(),
        Some(&Request::Check { uid: uid.clone() })
    );

    node.runtime
        .del(&container, &pod.path(), "eth0", &pod_args(&uid))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        api.requests().last(),
        Some(&Request::Del { uid: uid.clone() })
    );
    assert!(
        !pod.ip(&["-o", "link", "show"]).contains("eth0"),
        "the pod still has eth0 after DEL"
    );
    assert!(
        !node.lease(&ip).exists(),
        "host-local kept the lease of {ip}"
    );
    // A runtime repeats DEL; nothing is left to undo, and that is success.
    node.runtime
        .del(&container, &pod.path(), "eth0", &pod_args(&uid))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_refusing_daemon_fails_the_chains_add_and_the_runtimes_del_cleans_up() {
    const WORDS: &str = "no identity template matches namespace shop";
    // As the daemon does: it refuses this pod, and forgets unknown pods without complaint.
    let api = PodApi::start(|request| {
        Some(match request {
            Request::Del { .. } => Response::Removed {
                was_registered: false,
            },
            _ => Response::Error {
                error: WORDS.into(),
            },
        })
    });
    let node = Node::new(&api, 2);
    let pod = Netns::new("pod");
    let container = format!("sandbox-{}-b", std::process::id());
    let uid = format!("uid-{}-b", std::process::id());

    let failure = node
        .runtime
        .add(&container, &pod.path(), "eth0", &pod_args(&uid))
        .expect_err("ADD must fail when the daemon refuses the pod");
    assert_eq!(failure.plugin, "tunnel-cni", "{failure}");
    assert_eq!(failure.code, Some(100), "{failure}");
    assert!(failure.msg.contains(WORDS), "{failure}");
    assert!(node.runtime.cached_result(&container, "eth0").is_none());

    // The bridge had given the pod an address before tunnel-cni refused; the runtime tears
    // the failed sandbox down with DEL, which releases it.
    let leases = || {
        std::fs::read_dir(node.ipam.path().join(NETWORK))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(
        leases(),
        1,
        "the bridge allocated an address before the refusal"
    );
    node.runtime
        .del(&container, &pod.path(), "eth0", &pod_args(&uid))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(leases(), 0, "DEL did not release the address");
    assert!(!pod.ip(&["-o", "link", "show"]).contains("eth0"));
    assert_eq!(
        api.requests().last(),
        Some(&Request::Del { uid: uid.clone() })
    );
}
