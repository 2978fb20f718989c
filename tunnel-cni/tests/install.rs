//! `tunnel-cni install` and `uninstall`, the built binary on a temp dir laid out like a node.

mod support;

use std::{fs, os::unix::fs::PermissionsExt as _, path::Path};

use serde_json::{Value, json};
use support::{TUNNEL_CNI, tunnel_cni};

fn read(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

#[test]
fn install_then_uninstall_leaves_the_node_as_it_was() {
    let node = tempfile::tempdir().unwrap();
    let (bin, conf) = (node.path().join("bin"), node.path().join("net.d"));
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(&conf).unwrap();
    let main = json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]]}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    });
    let list = conf.join("10-k8s.conflist");
    fs::write(&list, serde_json::to_string_pretty(&main).unwrap()).unwrap();
    let dirs = [
        "--cni-bin-dir",
        bin.to_str().unwrap(),
        "--cni-conf-dir",
        conf.to_str().unwrap(),
    ];

    let install = |extra: &[&str]| {
        let run = tunnel_cni(&[&["install"], &dirs[..], extra].concat());
        assert!(run.success, "{run:#?}");
        run
    };
    let run = install(&[
        "--socket",
        "/run/tunnel/pods.sock",
        "--timeout-seconds",
        "7",
    ]);
    assert!(run.stdout.contains("appended tunnel-cni"), "{run:#?}");
    let installed = bin.join("tunnel-cni");
    assert_eq!(fs::read(&installed).unwrap(), fs::read(TUNNEL_CNI).unwrap());
    assert_eq!(
        fs::metadata(&installed).unwrap().permissions().mode() & 0o111,
        0o111
    );
    let mut expected = main.clone();
    expected["plugins"].as_array_mut().unwrap().push(json!({
        "type": "tunnel-cni", "socket": "/run/tunnel/pods.sock", "timeout_seconds": 7,
    }));
    assert_eq!(read(&list), expected);

    // Again, from the installed copy, with another timeout: one entry, updated.
    let run = support::Run::from(
        std::process::Command::new(&installed)
            .args([&["install"], &dirs[..], &["--timeout-seconds", "3"]].concat())
            .output()
            .unwrap(),
    );
    assert!(run.success, "{run:#?}");
    expected["plugins"][2]["timeout_seconds"] = json!(3);
    assert_eq!(read(&list), expected);

    let run = tunnel_cni(&[&["uninstall"], &dirs[..]].concat());
    assert!(run.success, "{run:#?}");
    assert_eq!(read(&list), main);
    assert!(!installed.exists());
    let names: Vec<_> = fs::read_dir(&conf)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["10-k8s.conflist"], "no temp files left");
    let run = tunnel_cni(&[&["uninstall"], &dirs[..]].concat());
    assert!(run.success, "uninstall is idempotent: {run:#?}");
}

#[test]
fn install_without_a_network_config_fails_and_says_why() {
    let node = tempfile::tempdir().unwrap();
    let conf = node.path().join("net.d");
    let run = tunnel_cni(&[
        "install",
        "--cni-bin-dir",
        node.path().to_str().unwrap(),
        "--cni-conf-dir",
        conf.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains("no network config") && run.stderr.contains("net.d"),
        "{run:#?}"
    );
}

#[test]
fn a_wrong_option_is_a_usage_error() {
    let run = tunnel_cni(&["install", "--cni-bin-dir"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr
            .contains("a value is required for '--cni-bin-dir <DIR>'"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("--help"), "{run:#?}");
    let run = tunnel_cni(&["install", "--cni-conf-dir", "/etc/cni/net.d"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("--cni-bin-dir <DIR>"), "{run:#?}");
    assert!(run.stderr.contains("Usage: tunnel-cni install"), "{run:#?}");
    let run = tunnel_cni(&["frobnicate"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr.contains("unrecognized subcommand 'frobnicate'"),
        "{run:#?}"
    );
}

#[test]
fn help_is_printed_and_is_no_failure() {
    let run = tunnel_cni(&["install", "--help"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    for flag in [
        "--cni-bin-dir",
        "--cni-conf-dir",
        "--socket",
        "--timeout-seconds",
        "--wait-seconds",
    ] {
        assert!(run.stdout.contains(flag), "{flag}: {run:#?}");
    }
    let run = tunnel_cni(&["--help"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("Without arguments"), "{run:#?}");
}

#[test]
fn without_arguments_it_is_the_plugin_whatever_the_environment() {
    // No CNI_COMMAND: a CNI error on stdout that points at the installer, not clap's usage.
    let run = support::Run::from(
        std::process::Command::new(TUNNEL_CNI)
            .env_clear()
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_eq!(run.json()["code"], 4, "{run:#?}");
    assert!(
        run.json()["msg"]
            .as_str()
            .unwrap()
            .contains("CNI_COMMAND is not set"),
        "{run:#?}"
    );
    assert!(!run.stderr.contains("Usage:"), "{run:#?}");
}
