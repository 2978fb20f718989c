//! The servers on host B and the stunnel+nginx baseline: the recipe teams use without a
//! mesh (stunnel in front of the caller, nginx stream with `ssl_verify_client on` in front
//! of the server), with TLS 1.3 and the same CA and ECDSA P-256 certificates as the tunnel.
//! Both keep their default session handling (nginx issues TLS 1.3 tickets); the tunnel's
//! resumption is off by design.
//!
//! The baseline is set up as a careful operator would, so that the comparison is with the
//! recipe at its best: the settings below that a default install lacks say why they are
//! there. Tried by hand in the same two hosts and left out, because none moved one-stream
//! throughput or the proxies' CPU per GB beyond run-to-run noise (November 2026, stunnel
//! 5.68, nginx 1.22, OpenSSL 3.0): one nginx worker instead of two, and a larger nginx
//! `proxy_buffer_size` (64k, 256k: nginx then writes to the server in fewer, larger writes,
//! but stunnel's CPU per GB rose by about as much as nginx's fell).
//!
//! What bounds it instead is the relay loop, which neither offers a setting for: stunnel
//! moves one TLS record (~16 KB, its transfer buffer is fixed at build time) per poll, read
//! and write, and nginx reads one record per `read` and hands it to the server in one
//! `writev` (strace). On two cores shared with the client and the server that costs the
//! two proxies 1.75-1.95 CPU-s per GB, against 1.0-1.05 for the two tunnel daemons.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Result, bail};
use testbed::{Host, Proc, Testbed};

const READY: Duration = Duration::from_secs(15);

/// Certificate directories laid out as the example configs expect (`/etc/tunnel/...`).
pub struct Certs {
    pub a: PathBuf,
    pub b: PathBuf,
}

pub fn certificates(testbed: &Testbed, tunnel: &Path) -> Result<Certs> {
    let root = testbed.dir().join("pki");
    run(Command::new(tunnel)
        .args(["ca", "init", "--trust-domain", "example.org", "--out"])
        .arg(root.join("ca")))?;
    let issue = |id: &str, out: PathBuf| {
        run(Command::new(tunnel)
            .args(["ca", "issue", "--ca"])
            .arg(root.join("ca"))
            .args([
                "--spiffe-id",
                &format!("spiffe://example.org/{id}"),
                "--out",
            ])
            .arg(out))
    };
    let (a, b) = (root.join("a"), root.join("b"));
    issue("node/host-a", a.join("node"))?;
    issue("frontend", a.join("frontend"))?;
    issue("node/host-b", b.join("node"))?;
    issue("orders", b.join("orders"))?;
    for dir in [&a, &b] {
        fs::create_dir_all(dir.join("ca"))?;
        fs::copy(root.join("ca/bundle.pem"), dir.join("ca/bundle.pem"))?;
    }
    Ok(Certs { a, b })
}

/// Ports of the direct path's servers on B: owned by no workload, so never steered.
pub const DIRECT_HTTP_PORT: u16 = 8081;
pub const DIRECT_IPERF_PORT: u16 = 5202;

/// nginx's cgroup (the stunnel+nginx path's proxy CPU is read from it). B's servers run in
/// B's capture cgroup, as a host's workloads do: the daemon's deliveries to them join the
/// sockmap hop when it is on. nginx's own connections to its backends (the stunnel+nginx
/// path) go to B's address, which B's config excludes from capture.
pub const NGINX_CGROUP: &str = "b/workloads/nginx";
const IPERF3_CGROUP: &str = "b/workloads/iperf3";

/// On B: nginx serving a small HTTP response on 10.0.0.2:8080 (the server of every path),
/// nginx stream TLS terminators for the baseline on 8443 (→ 8080) and 8444 (→ 5201), and
/// `iperf3 -s` on 10.0.0.2:5201; the same HTTP server on [`DIRECT_HTTP_PORT`] and a second
/// `iperf3 -s` on [`DIRECT_IPERF_PORT`] for the direct path.
pub fn servers(testbed: &Testbed, b: &Host, certs: &Certs) -> Result<Vec<Proc>> {
    let prefix = testbed.dir().join("nginx");
    fs::create_dir_all(prefix.join("logs"))?;
    let cert = certs.b.join("node/cert.pem");
    let key = certs.b.join("node/key.pem");
    let bundle = certs.b.join("ca/bundle.pem");
    let config = format!(
        r#"load_module /usr/lib/nginx/modules/ngx_stream_module.so;
user root;
worker_processes 2;
worker_rlimit_nofile 20000;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_header_timeout 300s;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 10.0.0.2:8080 backlog=4096;
        # The direct path's port: no workload owns it, so B's daemon does not steer it
        # (plaintext from another host to a workload port is refused in strict mode).
        listen 10.0.0.2:{DIRECT_HTTP_PORT} backlog=4096;
        location / {{ return 200 "ok\n"; }}
    }}
}}
stream {{
    ssl_protocols TLSv1.3;
    # The tunnel's order: AES-128-GCM first (OpenSSL's own order puts AES-256 first). As
    # the server nginx follows the client's order, which stunnel sets the same way below.
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384;
    # nginx's default already, written out: with Nagle's algorithm a relay holds back a
    # partial segment (a small record, or a record's tail) while earlier data is unacked.
    tcp_nodelay on;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_client_certificate {bundle};
    ssl_verify_client on;
    ssl_verify_depth 3;
    server {{ listen 10.0.0.2:8443 ssl backlog=4096; proxy_pass 10.0.0.2:8080; }}
    server {{ listen 10.0.0.2:8444 ssl; proxy_pass 10.0.0.2:5201; }}
}}
"#,
        prefix = prefix.display(),
        cert = cert.display(),
        key = key.display(),
        bundle = bundle.display()
    );
    let config_path = prefix.join("nginx.conf");
    fs::write(&config_path, config)?;
    let nginx = b
        .command("nginx")
        .args(["-p"])
        .arg(&prefix)
        .args(["-c"])
        .arg(&config_path)
        .in_cgroup(&testbed.cgroup(NGINX_CGROUP))
        .spawn();
    b.wait_for_listener(8443, READY);
    b.wait_for_listener(8080, READY);
    let iperf = b
        .command("iperf3")
        .args(["-s", "-B", "10.0.0.2", "-p", "5201"])
        .in_cgroup(&testbed.cgroup(IPERF3_CGROUP))
        .spawn();
    b.wait_for_listener(5201, READY);
    let direct_iperf = b
        .command("iperf3")
        .args(["-s", "-B", "10.0.0.2", "-p", &DIRECT_IPERF_PORT.to_string()])
        .in_cgroup(&testbed.cgroup(IPERF3_CGROUP))
        .spawn();
    b.wait_for_listener(DIRECT_IPERF_PORT, READY);
    Ok(vec![nginx, iperf, direct_iperf])
}

/// On A: the stunnel client, accepting plain TCP on 127.0.0.1:9080 (HTTP) and :9201
/// (iperf3), connecting with TLS 1.3 and the frontend certificate to nginx on B.
pub fn stunnel(testbed: &Testbed, a: &Host, certs: &Certs) -> Result<Proc> {
    let cert = certs.a.join("frontend/cert.pem");
    let key = certs.a.join("frontend/key.pem");
    let bundle = certs.a.join("ca/bundle.pem");
    // Each line of a service says why it is there when a default install would differ.
    let service = |name: &str, accept: u16, connect: u16| {
        [
            format!("[{name}]"),
            "client = yes".into(),
            format!("accept = 127.0.0.1:{accept}"),
            format!("connect = 10.0.0.2:{connect}"),
            format!("cert = {}", cert.display()),
            format!("key = {}", key.display()),
            format!("CAfile = {}", bundle.display()),
            "verifyChain = yes".into(),
            "sslVersionMin = TLSv1.3".into(),
            // The tunnel's suites in the tunnel's order (OpenSSL's default order puts
            // AES-256-GCM first); nginx, following the client's order, then agrees on
            // AES-128-GCM as two tunnel daemons do.
            "ciphersuites = TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384".into(),
            // No Nagle delay on either side of the relay. stunnel 5.68 already sets these
            // (`stunnel4 -sockets`; strace shows TCP_NODELAY on both sockets of every
            // connection); written out as careful setups do, so the baseline does not
            // depend on a version's defaults.
            "socket = l:TCP_NODELAY=1".into(),
            "socket = r:TCP_NODELAY=1".into(),
        ]
        .join("\n")
            + "\n"
    };
    let config = format!(
        "foreground = yes\npid =\ndebug = 3\n{}{}",
        service("http", 9080, 8443),
        service("iperf", 9201, 8444)
    );
    let path = testbed.dir().join("stunnel.conf");
    fs::write(&path, config)?;
    // Outside every captured cgroup: stunnel's own connection to B must not be tunnelled.
    let proc = a
        .command("stunnel4")
        .arg(&path)
        .in_cgroup(&testbed.cgroup("stunnel"))
        .spawn();
    a.wait_for_listener(9080, READY);
    Ok(proc)
}

fn run(command: &mut Command) -> Result<()> {
    let output = command.output()?;
    if !output.status.success() {
        bail!("{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}
