//! `cargo xtask demo`: two test hosts from network namespaces, the daemon on each with the
//! example configs from `config/`, a plain HTTP server on B and an unmodified curl on A. It
//! shows the capture, the identity B sees, what crosses the wire, and two refusals.

use std::{fs, path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result, bail};
use testbed::{Host, Proc, Testbed};

use crate::{cargo, workspace};

const WAIT: Duration = Duration::from_secs(15);

pub fn run() -> Result<()> {
    cargo(&["build", "--quiet", "--package", "tunnel"])?;
    let tunnel = workspace().join("target/debug/tunnel");
    let mut testbed = Testbed::new("demo");
    let host_a = testbed.add_host("host-a");
    let host_b = testbed.add_host("host-b");

    step("1. A CA for example.org, and certificates for both nodes and both workloads");
    let etc = testbed.dir().to_path_buf();
    show(
        Command::new(&tunnel)
            .args(["ca", "init", "--trust-domain", "example.org", "--out"])
            .arg(etc.join("ca")),
    )?;
    for (id, dir) in [
        ("node/host-a", "a/node"),
        ("frontend", "a/frontend"),
        ("node/host-b", "b/node"),
        ("orders", "b/orders"),
    ] {
        show(&mut ca_issue(&tunnel, &etc, id, "1h", dir))?;
    }
    for host in ["a", "b"] {
        fs::create_dir_all(etc.join(host).join("ca"))?;
        fs::copy(
            etc.join("ca/bundle.pem"),
            etc.join(host).join("ca/bundle.pem"),
        )?;
    }

    step(
        "2. The daemons, with config/host-a.toml and config/host-b.toml (paths adapted to the test hosts)",
    );
    let config_a = render(&testbed, "host-a.toml", "a", &etc.join("a"))?;
    let config_b = render(&testbed, "host-b.toml", "b", &etc.join("b"))?;
    testbed.cgroup("a/workloads/frontend");
    testbed.cgroup("a/workloads/unknown");
    testbed.cgroup("b/workloads");
    let mut daemon_b = start_daemon(&testbed, &host_b, &tunnel, "b", &config_b)?;
    let mut daemon_a = start_daemon(&testbed, &host_a, &tunnel, "a", &config_a)?;
    println!("   host A: {}", last_line(&daemon_a, "tunnel ready"));
    println!("   host B: {}", last_line(&daemon_b, "tunnel ready"));

    step("3. An ordinary HTTP server on host B (10.0.0.2:8080): python3 -m http.server");
    let www = etc.join("www");
    fs::create_dir_all(&www)?;
    fs::write(www.join("index.html"), "hello from orders on host B\n")?;
    let _server = host_b
        .command("python3")
        .args(["-m", "http.server", "8080", "--bind", "::", "--directory"])
        .arg(&www)
        .spawn();
    host_b.wait_for_listener(8080, WAIT);

    step(
        "4. curl http://10.0.0.2:8080/ on host A, run by workload `frontend` (unmodified, plain HTTP)",
    );
    let capture = host_b.capture("eth0", "tcp", etc.join("wire.pcap"));
    let frontend = testbed.cgroup("a/workloads/frontend");
    let out = host_a
        .command("curl")
        .args(["-sS", "-m", "10", "http://10.0.0.2:8080/"])
        .in_cgroup(&frontend)
        .output(WAIT);
    println!("   curl printed: {}", out.stdout.trim());
    daemon_a.wait_for("tunnel::access", WAIT);
    daemon_b.wait_for("tunnel::access", WAIT);
    println!("   host A log: {}", last_line(&daemon_a, "tunnel::access"));
    println!("   host B log: {}", last_line(&daemon_b, "tunnel::access"));

    step("5. What crossed the wire between the hosts (tcpdump on host B's eth0)");
    let packets = capture.stop();
    let summary = Command::new("tcpdump")
        .args(["-nn", "-q", "-r"])
        .arg(packets.path())
        .output()?;
    let text = String::from_utf8_lossy(&summary.stdout);
    for line in text.lines().take(6) {
        println!("   {line}");
    }
    println!(
        "   ... {} packets, TCP ports seen: {:?}",
        text.lines().count(),
        packets.tcp_ports()
    );
    println!(
        "   the page's text on the wire in clear: {}",
        packets.contains(b"hello from orders")
    );

    step("6. A process in a cgroup that belongs to no workload is refused, not sent anonymously");
    let unknown = testbed.cgroup("a/workloads/unknown");
    let out = host_a
        .command("curl")
        .args(["-sS", "-m", "5", "http://10.0.0.2:8080/"])
        .in_cgroup(&unknown)
        .output(WAIT);
    println!("   curl: {}", out.stderr.trim());
    daemon_a.wait_for("belongs to no workload", WAIT);
    println!(
        "   host A log: {}",
        last_line(&daemon_a, "belongs to no workload")
    );

    step(
        "7. Plaintext around the tunnel: a process on host A outside the captured cgroup calls 10.0.0.2:8080 directly",
    );
    let out = host_a
        .command("curl")
        .args(["-sS", "-m", "5", "http://10.0.0.2:8080/"])
        .output(WAIT);
    println!(
        "   curl: {} (host B's steer_inbound handed it to its daemon, which refuses plaintext in strict mode)",
        out.stderr.trim()
    );
    daemon_b.wait_for("refused plaintext from another host", WAIT);
    println!(
        "   host B log: {}",
        last_line(&daemon_b, "refused plaintext from another host")
    );

    step(
        "8. The frontend's certificate is replaced under the running daemon (tunnel ca issue --force), and tunnel status asks it",
    );
    show(ca_issue(&tunnel, &etc, "frontend", "2h", "a/frontend").arg("--force"))?;
    daemon_a.wait_for("certificate replaced", WAIT);
    println!(
        "   host A log: {}",
        last_line(&daemon_a, "certificate replaced")
    );
    let out = host_a
        .command("curl")
        .args(["-sS", "-m", "10", "http://10.0.0.2:8080/"])
        .in_cgroup(&frontend)
        .output(WAIT);
    println!("   curl printed: {} (no restart)", out.stdout.trim());
    let status = host_a
        .command(&tunnel.display().to_string())
        .args(["status", "--admin", "127.0.0.1:15000"])
        .output(WAIT);
    for line in status.stdout.lines() {
        println!("   {line}");
    }

    step("9. Host A's daemon is killed: capture stays pinned and fails closed");
    daemon_a.signal("KILL");
    daemon_a.wait_timeout(WAIT);
    let out = host_a
        .command("curl")
        .args(["-sS", "-m", "5", "http://10.0.0.2:8080/"])
        .in_cgroup(&frontend)
        .output(WAIT);
    println!(
        "   curl: {} (after {} ms; nothing left in plaintext)",
        out.stderr.trim(),
        out.elapsed.as_millis()
    );

    step("Done; the test hosts are removed.");
    drop(daemon_b);
    Ok(())
}

fn render(
    testbed: &Testbed,
    example: &str,
    label: &str,
    certs: &Path,
) -> Result<std::path::PathBuf> {
    let text = fs::read_to_string(workspace().join("config").join(example))
        .with_context(|| format!("read config/{example}"))?;
    let path = testbed.dir().join(example);
    fs::write(&path, testbed::render_config(testbed, &text, label, certs))?;
    Ok(path)
}

fn start_daemon(
    testbed: &Testbed,
    host: &Host,
    tunnel: &Path,
    label: &str,
    config: &Path,
) -> Result<Proc> {
    let mut daemon = host
        .command(&tunnel.display().to_string())
        .args(["run", "--log-level", "debug", "--config"])
        .arg(config)
        .in_cgroup(&testbed.cgroup(&format!("{label}/daemon")))
        .spawn();
    daemon.wait_for("tunnel ready", WAIT);
    Ok(daemon)
}

/// The last log line containing `needle`, without the timestamp.
fn last_line(daemon: &Proc, needle: &str) -> String {
    let logs = daemon.logs();
    let line = logs
        .lines()
        .rev()
        .find(|l| l.contains(needle))
        .unwrap_or_default();
    line.split_once("Z ")
        .map_or(line, |(_, rest)| rest.trim())
        .to_string()
}

fn show(command: &mut Command) -> Result<()> {
    let output = command.output()?;
    if !output.status.success() {
        bail!("{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    println!("   {}", String::from_utf8_lossy(&output.stdout).trim());
    Ok(())
}

/// `tunnel ca issue` of `spiffe://example.org/<id>` from `<etc>/ca` into `<etc>/<dir>`.
fn ca_issue(tunnel: &Path, etc: &Path, id: &str, ttl: &str, dir: &str) -> Command {
    let mut command = Command::new(tunnel);
    command
        .args(["ca", "issue", "--ca"])
        .arg(etc.join("ca"))
        .args([
            "--spiffe-id",
            &format!("spiffe://example.org/{id}"),
            "--ttl",
            ttl,
            "--out",
        ])
        .arg(etc.join(dir));
    command
}

fn step(title: &str) {
    println!("\n== {title}");
}
