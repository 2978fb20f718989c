//! The Debian package of the host service, end to end, on a real systemd: packages made by
//! `cargo xtask package` from this build's binaries are installed into a Debian root that
//! systemd-nspawn boots (systemd as its PID 1), in a test host made of a network namespace,
//! beside a second host whose daemon serves a workload. The unit runs as written:
//! `Type=notify`, its user, capabilities, sandbox and system call filter; a workload process
//! in the container calls the other host through it. Then a reload, an upgrade to a rebuilt
//! package under traffic (no call may fail), and a purge that leaves nothing of the package
//! or of the daemon behind. Also: lintian finds no error in the package, and
//! `systemd-analyze security` scores the unit at most 4.5.
//!
//! The Debian root is made once by `cargo xtask setup` (debootstrap); each run mounts an
//! overlay on it, so the root itself is never changed.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use testbed::{Host, Proc, Testbed};

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");
const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const NETPROBE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/support/netprobe.py");
const WAIT: Duration = Duration::from_secs(60);

/// The capabilities the unit leaves the daemon: CAP_NET_ADMIN (12), CAP_PERFMON (38),
/// CAP_BPF (39).
const UNIT_CAPABILITIES: &str = "000000c000001000";

#[test]
fn the_package_installs_runs_reloads_upgrades_without_a_gap_and_purges() {
    let started = Instant::now();
    for tool in [
        "systemd-nspawn",
        "dpkg-deb",
        "lintian",
        "systemd-analyze",
        "python3",
    ] {
        testbed::require_tool(tool);
    }
    let debian_root = Path::new(WORKSPACE).join("target/tools/debian-root");
    assert!(
        debian_root.with_extension("done").exists(),
        "no Debian root at {}: run `cargo xtask setup`",
        debian_root.display()
    );
    // This build's binaries, beside the xtask binary (cargo builds the workspace's
    // binaries before any test runs), or those of TUNNEL_PACKAGE_BINARIES (target/release,
    // to try the release build).
    let bin_dir = std::env::var_os("TUNNEL_PACKAGE_BINARIES").map_or_else(
        || Path::new(XTASK).parent().unwrap().to_path_buf(),
        PathBuf::from,
    );
    let tunnel = bin_dir.join("tunnel");
    for binary in ["tunnel", "tunnel-cni"] {
        assert!(
            bin_dir.join(binary).is_file(),
            "{}/{binary} is missing: cargo build --workspace (cargo xtask test does)",
            bin_dir.display()
        );
    }

    let mut testbed = Testbed::new("package");
    let host_a = testbed.add_host("host-a");
    let host_b = testbed.add_host("host-b");
    let dir = testbed.dir().to_path_buf();

    // The package of this build and a rebuilt one to upgrade to, made side by side; lintian
    // runs on the first while the rest goes on.
    let packages = dir.join("packages");
    let builds: Vec<_> = ["0.1.0", "0.1.1"]
        .iter()
        .map(|version| {
            let child = Command::new(XTASK)
                .args(["package", "--fast", "--no-lintian", "--version", version])
                .arg("--prebuilt")
                .arg(&bin_dir)
                .arg("--out")
                .arg(&packages)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run cargo xtask package");
            (version, child)
        })
        .collect();
    for (version, child) in builds {
        let out = child.wait_with_output().expect("cargo xtask package");
        assert!(
            out.status.success(),
            "cargo xtask package --version {version} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let first = packages.join(format!("tunnel_0.1.0_{}.deb", arch()));
    let second = packages.join(format!("tunnel_0.1.1_{}.deb", arch()));
    let lintian = Command::new("lintian")
        .arg(&first)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start lintian");
    println!("packages built in {:?}", started.elapsed());

    let score = systemd_analyze_security();
    println!("systemd-analyze security: {score}");
    assert!(score <= 4.5, "the unit's exposure is {score}, above 4.5");

    // Certificates for both hosts, from the built-in CA.
    let pki = dir.join("pki");
    run(Command::new(&tunnel)
        .args(["ca", "init", "--trust-domain", "example.org", "--out"])
        .arg(pki.join("ca")));
    for (id, out) in [
        ("node/host-a", "a-node"),
        ("frontend", "a-frontend"),
        ("node/host-b", "b-node"),
        ("orders", "b-orders"),
    ] {
        run(Command::new(&tunnel)
            .args(["ca", "issue", "--ca"])
            .arg(pki.join("ca"))
            .arg("--spiffe-id")
            .arg(format!("spiffe://example.org/{id}"))
            .arg("--out")
            .arg(pki.join(out)));
    }

    // Host B: a daemon run directly, serving `orders` on 8080 to `frontend` only.
    let b_config = dir.join("b.toml");
    fs::write(&b_config, host_b_config(&testbed, &pki)).unwrap();
    let mut b_daemon = host_b
        .command(tunnel.to_str().unwrap())
        .args(["run", "--config"])
        .arg(&b_config)
        .in_cgroup(&testbed.cgroup("b/daemon"))
        .spawn();
    b_daemon.wait_for("tunnel ready", WAIT);
    let _server = host_b
        .command("python3")
        .args([NETPROBE, "serve-http", "8080", "orders"])
        .spawn();
    host_b.wait_for_listener(8080, WAIT);

    // Host A: the Debian root, booted in host A's network namespace.
    let container = Container::boot(&testbed, &host_a, &debian_root, &dir);
    let etc = container.root.join("etc/tunnel");
    fs::create_dir_all(&etc).unwrap();
    copy_dir(&pki.join("a-node"), &etc.join("node"));
    copy_dir(&pki.join("a-frontend"), &etc.join("frontend"));
    fs::copy(pki.join("ca/bundle.pem"), etc.join("bundle.pem")).unwrap();
    for deb in [&first, &second] {
        fs::copy(
            deb,
            container
                .root
                .join("var/tmp")
                .join(deb.file_name().unwrap()),
        )
        .unwrap();
    }
    let cgroup = container.cgroup2.clone();
    container.sh(&format!("mkdir -p {cgroup}/workloads/frontend"));

    // Installed: neither enabled nor started; started on the template, it stops at once
    // (exit 64) and is not restarted.
    container.sh("dpkg -i /var/tmp/tunnel_0.1.0_*.deb");
    assert_eq!(
        container.out("systemctl is-enabled tunnel || true"),
        "disabled"
    );
    assert_eq!(
        container.out("systemctl is-active tunnel || true"),
        "inactive"
    );
    container.out("systemctl start tunnel || true");
    assert_eq!(
        container.show("ExecMainStatus,NRestarts,ActiveState"),
        "ExecMainStatus=64\nNRestarts=0\nActiveState=failed",
        "{}",
        container.journal()
    );

    // Configured and enabled: ready, as the unit runs it.
    fs::write(etc.join("tunnel.toml"), host_a_config(&cgroup)).unwrap();
    container.sh("systemctl reset-failed tunnel && systemctl enable --now tunnel");
    let first_pid = container.out("systemctl show -p MainPID --value tunnel");
    assert_eq!(
        container.show("ActiveState,StatusText"),
        "ActiveState=active\nStatusText=ready: listeners bound, capture attached",
        "{}",
        container.journal()
    );
    let status = container.out(&format!("cat /proc/{first_pid}/status"));
    for (field, value) in [
        ("Uid:", "0\t0\t0\t0"),
        ("CapEff:", UNIT_CAPABILITIES),
        ("CapBnd:", UNIT_CAPABILITIES),
        ("NoNewPrivs:", "1"),
        ("Seccomp:", "2"),
    ] {
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        assert_eq!(line[field.len()..].trim(), value, "{field} of the daemon");
    }
    println!(
        "the daemon runs as the unit says: uid 0, CapEff {UNIT_CAPABILITIES}, no new privileges, a seccomp filter"
    );
    let call = container.call();
    assert_eq!(call, "served-by=orders", "{}", container.journal());
    b_daemon.wait_for_line(&["spiffe://example.org/frontend"], WAIT);

    // Reload: SIGHUP, announced, the daemon stays.
    container.sh("systemctl reload tunnel");
    let journal = container.journal();
    assert!(
        journal.contains("policy reloaded") && journal.contains("trigger=\"SIGHUP\""),
        "{journal}"
    );
    assert_eq!(
        container.show("ActiveState,MainPID,NRestarts"),
        format!("ActiveState=active\nMainPID={first_pid}\nNRestarts=0")
    );

    // Upgrade to the rebuilt package while a workload keeps calling: the new daemon takes
    // over beside the old one, and no call fails.
    container.sh("touch /run/load");
    let load = container.spawn(&format!(
        "echo $$ > {cgroup}/workloads/frontend/cgroup.procs; ok=0; failed=0; \
         while [ -e /run/load ]; do \
           if curl -s -m 5 http://10.0.0.2:8080/ | grep -q served-by=orders; \
           then ok=$((ok+1)); else failed=$((failed+1)); fi; \
         done; echo ok=$ok failed=$failed"
    ));
    std::thread::sleep(Duration::from_millis(500));
    container.sh("dpkg -i /var/tmp/tunnel_0.1.1_*.deb");
    std::thread::sleep(Duration::from_millis(500));
    container.sh("rm /run/load");
    let counts = load.finish();
    println!("calls during the upgrade: {}", counts.trim());
    assert!(
        counts.contains(" failed=0"),
        "calls failed: {counts}\n{}",
        container.journal()
    );
    let ok: u32 = counts
        .trim()
        .strip_prefix("ok=")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(ok >= 10, "the load did not run: {counts}");
    let second_pid = container.out("systemctl show -p MainPID --value tunnel");
    assert_ne!(second_pid, first_pid, "{}", container.journal());
    assert_eq!(
        container.show("ActiveState,StatusText,NRestarts"),
        "ActiveState=active\nStatusText=ready: took over from the previous daemon\nNRestarts=0",
        "{}",
        container.journal()
    );
    assert_eq!(
        container.out("dpkg-query -W -f '${Version}' tunnel"),
        "0.1.1"
    );
    assert_eq!(container.out("systemctl is-enabled tunnel"), "enabled");
    let journal = container.journal();
    assert!(
        journal.contains("took over from the previous daemon"),
        "{journal}"
    );
    assert!(
        !journal.contains("not our child"),
        "systemd did not adopt the new daemon:\n{journal}"
    );
    assert_eq!(container.call(), "served-by=orders");

    // The watchdog, shortened to 2 s by a drop-in: pinged while the daemon runs, and a daemon
    // that stops running (SIGSTOP) is killed and started again by systemd.
    container.sh(
        "mkdir -p /etc/systemd/system/tunnel.service.d && \
         printf '[Service]\\nWatchdogSec=2s\\n' > /etc/systemd/system/tunnel.service.d/watchdog.conf && \
         systemctl daemon-reload && systemctl restart tunnel",
    );
    let pinged = || container.out("systemctl show -p WatchdogTimestampMonotonic --value tunnel");
    let before = pinged();
    std::thread::sleep(Duration::from_millis(2500));
    assert_ne!(pinged(), before, "no watchdog ping in 2.5 s");
    let stopped = container.out("systemctl show -p MainPID --value tunnel");
    container.sh(&format!("kill -STOP {stopped}"));
    testbed::wait_until(
        WAIT,
        Duration::from_millis(200),
        || container.show("NRestarts,ActiveState") == "NRestarts=1\nActiveState=active",
        || {
            let state = container.show("NRestarts,ActiveState");
            format!(
                "not restarted after its watchdog: {state}\n{}",
                container.journal()
            )
        },
    );
    let journal = container.journal();
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    println!("a stopped daemon missed its watchdog and was restarted");
    container.sh(
        "rm -r /etc/systemd/system/tunnel.service.d && systemctl daemon-reload && \
         systemctl reset-failed tunnel",
    );
    assert_eq!(container.call(), "served-by=orders");

    // Purge: the daemon stopped and drained (not killed), capture removed, nothing of the
    // package or the daemon left; the administrator's certificates stay.
    container.sh("dpkg --purge tunnel");
    assert_eq!(
        container.show("ActiveState,Result"),
        "ActiveState=inactive\nResult=success",
        "{}",
        container.journal()
    );
    assert_eq!(container.out("pgrep -x tunnel || true"), "");
    assert_eq!(
        container.out("dpkg-query -W -f '${Status}' tunnel 2>/dev/null || echo gone"),
        "gone"
    );
    for path in [
        "/usr/bin/tunnel",
        "/usr/lib/cni/tunnel-cni",
        "/lib/systemd/system/tunnel.service",
        "/etc/systemd/system/tunnel.service",
        "/etc/systemd/system/multi-user.target.wants/tunnel.service",
        "/etc/tunnel/tunnel.toml",
        "/var/lib/tunnel",
        "/run/tunnel",
        "/var/lib/systemd/deb-systemd-helper-enabled/tunnel.service.dsh-also",
        "/var/lib/systemd/deb-systemd-helper-masked/tunnel.service",
        "/usr/share/doc/tunnel",
    ] {
        assert_eq!(
            container.out(&format!("test -e {path} && echo left || echo gone")),
            "gone",
            "{path} is left after the purge"
        );
    }
    assert_eq!(
        container.out("ls /etc/tunnel"),
        "bundle.pem\nfrontend\nnode",
        "the purge removes exactly what is not the administrator's"
    );
    let pins: Vec<_> = fs::read_dir(&container.bpf_dir).unwrap().collect();
    assert!(pins.is_empty(), "pins left in bpffs: {pins:?}");

    let lintian = lintian.wait_with_output().expect("lintian");
    let report = String::from_utf8_lossy(&lintian.stdout);
    println!(
        "lintian: {}",
        if report.trim().is_empty() {
            "no tags"
        } else {
            &report
        }
    );
    assert!(
        !report.lines().any(|l| l.starts_with("E: ")) && lintian.status.success(),
        "lintian found errors:\n{report}{}",
        String::from_utf8_lossy(&lintian.stderr)
    );
    println!("the whole test took {:?}", started.elapsed());
}

/// A Debian root booted by systemd-nspawn, on an overlay of the root setup made.
struct Container {
    /// The overlay's merged directory: the container's `/` seen from here.
    root: PathBuf,
    /// The container's bpffs, a directory of the host's.
    bpf_dir: PathBuf,
    /// Where the container sees the cgroup v2 hierarchy (as this host does).
    cgroup2: String,
    /// The container's PID 1.
    init: u32,
    nspawn: Option<Proc>,
    cgroup: PathBuf,
}

impl Container {
    fn boot(testbed: &Testbed, host: &Host, debian_root: &Path, dir: &Path) -> Self {
        let root = dir.join("root");
        for sub in ["root", "upper", "work"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        run(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                debian_root.display(),
                dir.join("upper").display(),
                dir.join("work").display()
            ))
            .arg(&root));
        let bpf_dir = testbed.bpf_dir("container");
        fs::create_dir_all(&bpf_dir).unwrap();
        fs::set_permissions(&bpf_dir, fs::Permissions::from_mode(0o700)).unwrap();
        let cgroup = testbed.cgroup("a/container");
        let cgroup2 = testbed::cgroup2_mount().display().to_string();
        // In host A's network namespace (no network of its own), with the capabilities the
        // unit names and bpf() allowed (nspawn's own filter refuses it otherwise); bpffs
        // from a directory of this host's, so that the test sees the pins.
        let nspawn = host
            .command("systemd-nspawn")
            .args([
                "--quiet",
                "--boot",
                "--register=no",
                "--keep-unit",
                "--console=pipe",
            ])
            .args([
                "--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN",
                "--system-call-filter=bpf",
            ])
            .arg(format!("--bind={}:/sys/fs/bpf", bpf_dir.display()))
            .arg(format!("--machine={}", host.netns))
            .arg("--directory")
            .arg(&root)
            .in_cgroup(&cgroup)
            .spawn();
        let nspawn_pid = nspawn.pid();
        // The container's PID 1 is the child of nspawn's that runs systemd.
        let mut init = None;
        testbed::wait_until(
            WAIT,
            Duration::from_millis(50),
            || {
                let children =
                    fs::read_to_string(format!("/proc/{nspawn_pid}/task/{nspawn_pid}/children"))
                        .unwrap_or_default();
                init = children.split_whitespace().find_map(|pid| {
                    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                    (comm.trim() == "systemd").then(|| pid.parse().ok())?
                });
                init.is_some()
            },
            || format!("systemd-nspawn started no systemd:\n{}", nspawn.logs()),
        );
        let container = Self {
            root,
            bpf_dir,
            cgroup2,
            init: init.unwrap(),
            nspawn: Some(nspawn),
            cgroup,
        };
        // Until systemd answers at all, then until it has booted.
        let mut state = String::new();
        testbed::wait_until(
            WAIT,
            Duration::from_millis(100),
            || {
                let out = container
                    .command("systemctl is-system-running --wait")
                    .output()
                    .unwrap();
                state = String::from_utf8_lossy(&out.stdout).trim().to_string();
                !state.is_empty()
            },
            || {
                let logs = container
                    .nspawn
                    .as_ref()
                    .map(Proc::logs)
                    .unwrap_or_default();
                format!("the container's systemd does not answer:\n{logs}")
            },
        );
        if state != "running" {
            let failed = container.out("systemctl --failed --no-pager || true");
            panic!("the container did not boot cleanly ({state}):\n{failed}");
        }
        println!("container booted: {state}");
        container
    }

    fn command(&self, script: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .args(["-t", &self.init.to_string(), "-a", "sh", "-c", script])
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        command
    }

    /// Runs `script` in the container; panics with its output if it fails.
    fn sh(&self, script: &str) {
        let out = self.command(script).output().unwrap();
        assert!(
            out.status.success(),
            "in the container: {script}\n{}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.journal()
        );
    }

    /// What `script` prints, trimmed.
    fn out(&self, script: &str) -> String {
        let out = self.command(script).output().unwrap();
        assert!(
            out.status.success(),
            "in the container: {script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The unit's properties, in the order asked.
    fn show(&self, properties: &str) -> String {
        properties
            .split(',')
            .map(|p| self.out(&format!("systemctl show -p {p} tunnel")))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn journal(&self) -> String {
        self.command("journalctl --no-pager -u tunnel -o cat")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// One call from the workload `frontend` to `orders` on host B, through the daemon.
    fn call(&self) -> String {
        self.out(&format!(
            "echo $$ > {}/workloads/frontend/cgroup.procs; curl -sS -m 10 http://10.0.0.2:8080/",
            self.cgroup2
        ))
    }

    fn spawn(&self, script: &str) -> Background {
        Background(
            self.command(script)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

/// A script running in the container; killed if the test ends without waiting for it.
struct Background(std::process::Child);

impl Background {
    /// Its output, once it has ended by itself.
    fn finish(mut self) -> String {
        let started = Instant::now();
        while self.0.try_wait().unwrap().is_none() {
            assert!(started.elapsed() < WAIT, "the script did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut text = String::new();
        use std::io::Read as _;
        self.0
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Every process of the container is in its cgroup: killed at once, then the overlay
        // goes.
        let _ = fs::write(self.cgroup.join("cgroup.kill"), "1");
        drop(self.nspawn.take());
        for _ in 0..100 {
            let procs = fs::read_to_string(self.cgroup.join("cgroup.procs")).unwrap_or_default();
            if procs.trim().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(&self.root)
            .status();
    }
}

fn host_a_config(cgroup2: &str) -> String {
    format!(
        r#"trust_domain = "example.org"
trust_bundle = "/etc/tunnel/bundle.pem"
[node]
spiffe_id = "spiffe://example.org/node/host-a"
cert = "/etc/tunnel/node/cert.pem"
key = "/etc/tunnel/node/key.pem"
[capture]
cgroup = "{cgroup2}/workloads"
destinations = ["10.0.0.0/24"]
[[workload]]
name = "frontend"
spiffe_id = "spiffe://example.org/frontend"
cert = "/etc/tunnel/frontend/cert.pem"
key = "/etc/tunnel/frontend/key.pem"
cgroup = "{cgroup2}/workloads/frontend"
"#
    )
}

fn host_b_config(testbed: &Testbed, pki: &Path) -> String {
    format!(
        r#"trust_domain = "example.org"
trust_bundle = "{pki}/ca/bundle.pem"
[node]
spiffe_id = "spiffe://example.org/node/host-b"
cert = "{pki}/b-node/cert.pem"
key = "{pki}/b-node/key.pem"
[capture]
cgroup = "{capture}"
destinations = ["10.0.0.0/24"]
bpf_dir = "{bpf}"
[[workload]]
name = "orders"
spiffe_id = "spiffe://example.org/orders"
cert = "{pki}/b-orders/cert.pem"
key = "{pki}/b-orders/key.pem"
ports = [8080]
[[policy]]
action = "allow"
to = "orders"
from = ["spiffe://example.org/frontend"]
"#,
        pki = pki.display(),
        capture = testbed.cgroup("b/workloads").display(),
        bpf = testbed.bpf_dir("b").display(),
    )
}

/// `systemd-analyze security --offline=true` of the unit: its overall exposure.
fn systemd_analyze_security() -> f64 {
    let unit = Path::new(WORKSPACE).join("deploy/systemd/tunnel.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            l.split("Overall exposure level for tunnel.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no score from systemd-analyze:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

fn arch() -> String {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn run(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
