//! The built plugin, run as a runtime runs it, against a stand-in for the daemon's pod API.

mod support;

use std::{path::PathBuf, time::Duration};

use serde_json::{Value, json};
use support::{PodApi, plugin};
use tunnel_pod_api::{PodSpec, Request};

/// What a bridge plugin hands on: the result tunnel-cni must pass through.
fn bridge_result() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "tnl0", "mac": "0a:58:0a:f4:00:01"},
            {"name": "veth1a2b3c4d", "mac": "0a:58:0a:f4:00:02"},
            {"name": "eth0", "mac": "0a:58:0a:f4:00:03", "sandbox": "/run/netns/pod-1"},
        ],
        "ips": [{"address": "10.244.0.7/24", "gateway": "10.244.0.1", "interface": 2}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.0.1"}],
        "dns": {"nameservers": ["10.96.0.10"], "search": ["default.svc.cluster.local"]},
    })
}

fn config(socket: &std::path::Path, prev_result: Option<Value>) -> Value {
    let mut config = json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "tunnel-cni",
        "socket": socket,
        "timeout_seconds": 5,
    });
    if let Some(prev) = prev_result {
        config["prevResult"] = prev;
    }
    config
}

const POD_ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-7d9;\
                        K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=3f2a-uid";

fn env(args: &str) -> Vec<(&str, &str)> {
    vec![
        ("CNI_CONTAINERID", "c0ffee"),
        ("CNI_NETNS", "/run/netns/pod-1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        ("CNI_ARGS", args),
    ]
}

fn expected_add() -> Request {
    Request::Add(PodSpec {
        namespace: "shop".into(),
        name: "cart-7d9".into(),
        uid: "3f2a-uid".into(),
        netns: PathBuf::from("/run/netns/pod-1"),
        spiffe_id: None,
    })
}

#[test]
fn add_registers_the_pod_and_passes_the_previous_result_through() {
    let api = PodApi::daemon();
    let run = plugin(
        "ADD",
        &env(POD_ARGS),
        &config(api.socket(), Some(bridge_result())),
    );
    assert!(run.success, "{run:#?}");
    assert_eq!(run.json(), bridge_result());
    assert_eq!(api.requests(), [expected_add()]);
}

#[test]
fn add_answers_in_the_configs_version() {
    let api = PodApi::daemon();
    let mut prev = bridge_result();
    prev["cniVersion"] = json!("0.4.0");
    let mut conf = config(api.socket(), Some(prev.clone()));
    conf["cniVersion"] = json!("0.4.0");
    let run = plugin("ADD", &env(POD_ARGS), &conf);
    assert!(run.success, "{run:#?}");
    assert_eq!(run.json(), prev);
}

#[test]
fn add_without_prev_result_says_it_must_be_chained() {
    let api = PodApi::daemon();
    let run = plugin("ADD", &env(POD_ARGS), &config(api.socket(), None));
    let (code, msg) = run.cni_error();
    assert_eq!(code, 7, "{run:#?}");
    assert!(msg.contains("chained plugin"), "{msg}");
    assert_eq!(run.json()["cniVersion"], "1.0.0");
    assert!(api.requests().is_empty());
}

#[test]
fn add_without_the_pods_uid_names_it_and_asks_nothing() {
    let api = PodApi::daemon();
    let run = plugin(
        "ADD",
        &env("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-7d9"),
        &config(api.socket(), Some(bridge_result())),
    );
    let (code, msg) = run.cni_error();
    assert_eq!(code, 4, "{run:#?}");
    assert!(msg.contains("no K8S_POD_UID"), "{msg}");
    assert!(api.requests().is_empty());
}

#[test]
fn add_fails_with_the_daemons_words_when_it_refuses() {
    let api = PodApi::refusing("no identity template matches namespace shop");
    let run = plugin(
        "ADD",
        &env(POD_ARGS),
        &config(api.socket(), Some(bridge_result())),
    );
    let (code, msg) = run.cni_error();
    assert_eq!(code, 100, "{run:#?}");
    assert!(
        msg.contains("cannot protect pod shop/cart-7d9 (uid 3f2a-uid)")
            && msg.contains("no identity template matches namespace shop"),
        "{msg}"
    );
    assert!(
        run.json()["details"]
            .as_str()
            .unwrap()
            .contains("/run/netns/pod-1")
    );
    assert_eq!(api.requests(), [expected_add()]);
}

#[test]
fn add_fails_when_no_daemon_listens() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let run = plugin(
        "ADD",
        &env(POD_ARGS),
        &config(&socket, Some(bridge_result())),
    );
    let (code, msg) = run.cni_error();
    assert_eq!(code, 11, "{run:#?}");
    assert!(
        msg.contains(&socket.display().to_string()) && msg.contains("cannot reach"),
        "{msg}"
    );
}

#[test]
fn add_gives_up_on_a_silent_daemon_after_its_timeout() {
    let api = PodApi::silent();
    let mut conf = config(api.socket(), Some(bridge_result()));
    conf["timeout_seconds"] = json!(1);
    let run = plugin("ADD", &env(POD_ARGS), &conf);
    let (code, msg) = run.cni_error();
    assert_eq!(code, 11, "{run:#?}");
    assert!(msg.contains("did not answer within 1s"), "{msg}");
    // It waited, and not much longer than it was told to (generous margin for slow CI).
    assert!(run.elapsed >= Duration::from_millis(900), "{run:#?}");
    assert!(run.elapsed < Duration::from_secs(1 + 10), "{run:#?}");
    assert_eq!(api.requests(), [expected_add()]);
}

#[test]
fn del_tells_the_daemon_and_succeeds_for_a_pod_it_does_not_know() {
    let api = PodApi::daemon();
    let run = plugin(
        "DEL",
        &env(POD_ARGS),
        &config(api.socket(), Some(bridge_result())),
    );
    assert!(run.success, "{run:#?}");
    assert_eq!(run.stdout, "", "DEL prints nothing on success");
    assert_eq!(
        api.requests(),
        [Request::Del {
            uid: "3f2a-uid".into()
        }]
    );
}

#[test]
fn del_without_a_daemon_succeeds_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let run = plugin(
        "DEL",
        &env(POD_ARGS),
        &config(&dir.path().join("nobody.sock"), None),
    );
    assert!(run.success, "{run:#?}");
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("succeeding anyway"), "{}", run.stderr);
}

#[test]
fn del_with_no_netns_and_no_pod_args_succeeds_without_asking() {
    let api = PodApi::daemon();
    let run = plugin(
        "DEL",
        &[("CNI_CONTAINERID", "c0ffee"), ("CNI_IFNAME", "eth0")],
        &config(api.socket(), None),
    );
    assert!(run.success, "{run:#?}");
    assert!(api.requests().is_empty());
}

#[test]
fn del_fails_for_a_daemon_that_is_up_but_silent_so_the_runtime_repeats_it() {
    let api = PodApi::silent();
    let mut conf = config(api.socket(), None);
    conf["timeout_seconds"] = json!(1);
    let run = plugin("DEL", &env(POD_ARGS), &conf);
    let (code, msg) = run.cni_error();
    assert_eq!(code, 11, "{run:#?}");
    assert!(msg.contains("cannot unregister pod uid 3f2a-uid"), "{msg}");
}

#[test]
fn check_passes_for_a_registered_pod_and_fails_otherwise() {
    let api = PodApi::daemon();
    let conf = config(api.socket(), Some(bridge_result()));
    let run = plugin("CHECK", &env(POD_ARGS), &conf);
    let (code, msg) = run.cni_error();
    assert_eq!(code, 100, "{run:#?}");
    assert!(msg.contains("pod 3f2a-uid is not registered"), "{msg}");

    assert!(plugin("ADD", &env(POD_ARGS), &conf).success);
    let run = plugin("CHECK", &env(POD_ARGS), &conf);
    assert!(run.success, "{run:#?}");
    assert_eq!(run.stdout, "", "CHECK prints nothing on success");

    // The same pod in another namespace: its sandbox was replaced behind the daemon's back.
    let mut moved = env(POD_ARGS);
    moved[1] = ("CNI_NETNS", "/run/netns/pod-2");
    let (_, msg) = plugin("CHECK", &moved, &conf).cni_error();
    assert!(
        msg.contains("for network namespace /run/netns/pod-1, not /run/netns/pod-2"),
        "{msg}"
    );
    let uid = || "3f2a-uid".to_owned();
    assert_eq!(
        api.requests(),
        [
            Request::Check { uid: uid() },
            expected_add(),
            Request::Check { uid: uid() },
            Request::Check { uid: uid() },
        ]
    );
}

#[test]
fn version_lists_what_the_plugin_speaks() {
    let run = plugin("VERSION", &[], &json!({"cniVersion": "1.0.0"}));
    assert!(run.success, "{run:#?}");
    assert_eq!(
        run.json(),
        json!({"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]})
    );
}

#[test]
fn an_unknown_command_or_version_is_an_error() {
    let api = PodApi::daemon();
    let conf = config(api.socket(), Some(bridge_result()));
    let (code, msg) = plugin("GC", &env(POD_ARGS), &conf).cni_error();
    assert_eq!(code, 4);
    assert!(msg.contains("CNI_COMMAND is \"GC\""), "{msg}");
    let mut old = conf.clone();
    old["cniVersion"] = json!("0.3.1");
    let run = plugin("ADD", &env(POD_ARGS), &old);
    let (code, msg) = run.cni_error();
    assert_eq!(code, 1, "{run:#?}");
    assert!(msg.contains("not 0.3.1"), "{msg}");
    assert_eq!(run.json()["cniVersion"], "0.3.1");
    assert!(api.requests().is_empty());
}
