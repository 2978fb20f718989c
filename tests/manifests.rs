//! The Kubernetes manifests in `deploy/kubernetes/`: every file valid against the API's
//! schemas (`kubernetes-validate --strict`, which refuses unknown fields), then what a schema
//! cannot say: the update strategy the daemon's listeners allow, the probes, the
//! capabilities instead of `privileged`, mounts the API server would refuse, and that the
//! DaemonSet, its ConfigMap's embedded config and the CNI installer agree on every path.
//!
//! The validator comes from PyPI, in a venv that `cargo xtask setup` makes at
//! `target/tools/kubernetes-validate`; without it these tests fail, saying so. YAML is read
//! by the PyYAML of that venv (a dependency of the validator) and handed over as JSON.
//!
//! Built as a test of `testbed` rather than `tunnel`: it needs no daemon binary, so it
//! builds in seconds and runs without root.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::{Value, json};

/// Kubernetes versions the manifests must be valid for: 1.31, where the container
/// `securityContext.appArmorProfile` field is GA (the oldest release these manifests can be
/// applied to), and the newest release the pinned validator knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.31.0", "1.37.0"];

/// What `kubectl apply -f deploy/kubernetes/` applies, in this order (it does not enter
/// subfolders, which hold the CA Secret's example and the uninstall DaemonSet).
const APPLIED: [&str; 5] = [
    "00-namespace.yaml",
    "10-serviceaccount.yaml",
    "20-rbac.yaml",
    "30-configmap.yaml",
    "40-daemonset.yaml",
];

const NAMESPACE: &str = "tunnel-system";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn manifests_dir() -> PathBuf {
    workspace().join("deploy/kubernetes")
}

fn venv_bin(tool: &str) -> PathBuf {
    let path = workspace()
        .join("target/tools/kubernetes-validate/bin")
        .join(tool);
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask setup`, which installs kubernetes-validate (and \
         PyYAML) in a venv there",
        path.display()
    );
    path
}

/// Every YAML file under `deploy/kubernetes/`, subfolders included, sorted.
fn manifest_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&manifests_dir(), &mut files);
    files.sort();
    assert!(
        !files.is_empty(),
        "no manifests under {}",
        manifests_dir().display()
    );
    files
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The documents of one file (relative to `deploy/kubernetes/`), as JSON.
fn documents(file: &str) -> Vec<Value> {
    let path = manifests_dir().join(file);
    let output = Command::new(venv_bin("python"))
        .args([
            "-c",
            "import json, sys, yaml\n\
             with open(sys.argv[1]) as f:\n    \
                 print(json.dumps([d for d in yaml.safe_load_all(f) if d is not None]))",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "reading {}: {}",
        path.display(),
        said(&output)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The one object of `kind` named `name` in `file`.
fn object(file: &str, kind: &str, name: &str) -> Value {
    let found: Vec<Value> = documents(file)
        .into_iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "{file}: expected one {kind} {name}");
    found.into_iter().next().unwrap()
}

fn daemonset() -> Value {
    object("40-daemonset.yaml", "DaemonSet", "tunnel")
}

/// The containers and init containers of a pod spec.
fn all_containers(pod: &Value) -> impl Iterator<Item = &Value> {
    ["containers", "initContainers"]
        .into_iter()
        .filter_map(|list| pod[list].as_array())
        .flatten()
}

/// The container (or init container) `name` of a pod spec.
fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    all_containers(pod)
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The value of `--flag=VALUE` in a container's args.
fn flag<'a>(container: &'a Value, flag: &str) -> &'a str {
    let prefix = format!("{flag}=");
    container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("{}: no {flag}=... argument", container["name"]))
}

/// Where a container mounts the volume `name`, and the volume itself.
fn mount<'a>(pod: &'a Value, container: &'a Value, name: &str) -> (&'a str, &'a Value) {
    let path = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == name)
        .and_then(|m| m["mountPath"].as_str())
        .unwrap_or_else(|| panic!("{}: volume {name} is not mounted", container["name"]));
    let volume = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"));
    (path, volume)
}

fn assert_under(path: &str, dir: &str, what: &str) {
    assert!(
        Path::new(path).starts_with(dir),
        "{what} {path} is not under {dir}, where the DaemonSet mounts it"
    );
}

/// The daemon's config file, from the ConfigMap the DaemonSet mounts.
fn config_text() -> String {
    let map = object("30-configmap.yaml", "ConfigMap", "tunnel-config");
    map["data"]["config.toml"]
        .as_str()
        .expect("the ConfigMap has config.toml")
        .to_owned()
}

fn config() -> toml::Table {
    toml::from_str(&config_text()).unwrap_or_else(|e| panic!("config.toml does not parse: {e}"))
}

fn config_str<'a>(config: &'a toml::Table, section: &str, key: &str) -> &'a str {
    let table = if section.is_empty() {
        config
    } else {
        config
            .get(section)
            .and_then(toml::Value::as_table)
            .unwrap_or_else(|| panic!("config.toml has no [{section}]"))
    };
    table
        .get(key)
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("config.toml has no {section}.{key} string"))
}

#[test]
fn every_manifest_is_valid_against_the_kubernetes_schemas() {
    let validator = venv_bin("kubernetes-validate");
    let files = manifest_files();
    for version in KUBERNETES_VERSIONS {
        let output = Command::new(&validator)
            .args(["--strict", "--kubernetes-version", version])
            .args(&files)
            .output()
            .unwrap();
        let said = said(&output);
        print!("{said}");
        assert!(
            output.status.success(),
            "kubernetes-validate --strict -k {version} refused a manifest:\n{said}"
        );
        // An empty file passes; each file must have been judged and have passed.
        for file in &files {
            assert!(
                said.lines()
                    .any(|l| l.contains(&*file.to_string_lossy()) && l.contains(" passed ")),
                "{} holds no resource that passed against {version}:\n{said}",
                file.display()
            );
        }
    }
}

#[test]
fn kubectl_apply_of_the_folder_applies_the_install_and_nothing_else() {
    let top: Vec<String> = manifest_files()
        .iter()
        .filter(|f| f.parent() == Some(manifests_dir().as_path()))
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(top, APPLIED);
    for file in APPLIED {
        for document in documents(file) {
            let kind = document["kind"].as_str().unwrap();
            let cluster_scoped = ["Namespace", "ClusterRole", "ClusterRoleBinding"];
            if !cluster_scoped.contains(&kind) {
                assert_eq!(
                    document["metadata"]["namespace"], NAMESPACE,
                    "{file}: {kind}"
                );
            }
        }
    }
    object("00-namespace.yaml", "Namespace", NAMESPACE);
    object("10-serviceaccount.yaml", "ServiceAccount", "tunnel");
    object("examples/secret-ca.example.yaml", "Secret", "tunnel-ca");
    object("uninstall/uninstall.yaml", "DaemonSet", "tunnel-uninstall");
}

#[test]
fn rbac_grants_reads_of_pods_services_and_endpointslices_and_nothing_else() {
    let role = object("20-rbac.yaml", "ClusterRole", "tunnel-node");
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["pods", "services"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}
        ])
    );
    let binding = object("20-rbac.yaml", "ClusterRoleBinding", "tunnel-node");
    assert_eq!(binding["roleRef"]["name"], "tunnel-node");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "tunnel", "namespace": NAMESPACE}])
    );
    assert_eq!(
        daemonset()["spec"]["template"]["spec"]["serviceAccountName"],
        "tunnel"
    );
}

#[test]
fn daemonset_surges_and_never_leaves_a_node_without_a_daemon() {
    let spec = &daemonset()["spec"];
    // The new daemon starts beside the old one and takes over (tests/pods.rs proves it
    // under traffic); the old pod goes once the new one is ready.
    assert_eq!(
        spec["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}})
    );
    let pod = &spec["template"]["spec"];
    // Host ports (what `ports` are under hostNetwork) would keep the scheduler from placing
    // the surge pod beside the old one.
    for container in pod["containers"].as_array().unwrap() {
        assert!(
            container["ports"].is_null(),
            "container {} declares ports, which block a surge",
            container["name"]
        );
    }
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["hostNetwork"], true);
    // The node's processes, to find the pods already running (tests/pods.rs enrols them).
    assert_eq!(pod["hostPID"], true);
    assert!(
        pod["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == &json!({"operator": "Exists"})),
        "the DaemonSet must tolerate every taint"
    );
    // The drain is never cut short by the kubelet's SIGKILL.
    let drain: u64 = flag(container(pod, "tunnel"), "--drain-timeout")
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .expect("--drain-timeout in seconds");
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > drain,
        "terminationGracePeriodSeconds {grace} <= drain {drain}s"
    );
}

#[test]
fn probes_ask_the_health_port_on_loopback() {
    let daemonset = daemonset();
    let tunnel = container(&daemonset["spec"]["template"]["spec"], "tunnel");
    let config = config();
    let admin = config_str(&config, "listen", "admin");
    assert!(
        admin.starts_with("127.0.0.1:"),
        "listen.admin stays on loopback"
    );
    // A listener of its own, which the admin port's clients cannot crowd out.
    let health = config_str(&config, "listen", "health");
    let (host, port) = health.rsplit_once(':').unwrap();
    assert_eq!(
        host, "127.0.0.1",
        "the probes come from the node's namespace"
    );
    assert_ne!(admin, health);
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(
            tunnel[probe]["httpGet"],
            json!({"host": host, "port": port.parse::<u16>().unwrap(), "path": "/healthz/ready"}),
            "{probe}"
        );
    }
    let readiness = &tunnel["readinessProbe"];
    let liveness = &tunnel["livenessProbe"];
    let patience =
        |p: &Value| p["periodSeconds"].as_u64().unwrap() * p["failureThreshold"].as_u64().unwrap();
    assert!(
        patience(liveness) > patience(readiness),
        "liveness must be more patient than readiness"
    );
}

/// What a schema accepts but the API server, or the kernel, refuses.
#[test]
fn no_container_is_privileged_and_the_daemon_holds_only_its_capabilities() {
    let daemonsets = [
        daemonset(),
        object("uninstall/uninstall.yaml", "DaemonSet", "tunnel-uninstall"),
    ];
    for daemonset in &daemonsets {
        let pod = &daemonset["spec"]["template"]["spec"];
        for c in all_containers(pod) {
            let name = &c["name"];
            let context = &c["securityContext"];
            assert_ne!(context["privileged"], true, "{name} is privileged");
            assert_eq!(context["capabilities"]["drop"], json!(["ALL"]), "{name}");
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                // The API server allows Bidirectional only to privileged containers.
                assert_ne!(
                    m["mountPropagation"], "Bidirectional",
                    "{name}: {}",
                    m["name"]
                );
            }
            let added = context["capabilities"]["add"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if context["allowPrivilegeEscalation"] == false {
                // Refused by the API server when spelled CAP_SYS_ADMIN, and meaningless
                // either way.
                assert!(
                    !added
                        .iter()
                        .any(|c| c == "SYS_ADMIN" || c == "CAP_SYS_ADMIN"),
                    "{name}: allowPrivilegeEscalation false with SYS_ADMIN"
                );
            }
        }
    }
    let pod = &daemonsets[0]["spec"]["template"]["spec"];
    let tunnel = container(pod, "tunnel");
    let added: BTreeSet<&str> = tunnel["securityContext"]["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    // Each is justified in 40-daemonset.yaml; a new one needs its reason there too.
    assert_eq!(
        added,
        BTreeSet::from(["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"])
    );
    let install = container(pod, "install-cni");
    assert!(install["securityContext"]["capabilities"]["add"].is_null());
}

#[test]
fn configmap_config_parses_and_agrees_with_the_daemonset() {
    let config = config();
    for section in [
        "node",
        "listen",
        "capture",
        "outbound",
        "pods",
        "kubernetes",
    ] {
        assert!(
            config.get(section).is_some_and(toml::Value::is_table),
            "no [{section}]"
        );
    }
    for key in ["socket", "state_dir", "spiffe_id", "issuer", "ttl"] {
        config_str(&config, "pods", key);
    }

    let daemonset = daemonset();
    let pod = &daemonset["spec"]["template"]["spec"];
    let tunnel = container(pod, "tunnel");

    // The config file is the ConfigMap's key, mounted as a directory (no subPath, so edits
    // arrive by the `..data` swap the daemon's reload follows).
    let (dir, volume) = mount(pod, tunnel, "config");
    assert_eq!(volume["configMap"]["name"], "tunnel-config");
    assert_eq!(flag(tunnel, "--config"), format!("{dir}/config.toml"));
    assert!(
        tunnel["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["subPath"].is_null()),
        "a subPath mount never sees updates"
    );

    // Every ${VAR} the config uses is set in the daemon's environment.
    let text = config_text();
    let env: Vec<&str> = tunnel["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for var in text
        .split("${")
        .skip(1)
        .map(|rest| rest.split('}').next().unwrap())
    {
        assert!(
            env.contains(&var),
            "the config uses ${{{var}}}, which the DaemonSet does not set"
        );
    }
    let node_name = tunnel["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .unwrap();
    assert_eq!(
        node_name["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(
        config_str(&config, "kubernetes", "node_name"),
        "${NODE_NAME}"
    );

    // The CA material comes from the Secret.
    let (ca, volume) = mount(pod, tunnel, "ca");
    assert_eq!(volume["secret"]["secretName"], "tunnel-ca");
    assert_under(config_str(&config, "", "trust_bundle"), ca, "trust_bundle");
    for crl in config["crl"].as_array().unwrap() {
        assert_under(crl.as_str().unwrap(), ca, "crl");
    }
    assert_under(config_str(&config, "node", "issuer"), ca, "node.issuer");
    assert_under(config_str(&config, "pods", "issuer"), ca, "pods.issuer");
    let example = object("examples/secret-ca.example.yaml", "Secret", "tunnel-ca");
    let keys: BTreeSet<&str> = example["stringData"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "bundle.pem",
            "crl.pem",
            "intermediate.key",
            "intermediate.pem"
        ])
    );

    // Host paths: each path of the config is on the host volume mounted there.
    let host_paths = [
        (
            "bpffs",
            "/sys/fs/bpf",
            config_str(&config, "capture", "bpf_dir"),
        ),
        (
            "cgroup",
            "/sys/fs/cgroup",
            config_str(&config, "capture", "cgroup"),
        ),
        ("run", "/run/tunnel", config_str(&config, "pods", "socket")),
        (
            "run",
            "/run/tunnel",
            config_str(&config, "listen", "control"),
        ),
        (
            "state",
            "/var/lib/tunnel",
            config_str(&config, "pods", "state_dir"),
        ),
    ];
    for (name, host_path, configured) in host_paths {
        let (dir, volume) = mount(pod, tunnel, name);
        assert_eq!(volume["hostPath"]["path"], host_path, "volume {name}");
        assert_eq!(
            dir, host_path,
            "volume {name} is mounted where the host has it"
        );
        assert_under(configured, dir, name);
    }
    let (_, netns) = mount(pod, tunnel, "netns");
    assert_eq!(netns["hostPath"]["path"], "/var/run/netns");

    // The CNI plugin runs on the host and opens the socket by the path the installer wrote:
    // the daemon's socket must be at the same path on the host and in its container.
    let install = container(pod, "install-cni");
    assert_eq!(install["command"], json!(["/usr/local/bin/tunnel-cni"]));
    assert_eq!(install["args"][0], "install");
    assert_eq!(
        flag(install, "--socket"),
        config_str(&config, "pods", "socket")
    );
    for (name, host_path, flag_name) in [
        ("cni-bin", "/opt/cni/bin", "--cni-bin-dir"),
        ("cni-conf", "/etc/cni/net.d", "--cni-conf-dir"),
    ] {
        let (dir, volume) = mount(pod, install, name);
        assert_eq!(volume["hostPath"]["path"], host_path);
        assert_eq!(flag(install, flag_name), dir);
    }
}

/// The image (`cargo xtask image`, tests/image.rs) holds `/usr/local/bin/tunnel` and
/// `tunnel-cni` and no shell: every container of every manifest, the uninstall DaemonSet's
/// included, names one of them as its command.
#[test]
fn every_container_runs_a_program_the_image_holds() {
    let files = ["40-daemonset.yaml", "uninstall/uninstall.yaml"];
    let mut seen = 0;
    for file in files {
        for document in documents(file) {
            let pod = &document["spec"]["template"]["spec"];
            for container in all_containers(pod) {
                let command = container["command"][0].as_str().unwrap_or_else(|| {
                    panic!("{file}: container {} names no command", container["name"])
                });
                assert!(
                    ["/usr/local/bin/tunnel", "/usr/local/bin/tunnel-cni"].contains(&command),
                    "{file}: container {} runs {command}, which the image does not hold",
                    container["name"]
                );
                seen += 1;
            }
        }
    }
    assert_eq!(
        seen, 6,
        "the DaemonSet's 2 containers and the uninstall DaemonSet's 4"
    );
}
