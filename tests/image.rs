//! The DaemonSet's image (`cargo xtask image`: `target/image/tunnel_<version>.oci.tar`),
//! loaded into podman and run the way `deploy/kubernetes/40-daemonset.yaml` runs its
//! container: the capabilities, user, read-only root, host PID namespace, command, args,
//! environment and mounts are read from the manifest, not restated here. hostNetwork is a test
//! host's network namespace (the container joins it), the host paths of the mounts are the
//! test's own directories except /sys/fs/bpf and /sys/fs/cgroup, and the config is the
//! ConfigMap's, with capture pointed at a test cgroup and the pins at a test directory. The
//! Kubernetes API is `tests/support/kubeapi.py` in that namespace, reached as in a cluster
//! (`KUBERNETES_SERVICE_HOST`/`_PORT` and a service account mount). The daemon must load its
//! programs and answer `/healthz/ready` with 200. Then the uninstall DaemonSet's containers
//! run from the same image, which has no shell: the wait for the daemon to be gone, and the
//! removal of the pins and registrations.
//!
//! Also the archive's contents: the two binaries, the libraries they load, nothing else.
//!
//! Needs root, podman and runc (`cargo xtask setup`), the manifests' YAML reader (the
//! kubernetes-validate venv, `cargo xtask setup`) and the archive (`cargo xtask test` builds
//! it first; or `cargo xtask image`).

mod support;

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{LONG, Pki, SHORT, Testbed};

const KUBEAPI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/support/kubeapi.py");
const API_TOKEN: &str = "test-service-account-token";
const IMAGE_NAME: &str = "ghcr.io/tunnel-project/tunnel";
/// The image's files add up to less than this (uncompressed).
const MAX_IMAGE_BYTES: u64 = 48 << 20;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn archive() -> PathBuf {
    let path = workspace().join(format!(
        "target/image/tunnel_{}.oci.tar",
        env!("CARGO_PKG_VERSION")
    ));
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo xtask image` (`cargo xtask test` does)",
        path.display()
    );
    path
}

/// A YAML file of the manifests as JSON documents (PyYAML of the validator's venv, as
/// tests/manifests.rs reads them).
fn documents(file: &str) -> Vec<Value> {
    let python = workspace().join("target/tools/kubernetes-validate/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `cargo xtask setup`",
        python.display()
    );
    let output = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml\n\
             with open(sys.argv[1]) as f:\n    \
                 print(json.dumps([d for d in yaml.safe_load_all(f) if d is not None]))",
        ])
        .arg(workspace().join("deploy/kubernetes").join(file))
        .output()
        .unwrap();
    assert!(output.status.success(), "read {file}: {}", said(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn object(file: &str, kind: &str, name: &str) -> Value {
    documents(file)
        .into_iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{file}: no {kind} {name}"))
}

fn said(output: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn podman(args: &[&str]) -> String {
    let output = Command::new("podman").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "podman {}: {}",
        args.join(" "),
        said(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A container's output so far, stdout and stderr (`podman logs` replays each on its own).
fn logs(name: &str) -> String {
    let output = Command::new("podman")
        .args(["logs", name])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "podman logs {name}: {}",
        said(&output)
    );
    said(&output)
}

/// The image tests one at a time: each loads the image and removes it when it ends, and the
/// removal of an image removes the containers running it.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The image loaded into podman's storage; removed when dropped.
struct Loaded(String);

impl Loaded {
    fn new() -> Self {
        let out = podman(&[
            "load",
            "--quiet",
            "--input",
            &archive().display().to_string(),
        ]);
        let name = out
            .lines()
            .find_map(|l| l.split_once(": ").map(|(_, name)| name.trim().to_string()))
            .unwrap_or_else(|| panic!("podman load said {out:?}"));
        assert_eq!(
            name,
            format!("{IMAGE_NAME}:{}", env!("CARGO_PKG_VERSION")),
            "the archive's image name is the manifests'"
        );
        Self(name)
    }

    /// Its id, by which it is removed (by name, podman would only untag it if another name
    /// pointed at it too).
    fn id(&self) -> String {
        podman(&["image", "inspect", "--format", "{{.Id}}", &self.0])
            .trim()
            .to_string()
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let id = self.id();
        let _ = Command::new("podman")
            .args(["rmi", "--force", &id])
            .output();
    }
}

/// A container, removed (stopped first, SIGTERM then SIGKILL after 15 s) when dropped.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "--force", "--time", "15", &self.0])
            .output();
    }
}

/// What the machine running the test needs that a node does not: runc (containerd's default
/// runtime; Debian's podman prefers crun, which refuses a host whose cgroup v2 hierarchy is
/// mounted beside v1 ones with controllers enabled), and limits no higher than the test's own
/// hard limits (podman's defaults for root are higher, which a sandbox without
/// CAP_SYS_RESOURCE cannot set). Nothing the image or the manifest says.
fn runtime_args() -> Vec<String> {
    let limits = fs::read_to_string("/proc/self/limits").unwrap();
    let hard = |name: &str| -> u64 {
        let line = limits
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/self/limits"));
        let fields: Vec<&str> = line[name.len()..].split_whitespace().collect();
        fields[1].parse().unwrap_or(u64::MAX)
    };
    let nofile = hard("Max open files").min(1 << 20);
    // conmon starts the runtime with fewer processes allowed than this shell may have.
    let nproc = hard("Max processes").min(4096);
    vec![
        "--runtime=runc".into(),
        format!("--ulimit=nofile={nofile}:{nofile}"),
        format!("--ulimit=nproc={nproc}:{nproc}"),
    ]
}

/// `podman run` options for a container of a pod spec, as the kubelet would start it: the
/// security context, command, args, env (plain values; `extra_env` for those the API fills
/// in) and mounts (each volume name's host path from `volumes`, which must name every one).
fn run_args(
    pod: &Value,
    container: &Value,
    netns: &Path,
    volumes: &[(&str, PathBuf)],
    extra_env: &[(&str, &str)],
) -> Vec<String> {
    let mut args: Vec<String> = vec!["run".into(), "--detach".into()];
    args.extend(runtime_args());
    if pod["hostNetwork"] == true {
        args.push(format!("--network=ns:{}", netns.display()));
    }
    if pod["hostPID"] == true {
        args.push("--pid=host".into());
    }
    let security = &container["securityContext"];
    assert_ne!(
        security["privileged"], true,
        "the manifests run nothing privileged"
    );
    args.push(format!(
        "--user={}",
        security["runAsUser"].as_u64().unwrap_or(0)
    ));
    if security["readOnlyRootFilesystem"] == true {
        // As the kubelet's: no tmpfs on /tmp, /run and /var/tmp, which podman adds by default.
        args.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
    }
    if security["allowPrivilegeEscalation"] == false {
        args.push("--security-opt=no-new-privileges".into());
    }
    let caps = &security["capabilities"];
    assert_eq!(caps["drop"], serde_json::json!(["ALL"]));
    args.push("--cap-drop=all".into());
    for cap in caps["add"].as_array().into_iter().flatten() {
        args.push(format!("--cap-add={}", cap.as_str().unwrap()));
    }
    // RuntimeDefault: podman's default seccomp profile, which it applies unless told not to.
    if security["appArmorProfile"]["type"] == "Unconfined" {
        args.push("--security-opt=apparmor=unconfined".into());
    }
    for env in container["env"].as_array().into_iter().flatten() {
        let name = env["name"].as_str().unwrap();
        let value = match env["value"].as_str() {
            Some(value) => value,
            None => {
                extra_env
                    .iter()
                    .find(|(n, _)| *n == name)
                    .unwrap_or_else(|| panic!("no test value for env {name}"))
                    .1
            }
        };
        args.push(format!("--env={name}={value}"));
    }
    let declared: BTreeSet<&str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = mount["name"].as_str().unwrap();
        assert!(declared.contains(name), "volume {name} is not declared");
        let source = &volumes
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("the test gives no host path for volume {name}"))
            .1;
        let mut options = vec![if mount["readOnly"] == true {
            "ro"
        } else {
            "rw"
        }];
        if mount["mountPropagation"] == "HostToContainer" {
            options.push("rslave");
        }
        args.push(format!(
            "--volume={}:{}:{}",
            source.display(),
            mount["mountPath"].as_str().unwrap(),
            options.join(",")
        ));
    }
    let command = container["command"].as_array().expect("a command");
    assert_eq!(command.len(), 1, "the command is the program alone");
    args.push(format!("--entrypoint={}", command[0].as_str().unwrap()));
    args
}

/// A container's args, with the host's pin directory replaced by the test's: a test never
/// touches the host's own pins.
fn container_args(container: &Value, bpf_dir: &Path) -> Vec<String> {
    container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            a.as_str()
                .unwrap()
                .replace("/sys/fs/bpf/tunnel", &bpf_dir.display().to_string())
        })
        .collect()
}

/// Runs a container to its end; its output.
fn run_to_end(args: &[String], name: &str) -> (i64, String) {
    let mut args = args.to_vec();
    args.insert(1, format!("--name={name}"));
    let _container = Container(name.into());
    let id = podman(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let code = podman(&["wait", id.trim()]);
    (code.trim().parse().unwrap(), logs(id.trim()))
}

#[test]
fn the_image_holds_the_binaries_and_their_libraries_only() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for tool in ["podman", "tar"] {
        testbed::require_tool(tool);
    }
    let image = Loaded::new();
    let inspect: Value = serde_json::from_str(&podman(&["image", "inspect", &image.0])).unwrap();
    let config = &inspect[0]["Config"];
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/tunnel"])
    );
    assert_eq!(
        config["Labels"]["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    let name = format!("tunnel-image-contents-{}", std::process::id());
    let _container = Container(name.clone());
    podman(&["create", "--name", &name, &image.0]);
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("rootfs.tar");
    podman(&["export", "--output", &tar.display().to_string(), &name]);
    let listing = Command::new("tar")
        .args(["--list", "--verbose", "--file"])
        .arg(&tar)
        .output()
        .unwrap();
    assert!(listing.status.success(), "{}", said(&listing));
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    eprintln!("the image's files:\n{listing}");
    let mut total = 0;
    let mut files = BTreeSet::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (mode, size, path) = (fields[0], fields[2], fields[5]);
        let path = path.trim_start_matches("./").trim_start_matches('/');
        if mode.starts_with('d') || path.is_empty() {
            continue;
        }
        total += size.parse::<u64>().unwrap();
        files.insert(path.to_string());
    }
    for file in &files {
        let name = file.rsplit('/').next().unwrap();
        let binary = ["usr/local/bin/tunnel", "usr/local/bin/tunnel-cni"].contains(&file.as_str());
        let library =
            (file.starts_with("lib") || file.starts_with("usr/lib")) && name.contains(".so");
        assert!(
            binary || library,
            "the image holds {file}, which nothing needs"
        );
        assert!(
            !["sh", "bash", "dash", "busybox", "sleep"].contains(&name),
            "{file}"
        );
    }
    assert!(files.contains("usr/local/bin/tunnel"));
    assert!(files.contains("usr/local/bin/tunnel-cni"));
    eprintln!("{} files, {total} bytes", files.len());
    assert!(
        total < MAX_IMAGE_BYTES,
        "the image's files add up to {total} bytes"
    );
}

#[test]
fn the_image_runs_as_the_daemonset_runs_it_and_becomes_ready() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    for tool in ["podman", "runc", "curl", "python3"] {
        testbed::require_tool(tool);
    }
    let image = Loaded::new();
    let mut testbed = Testbed::new("image");
    let node = testbed.add_host("node");
    let dir = testbed.dir().to_path_buf();

    // The CA Secret's four files, as the Secret volume holds them.
    let pki = Pki::new(&dir);
    let secret = dir.join("secret-ca");
    fs::create_dir_all(&secret).unwrap();
    for file in [
        "bundle.pem",
        "crl.pem",
        "intermediate.pem",
        "intermediate.key",
    ] {
        fs::copy(pki.ca_dir().join(file), secret.join(file)).unwrap();
    }

    // The Kubernetes API in the node's namespace, and the service account mount.
    let kube = dir.join("kube");
    fs::create_dir_all(&kube).unwrap();
    let empty = dir.join("api-empty.json");
    fs::write(&empty, "[]").unwrap();
    let mut kubeapi = node
        .command("python3")
        .arg(KUBEAPI)
        .arg(&kube)
        .args(["6443", API_TOKEN])
        .arg(&empty)
        .arg(&empty)
        .arg(&empty)
        .spawn();
    kubeapi.wait_for("listening", SHORT);
    let service_account = dir.join("serviceaccount");
    fs::create_dir_all(&service_account).unwrap();
    fs::write(service_account.join("token"), API_TOKEN).unwrap();
    fs::copy(kube.join("ca.crt"), service_account.join("ca.crt")).unwrap();

    // The ConfigMap's config, with capture on a test cgroup and the pins in a test dir.
    let configmap = object("30-configmap.yaml", "ConfigMap", "tunnel-config");
    let text = configmap["data"]["config.toml"].as_str().unwrap();
    let cgroup = testbed.cgroup("node/pods");
    let bpf_dir = testbed.bpf_dir("node");
    for needle in ["/sys/fs/cgroup/kubepods.slice", "/sys/fs/bpf/tunnel"] {
        assert!(
            text.contains(needle),
            "the ConfigMap no longer says {needle}"
        );
    }
    let text = text
        .replace(
            "/sys/fs/cgroup/kubepods.slice",
            &cgroup.display().to_string(),
        )
        .replace("/sys/fs/bpf/tunnel", &bpf_dir.display().to_string());
    let config = dir.join("config");
    fs::create_dir_all(&config).unwrap();
    fs::write(config.join("config.toml"), text).unwrap();

    let volumes: Vec<(&str, PathBuf)> = vec![
        ("config", config),
        ("ca", secret),
        ("bpffs", "/sys/fs/bpf".into()),
        ("cgroup", "/sys/fs/cgroup".into()),
        ("netns", dir.join("host-netns")),
        ("run", dir.join("host-run-tunnel")),
        ("state", dir.join("host-var-lib-tunnel")),
    ];
    for (_, path) in &volumes[4..] {
        fs::create_dir_all(path).unwrap();
    }

    let daemonset = object("40-daemonset.yaml", "DaemonSet", "tunnel");
    let pod = &daemonset["spec"]["template"]["spec"];
    let container = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "tunnel")
        .expect("the daemon's container");
    let name = format!("tunnel-image-daemon-{}", std::process::id());
    let mut args = run_args(
        pod,
        container,
        &node.netns_path(),
        &volumes,
        &[("NODE_NAME", "node-1")],
    );
    args.insert(2, format!("--name={name}"));
    // What the kubelet adds to a pod with a service account.
    args.extend([
        "--env=KUBERNETES_SERVICE_HOST=127.0.0.1".into(),
        "--env=KUBERNETES_SERVICE_PORT=6443".into(),
        format!(
            "--volume={}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
            service_account.display()
        ),
    ]);
    args.push(image.0.clone());
    args.extend(container_args(container, &bpf_dir));
    eprintln!("podman {}", args.join(" "));
    let daemon = Container(name.clone());
    podman(&args.iter().map(String::as_str).collect::<Vec<_>>());

    // Ready: the log line, after which the programs are pinned, and the probe's answer.
    let deadline = Instant::now() + LONG;
    let ready_line = loop {
        let logs = logs(&name);
        if let Some(line) = logs.lines().find(|l| l.contains("\"tunnel ready\"")) {
            break line.to_string();
        }
        let state = podman(&["inspect", "--format", "{{.State.Status}}", &name]);
        assert!(
            state.trim() == "running" && Instant::now() < deadline,
            "the daemon is {} and not ready:\n{logs}",
            state.trim()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("{ready_line}");
    let pins: Vec<String> = fs::read_dir(&bpf_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", bpf_dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!pins.is_empty(), "nothing pinned in {}", bpf_dir.display());
    eprintln!("pinned in {}: {pins:?}", bpf_dir.display());
    let probe = container["readinessProbe"]["httpGet"].clone();
    let url = format!(
        "http://{}:{}{}",
        probe["host"].as_str().unwrap(),
        probe["port"],
        probe["path"].as_str().unwrap()
    );
    let answer = node
        .command("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "--write-out",
            " %{http_code}",
            &url,
        ])
        .output(SHORT);
    let (body, code) = answer
        .stdout
        .rsplit_once(' ')
        .unwrap_or_else(|| panic!("curl said {:?}: {}", answer.stdout, answer.stderr));
    eprintln!("GET {url} in the node's namespace: HTTP {code}, {:?}", body);
    assert_eq!((code, body.trim()), ("200", "ready"), "{}", answer.stderr);

    // The uninstall DaemonSet, from the same image: the daemon stopped as the kubelet stops
    // it (SIGTERM), then its init containers in order, except tunnel-cni's (its CNI dirs
    // are the host's; tunnel-cni has tests of its own).
    podman(&["stop", "--time", "15", &name]);
    let code = podman(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    assert_eq!(code.trim(), "0", "{}", logs(&name));
    drop(daemon);
    let uninstall = object("uninstall/uninstall.yaml", "DaemonSet", "tunnel-uninstall");
    let pod = &uninstall["spec"]["template"]["spec"];
    let find = |name: &str| -> Value {
        pod["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no init container {name}"))
            .clone()
    };
    for (step, expect) in [
        ("wait-for-daemon-gone", ""),
        ("uninstall-capture", "capture is off"),
    ] {
        let container = find(step);
        let mut args = run_args(pod, &container, &node.netns_path(), &volumes, &[]);
        args.push(image.0.clone());
        args.extend(container_args(&container, &bpf_dir));
        let (code, logs) = run_to_end(
            &args,
            &format!("tunnel-image-{step}-{}", std::process::id()),
        );
        eprintln!("{step}: exit {code}: {logs}");
        assert_eq!(code, 0, "{step}: {logs}");
        assert!(logs.contains(expect), "{step}: {logs}");
    }
    let left: Vec<_> = fs::read_dir(&bpf_dir)
        .map(|d| d.count())
        .into_iter()
        .collect();
    assert!(
        !bpf_dir.exists() || left == [0],
        "pins left in {}",
        bpf_dir.display()
    );
    eprintln!("the test took {:?}", started.elapsed());
}
