use std::fs;

use clap::{CommandFactory as _, Parser as _};
use serde_json::{Value, json};

use super::*;
use crate::{conflist::ConflistError, error::chain};

struct Node {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    conf: PathBuf,
    exe: PathBuf,
}

fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let (bin, conf) = (dir.path().join("bin"), dir.path().join("net.d"));
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(&conf).unwrap();
    let exe = dir.path().join("tunnel-cni-build");
    fs::write(&exe, b"\x7fELF pretend").unwrap();
    Node {
        _dir: dir,
        bin,
        conf,
        exe,
    }
}

fn options(node: &Node) -> InstallOptions {
    InstallOptions {
        bin_dir: node.bin.clone(),
        conf_dir: node.conf.clone(),
        socket: "/run/tunnel/pods.sock".into(),
        timeout_seconds: 10,
        wait: Duration::ZERO,
    }
}

fn read(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The command line `tunnel-cni <line>`, parsed.
fn parse(line: &str) -> Result<Command, clap::Error> {
    Cli::try_parse_from(["tunnel-cni"].into_iter().chain(line.split_whitespace()))
        .map(|cli| cli.command)
}

fn install_options(line: &str) -> InstallOptions {
    match parse(line) {
        Ok(Command::Install(options)) => options,
        other => panic!("{line}: {other:?}"),
    }
}

#[test]
fn the_command_line_is_well_formed() {
    Cli::command().debug_assert();
}

#[test]
fn options_are_parsed_with_defaults_and_wrong_ones_named() {
    assert_eq!(
        install_options("install --cni-bin-dir /opt/cni/bin --cni-conf-dir=/etc/cni/net.d"),
        InstallOptions {
            bin_dir: "/opt/cni/bin".into(),
            conf_dir: "/etc/cni/net.d".into(),
            socket: tunnel_pod_api::DEFAULT_SOCKET.into(),
            timeout_seconds: 10,
            wait: Duration::ZERO,
        }
    );
    let full = install_options(
        "install --cni-bin-dir b --cni-conf-dir c --socket /s.sock --timeout-seconds 3 \
         --wait-seconds 60",
    );
    assert_eq!(
        (full.socket, full.timeout_seconds, full.wait),
        ("/s.sock".into(), 3, Duration::from_secs(60))
    );
    match parse("uninstall --cni-bin-dir=b --cni-conf-dir c") {
        Ok(Command::Uninstall(options)) => assert_eq!(
            options,
            UninstallOptions {
                bin_dir: "b".into(),
                conf_dir: "c".into()
            }
        ),
        other => panic!("{other:?}"),
    }
    for (line, needle) in [
        (
            "install --cni-conf-dir c",
            "not provided:\n  --cni-bin-dir <DIR>",
        ),
        (
            "install --cni-bin-dir b --cni-conf-dir c --socket rel.sock",
            "'rel.sock' for '--socket <PATH>': not an absolute path",
        ),
        (
            "install --cni-bin-dir b --cni-conf-dir c --timeout-seconds soon",
            "'soon' for '--timeout-seconds <SECONDS>': not a whole number of seconds",
        ),
        (
            "install --cni-bin-dir b --cni-conf-dir c --timeout-seconds 0",
            "'0' for '--timeout-seconds <SECONDS>': must be at least 1",
        ),
        (
            "install --cni-bin-dir b --cni-conf-dir c --wait-seconds soon",
            "'soon' for '--wait-seconds <SECONDS>': not a whole number of seconds",
        ),
        (
            "install --cni-bin-dir b --cni-conf-dir c --colour red",
            "unexpected argument '--colour'",
        ),
        (
            "install --cni-bin-dir b --cni-bin-dir c",
            "'--cni-bin-dir <DIR>' cannot be used multiple times",
        ),
        (
            "install --cni-bin-dir",
            "a value is required for '--cni-bin-dir <DIR>'",
        ),
        ("install stray", "unexpected argument 'stray'"),
        (
            "uninstall --cni-bin-dir b --cni-conf-dir c --socket /s",
            "unexpected argument '--socket'",
        ),
        ("frobnicate", "unrecognized subcommand 'frobnicate'"),
    ] {
        let e = parse(line).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{line}: {e}");
        assert!(e.to_string().contains(needle), "{line}: {e}");
    }
    for line in ["--help", "install --help", "uninstall -h", "help install"] {
        let help = parse(line).unwrap_err();
        assert_eq!(help.exit_code(), 0, "{line}: {help}");
        assert!(
            help.to_string().contains("Usage: tunnel-cni"),
            "{line}: {help}"
        );
    }
}

/// The arguments the Kubernetes manifests give `tunnel-cni` in the container `name`.
fn manifest_args(file: &str, name: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes")
        .join(file);
    let text = fs::read_to_string(&path).unwrap();
    let mut lines = text
        .lines()
        .skip_while(|line| line.trim() != format!("- name: {name}"))
        .skip_while(|line| line.trim() != "args:")
        .skip(1);
    let mut args = vec!["tunnel-cni".to_owned()];
    while let Some(arg) = lines.next().and_then(|line| line.trim().strip_prefix("- ")) {
        args.push(arg.to_owned());
    }
    assert!(args.len() > 1, "no args for {name} in {}", path.display());
    args
}

#[test]
fn the_manifests_flags_parse() {
    let install = Cli::try_parse_from(manifest_args("40-daemonset.yaml", "install-cni")).unwrap();
    let Command::Install(options) = install.command else {
        panic!("{install:?}");
    };
    assert_eq!(options.socket, Path::new(tunnel_pod_api::DEFAULT_SOCKET));
    let uninstall =
        Cli::try_parse_from(manifest_args("uninstall/uninstall.yaml", "uninstall-cni")).unwrap();
    assert!(
        matches!(uninstall.command, Command::Uninstall(_)),
        "{uninstall:?}"
    );
}

#[test]
fn install_appends_to_the_first_conflist_and_reinstall_updates_in_place() {
    let node = node();
    let main = json!({"cniVersion": "1.0.0", "name": "k8s", "plugins": [{"type": "bridge"}]});
    fs::write(node.conf.join("10-main.conflist"), main.to_string()).unwrap();
    fs::write(node.conf.join("20-other.conflist"), main.to_string()).unwrap();
    let mut said = Vec::new();
    install(&options(&node), &node.exe, &mut |s| said.push(s)).unwrap();
    assert_eq!(
        fs::read(node.bin.join("tunnel-cni")).unwrap(),
        b"\x7fELF pretend"
    );
    let list = read(&node.conf.join("10-main.conflist"));
    assert_eq!(
        list["plugins"],
        json!([{"type": "bridge"}, {"type": "tunnel-cni", "socket": "/run/tunnel/pods.sock", "timeout_seconds": 10}])
    );
    assert_eq!(read(&node.conf.join("20-other.conflist")), main);
    assert!(said.iter().any(|s| s.contains("appended")), "{said:?}");

    let mut again = options(&node);
    again.socket = "/var/run/tunnel.sock".into();
    install(&again, &node.exe, &mut |_| {}).unwrap();
    let list = read(&node.conf.join("10-main.conflist"));
    assert_eq!(list["plugins"].as_array().unwrap().len(), 2);
    assert_eq!(list["plugins"][1]["socket"], "/var/run/tunnel.sock");
    assert_eq!(names(&node.conf), ["10-main.conflist", "20-other.conflist"]);
}

#[test]
fn a_single_conf_that_comes_first_is_converted() {
    let node = node();
    let conf = json!({"cniVersion": "0.4.0", "name": "net", "type": "bridge"});
    fs::write(node.conf.join("05-bridge.conf"), conf.to_string()).unwrap();
    fs::write(node.conf.join("99-loopback.conflist"), "{}").unwrap();
    let mut said = Vec::new();
    install(&options(&node), &node.exe, &mut |s| said.push(s)).unwrap();
    assert_eq!(
        names(&node.conf),
        ["05-bridge.conflist", "99-loopback.conflist"]
    );
    let list = read(&node.conf.join("05-bridge.conflist"));
    assert_eq!(list["name"], "net");
    assert_eq!(list["cniVersion"], "0.4.0");
    assert_eq!(list["plugins"][0], conf);
    assert_eq!(list["plugins"][1]["type"], "tunnel-cni");
    assert!(
        said.iter().any(|s| s.contains("held a single plugin")),
        "{said:?}"
    );
    // Installing again finds the conflist and changes nothing.
    install(&options(&node), &node.exe, &mut |_| {}).unwrap();
    assert_eq!(read(&node.conf.join("05-bridge.conflist")), list);
}

#[test]
fn no_network_config_is_an_error_that_says_what_to_do() {
    let node = node();
    let e = install(&options(&node), &node.exe, &mut |_| {}).unwrap_err();
    assert!(matches!(e, InstallError::NoNetworkConfig { .. }), "{e}");
    assert!(e.to_string().contains("--wait-seconds"), "{e}");
    fs::write(node.conf.join("10-main.conflist"), "{\"cniVersion\":").unwrap();
    let e = install(&options(&node), &node.exe, &mut |_| {}).unwrap_err();
    let printed = chain(&e);
    assert!(
        printed.contains("10-main.conflist is not JSON: EOF while parsing"),
        "{printed}"
    );
    fs::write(
        node.conf.join("10-main.conflist"),
        json!({"cniVersion": "0.3.1", "name": "k8s", "plugins": [{"type": "flannel"}]}).to_string(),
    )
    .unwrap();
    let e = install(&options(&node), &node.exe, &mut |_| {}).unwrap_err();
    let printed = chain(&e);
    assert!(
        printed.contains("cannot add tunnel-cni to network config ")
            && printed.contains("10-main.conflist: its cniVersion is 0.3.1"),
        "{printed}"
    );
}

#[test]
fn each_link_is_printed_once() {
    let path = PathBuf::from("/etc/cni/net.d/10-main.conflist");
    let io = io_error("read", &path)(io::Error::from(io::ErrorKind::PermissionDenied));
    assert_eq!(
        chain(&io),
        "failed to read /etc/cni/net.d/10-main.conflist: permission denied"
    );
    let not_json = InstallError::NotJson {
        path: path.clone(),
        source: serde_json::from_str::<Value>("{").unwrap_err(),
    };
    assert_eq!(
        chain(&not_json),
        "network config /etc/cni/net.d/10-main.conflist is not JSON: EOF while parsing an \
         object at line 1 column 1"
    );
    let conflist = InstallError::Conflist {
        path,
        source: ConflistError::Missing("name"),
    };
    assert_eq!(
        chain(&conflist),
        "cannot add tunnel-cni to network config /etc/cni/net.d/10-main.conflist: it has no \
         \"name\" string"
    );
}

#[test]
fn install_waits_for_the_main_plugins_config() {
    let node = node();
    let conf = node.conf.join("10-late.conflist");
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        fs::write(
            conf,
            json!({"cniVersion": "1.0.0", "name": "k8s", "plugins": [{"type": "ptp"}]}).to_string(),
        )
        .unwrap();
    });
    let mut waiting = options(&node);
    waiting.wait = Duration::from_secs(30);
    let mut said = Vec::new();
    install(&waiting, &node.exe, &mut |s| said.push(s)).unwrap();
    writer.join().unwrap();
    assert!(said.iter().any(|s| s.contains("waiting up to")), "{said:?}");
    assert_eq!(
        read(&node.conf.join("10-late.conflist"))["plugins"][1]["type"],
        "tunnel-cni"
    );
}

#[test]
fn uninstall_cleans_every_conflist_and_the_binary_and_is_idempotent() {
    let node = node();
    let main = json!({"cniVersion": "1.0.0", "name": "k8s", "plugins": [{"type": "bridge"}]});
    fs::write(node.conf.join("10-main.conflist"), main.to_string()).unwrap();
    install(&options(&node), &node.exe, &mut |_| {}).unwrap();
    // A stale entry of an earlier install in another list, and a file that is no JSON.
    let mut stale = main.clone();
    stale["plugins"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "tunnel-cni"}));
    fs::write(node.conf.join("50-old.conflist"), stale.to_string()).unwrap();
    fs::write(node.conf.join("60-junk.json"), "junk").unwrap();
    let remove = UninstallOptions {
        bin_dir: node.bin.clone(),
        conf_dir: node.conf.clone(),
    };
    let mut said = Vec::new();
    uninstall(&remove, &mut |s| said.push(s)).unwrap();
    assert_eq!(read(&node.conf.join("10-main.conflist")), main);
    assert_eq!(read(&node.conf.join("50-old.conflist")), main);
    assert!(!node.bin.join("tunnel-cni").exists());
    assert!(
        said.iter().any(|s| s.contains("60-junk.json: not JSON")),
        "{said:?}"
    );
    let mut again = Vec::new();
    uninstall(&remove, &mut |s| again.push(s)).unwrap();
    assert_eq!(
        again,
        ["skipped ".to_owned()
            + &node.conf.join("60-junk.json").display().to_string()
            + ": not JSON"]
    );
}
