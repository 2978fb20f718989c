//! Certificate lifecycle under load, end to end: host A's `frontend` keeps calling `orders`
//! on host B (short connections one after another, and long checksummed streams) while
//! certificates change under both daemons. Every rotation must cost zero failed connections
//! and zero corrupted bytes; each test prints its counts.

mod support;

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use support::{LONG, NETPROBE, Pair, Proc, SHORT};

/// What `netprobe.py load` counted.
#[derive(Debug, Default)]
struct Counts {
    short_ok: u64,
    short_failed: u64,
    long_ok: u64,
    long_failed: u64,
    corrupted_bytes: u64,
    echoed_bytes: u64,
}

impl Counts {
    fn parse(stdout: &str) -> Self {
        let line = stdout
            .lines()
            .find(|l| l.starts_with("short_ok="))
            .unwrap_or_else(|| panic!("no counts in the load's output:\n{stdout}"));
        let mut counts = Self::default();
        for field in line.split_whitespace() {
            let (key, value) = field.split_once('=').expect("key=value");
            let value: u64 = value.parse().expect("a count");
            match key {
                "short_ok" => counts.short_ok = value,
                "short_failed" => counts.short_failed = value,
                "long_ok" => counts.long_ok = value,
                "long_failed" => counts.long_failed = value,
                "corrupted_bytes" => counts.corrupted_bytes = value,
                "echoed_bytes" => counts.echoed_bytes = value,
                _ => {}
            }
        }
        counts
    }

    /// Prints the counts and fails on any failed connection or corrupted byte, with the
    /// daemons' lines that say why a connection ended otherwise than cleanly.
    fn assert_clean(&self, scenario: &str, load: &Proc, pair: &Pair) {
        println!(
            "{scenario}: short connections ok={} failed={}, long streams ok={} failed={}, \
             echoed {} MiB, corrupted bytes {}",
            self.short_ok,
            self.short_failed,
            self.long_ok,
            self.long_failed,
            self.echoed_bytes >> 20,
            self.corrupted_bytes
        );
        assert!(
            self.short_failed == 0 && self.long_failed == 0 && self.corrupted_bytes == 0,
            "{scenario}: connections failed or bytes were corrupted:\n{}\nwhat the daemons said \
             of it:\nA:\n{}\nB:\n{}",
            load.stderr(),
            unclean_lines(&pair.a.logs()),
            unclean_lines(&pair.b.logs()),
        );
        assert!(
            self.short_ok > 50 && self.long_ok > 0 && self.echoed_bytes > 0,
            "{scenario}: the load did not run: {self:?}"
        );
    }
}

/// A daemon's lines about connections that did not end cleanly: refusals, resets, closed
/// tunnel connections, warnings and errors.
fn unclean_lines(logs: &str) -> String {
    const SIGNS: [&str; 7] = [
        "refused",
        "reset",
        "closed with its streams",
        "not opened",
        "GOAWAY",
        " WARN ",
        " ERROR ",
    ];
    logs.lines()
        .filter(|line| SIGNS.iter().any(|sign| line.contains(sign)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Two hosts from the examples with `orders` serving on B, both daemons up; `prepare` may
/// rewrite their configs and files first (it knows the test's directories).
fn pair(name: &str, prepare: impl FnOnce(&Pair)) -> (Pair, Proc) {
    let mut pair = Pair::new(name, |a| a, |b| b);
    prepare(&pair);
    pair.start();
    let server = pair.serve_on_b(&["serve-tagged", "8080"], 8080);
    (pair, server)
}

/// Replaces `from` by `to` in a config file.
fn edit_config(config: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(config).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", config.display());
    fs::write(config, text.replace(from, to)).unwrap();
}

/// Starts the load on A as `frontend`: `seconds` of traffic, long streams of
/// `stream_seconds` each.
fn start_load(pair: &Pair, seconds: u32, streams: u32, stream_seconds: u32) -> Proc {
    let mut load = pair
        .a
        .host
        .command("python3")
        .arg(NETPROBE)
        .args(["load", "10.0.0.2", "8080"])
        .args([
            seconds.to_string(),
            streams.to_string(),
            stream_seconds.to_string(),
        ])
        .in_cgroup(&pair.a.workload_cgroup(&pair.testbed, "frontend"))
        .spawn();
    load.wait_for("started", SHORT);
    load
}

fn finish_load(mut load: Proc, seconds: u32) -> (Counts, Proc) {
    load.wait_timeout(Duration::from_secs(u64::from(seconds)) + LONG)
        .expect("the load finishes");
    (Counts::parse(&load.stdout()), load)
}

/// Replaces `path` as careful tools do: a temporary file beside it, renamed over it.
fn rename_over(path: &Path, contents: &[u8]) {
    let temporary = path.with_extension("tmp");
    fs::write(&temporary, contents).unwrap();
    fs::rename(&temporary, path).unwrap();
}

/// Puts a freshly issued certificate and key (a directory of `Pki::issue`) in place of
/// `dir/cert.pem` and `dir/key.pem`, each by rename.
fn rotate_files(issued: &Path, dir: &Path) {
    rename_over(
        &dir.join("key.pem"),
        &fs::read(issued.join("key.pem")).unwrap(),
    );
    rename_over(
        &dir.join("cert.pem"),
        &fs::read(issued.join("cert.pem")).unwrap(),
    );
}

/// How many lines hold every needle.
fn count_lines(logs: &str, needles: &[&str]) -> usize {
    logs.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

/// Waits until `daemon` has logged `n` lines holding every needle.
fn wait_for_lines(daemon: &Proc, needles: &[&str], n: usize, timeout: Duration) {
    testbed::wait_until(
        timeout,
        Duration::from_millis(50),
        || count_lines(&daemon.logs(), needles) >= n,
        || format!("fewer than {n} lines with {needles:?}:\n{}", daemon.logs()),
    );
}

const FRONTEND: &str = "owner=workload \"frontend\"";
const NODE: &str = "owner=the node";

/// A Kubernetes-style secret volume: `dir/..data` → `..v1/`, and `cert.pem`, `key.pem` links
/// through `..data`. Returns the directory.
fn secret_volume(dir: &Path, issued: &Path) -> PathBuf {
    fs::create_dir_all(dir.join("..v1")).unwrap();
    for file in ["cert.pem", "key.pem"] {
        fs::copy(issued.join(file), dir.join("..v1").join(file)).unwrap();
        std::os::unix::fs::symlink(Path::new("..data").join(file), dir.join(file)).unwrap();
    }
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    dir.to_path_buf()
}

/// What the kubelet does on an update: the new files in a new directory, then one atomic
/// rename of a new `..data` link over the old.
fn swap_secret_volume(dir: &Path, issued: &Path, version: u32) {
    let new = format!("..v{version}");
    fs::create_dir_all(dir.join(&new)).unwrap();
    for file in ["cert.pem", "key.pem"] {
        fs::copy(issued.join(file), dir.join(&new).join(file)).unwrap();
    }
    std::os::unix::fs::symlink(&new, dir.join("..data_tmp")).unwrap();
    fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
}

#[test]
fn leaves_rotated_by_rename_and_by_a_secret_volume_swap_fail_no_connection() {
    // B's node certificate lives in a Kubernetes-style secret volume; A's workload
    // certificate in plain files that a tool renames over.
    let (pair, _server) = pair("lc-rotate", |pair| {
        let certs = pair.testbed.dir().join("etc-host-b");
        secret_volume(&certs.join("node-secret"), &certs.join("node"));
        edit_config(
            &pair.b.config,
            &format!("{}/node/", certs.display()),
            &format!("{}/node-secret/", certs.display()),
        );
    });
    let secret = pair.testbed.dir().join("etc-host-b/node-secret");
    let frontend_dir = pair.testbed.dir().join("etc-host-a/frontend");
    let load = start_load(&pair, 30, 4, 12);
    for round in 1..=3u32 {
        std::thread::sleep(Duration::from_secs(6));
        let issued = pair.pki.issue("frontend", &format!("frontend-{round}"));
        rotate_files(&issued, &frontend_dir);
        wait_for_lines(
            pair.a.daemon(),
            &["certificate replaced", FRONTEND],
            round as usize,
            SHORT,
        );
        let issued = pair.pki.issue("node/host-b", &format!("node-b-{round}"));
        swap_secret_volume(&secret, &issued, round + 1);
        wait_for_lines(
            pair.b.daemon(),
            &["certificate replaced", NODE],
            round as usize,
            SHORT,
        );
    }
    let (counts, load) = finish_load(load, 30);
    counts.assert_clean(
        "3 rotations of A's workload certificate (rename) and B's node certificate (volume swap)",
        &load,
        &pair,
    );
    // Not vacuous: the pool moved to new connections, and B asked its callers to move.
    let drained = count_lines(&pair.a.logs(), &["made with replaced material: draining"]);
    let goaways = count_lines(
        &pair.b.logs(),
        &["the node certificate was replaced: GOAWAY"],
    );
    println!("A drained {drained} pooled connections; B sent {goaways} GOAWAYs");
    assert!(
        drained >= 1 && goaways >= 1,
        "A drained {drained}, B sent {goaways} GOAWAYs"
    );
}

#[test]
fn a_workload_renewing_its_own_certificate_fails_no_connection() {
    let (pair, _server) = pair("lc-renew", |pair| {
        let certs = pair.testbed.dir().join("etc-host-a/frontend");
        edit_config(
            &pair.a.config,
            &format!(
                "cert = \"{dir}/cert.pem\"\nkey = \"{dir}/key.pem\"",
                dir = certs.display()
            ),
            &format!(
                "issuer = \"{}\"\nttl = \"20s\"",
                pair.pki.ca_dir().display()
            ),
        );
    });
    // Streams of 6 s: a connection lives until the certificate it was opened with expires
    // (20 s after issue), and new streams move to the renewed one at about 10 s.
    let load = start_load(&pair, 40, 4, 6);
    let (counts, load) = finish_load(load, 40);
    let renewals = count_lines(
        &pair.a.logs(),
        &["certificate replaced", "trigger=\"renewal\"", FRONTEND],
    );
    counts.assert_clean(
        &format!("{renewals} renewals of a 20 s certificate"),
        &load,
        &pair,
    );
    let expired = count_lines(&pair.a.logs(), &["closed with its streams", "expired"]);
    println!("connections still open when a certificate on them expired, closed then: {expired}");
    assert!(
        renewals >= 3,
        "at least three renewals in 40 s:\n{}",
        pair.a.logs()
    );
}

#[test]
fn a_ca_rotated_in_three_steps_fails_no_connection() {
    let (pair, _server) = pair("lc-ca", |_| {});
    let new_ca = support::Pki::new(&pair.testbed.dir().join("new-ca"));
    let old_root = fs::read(pair.pki.ca_dir().join("bundle.pem")).unwrap();
    let new_root = fs::read(new_ca.ca_dir().join("bundle.pem")).unwrap();
    let etc = |host: &str| pair.testbed.dir().join(format!("etc-{host}"));
    let set_bundles = |pem: &[u8]| {
        for host in ["host-a", "host-b"] {
            rename_over(&etc(host).join("ca/bundle.pem"), pem);
        }
    };
    let trust_reloaded = |n: usize| {
        for site in [&pair.a, &pair.b] {
            wait_for_lines(site.daemon(), &["trust bundle and CRLs reloaded"], n, SHORT);
        }
    };
    let load = start_load(&pair, 40, 4, 8);
    std::thread::sleep(Duration::from_secs(3));
    // 1. Both roots everywhere.
    set_bundles(&[old_root.as_slice(), new_root.as_slice()].concat());
    trust_reloaded(1);
    std::thread::sleep(Duration::from_secs(3));
    // 2. Every leaf from the new CA.
    for (host, path, dir) in [
        ("host-a", "frontend", "frontend"),
        ("host-a", "node/host-a", "node"),
        ("host-b", "orders", "orders"),
        ("host-b", "node/host-b", "node"),
    ] {
        let issued = new_ca.issue(path, &format!("new-{host}-{dir}"));
        rotate_files(&issued, &etc(host).join(dir));
    }
    wait_for_lines(
        pair.a.daemon(),
        &["certificate replaced", FRONTEND],
        1,
        SHORT,
    );
    wait_for_lines(pair.b.daemon(), &["certificate replaced", NODE], 1, SHORT);
    // Connections made with old leaves finish their streams (8 s at most) before the old
    // root goes: a connection the new bundle no longer accepts is closed with its streams.
    std::thread::sleep(Duration::from_secs(10));
    // 3. The old root removed.
    set_bundles(&new_root);
    trust_reloaded(2);
    let (counts, load) = finish_load(load, 40);
    counts.assert_clean("a CA rotated in three steps", &load, &pair);
    for site in [&pair.a, &pair.b] {
        let logs = site.logs();
        assert_eq!(
            count_lines(&logs, &["after the trust reload: our certificate"]),
            0,
            "every certificate in force chains to the new root:\n{logs}"
        );
    }
}

#[test]
fn a_broken_certificate_file_keeps_the_one_in_force_until_it_is_fixed() {
    let (pair, _server) = pair("lc-broken", |_| {});
    let frontend = pair.testbed.dir().join("etc-host-a/frontend");
    let node_b = pair.testbed.dir().join("etc-host-b/node");
    let load = start_load(&pair, 25, 4, 10);
    std::thread::sleep(Duration::from_secs(3));
    // A half-written certificate on A, and on B a key that belongs to another certificate.
    rename_over(
        &frontend.join("cert.pem"),
        b"-----BEGIN CERTIFICATE-----\nMIIB",
    );
    let stray = pair.pki.issue("node/host-b", "stray-node-b");
    rename_over(
        &node_b.join("key.pem"),
        &fs::read(stray.join("key.pem")).unwrap(),
    );
    let a_failed = wait_line(pair.a.daemon(), &["certificate reload failed", FRONTEND]);
    let b_failed = wait_line(pair.b.daemon(), &["certificate reload failed", NODE]);
    println!("A: {a_failed}\nB: {b_failed}");
    assert!(
        a_failed.contains(&frontend.join("cert.pem").display().to_string()),
        "{a_failed}"
    );
    assert!(
        b_failed.contains("does not belong to the certificate"),
        "{b_failed}"
    );
    std::thread::sleep(Duration::from_secs(8));
    // Fixed: both take the new material.
    rotate_files(&pair.pki.issue("frontend", "fixed-frontend"), &frontend);
    rename_over(
        &node_b.join("cert.pem"),
        &fs::read(stray.join("cert.pem")).unwrap(),
    );
    wait_for_lines(
        pair.a.daemon(),
        &["certificate replaced", FRONTEND],
        1,
        SHORT,
    );
    wait_for_lines(pair.b.daemon(), &["certificate replaced", NODE], 1, SHORT);
    let (counts, load) = finish_load(load, 25);
    counts.assert_clean("broken certificate files written, then fixed", &load, &pair);
}

fn wait_line(daemon: &Proc, needles: &[&str]) -> String {
    daemon.wait_for_line(needles, SHORT)
}

#[test]
fn a_revoked_caller_is_cut_off_within_seconds_and_refused_afterwards() {
    let crl = std::cell::OnceCell::new();
    let (pair, _server) = pair("lc-revoke", |pair| {
        // B checks the CA's CRL, empty as `tunnel ca init` wrote it.
        let file = pair.pki.ca_dir().join("crl.pem");
        let bundle_line = format!(
            "trust_bundle = \"{}/ca/bundle.pem\"",
            pair.testbed.dir().join("etc-host-b").display()
        );
        edit_config(
            &pair.b.config,
            &bundle_line,
            &format!("{bundle_line}\ncrl = [\"{}\"]", file.display()),
        );
        crl.set(file).unwrap();
    });
    let crl = crl.into_inner().unwrap();
    let load = start_load(&pair, 20, 2, 60);
    std::thread::sleep(Duration::from_secs(3));
    // Revoke A's frontend certificate (the one it presents) while its streams run.
    let frontend_cert = pair.testbed.dir().join("etc-host-a/frontend/cert.pem");
    let revoked_at = std::time::Instant::now();
    revoke(&pair.pki.ca_dir(), &frontend_cert, &crl);
    testbed::wait_until(
        SHORT,
        Duration::from_millis(20),
        || {
            load.stderr()
                .lines()
                // Each failure line: "<unix time> long <worker>/<n> at chunk <k>: <error>".
                .filter(|l| l.split_whitespace().nth(1) == Some("long"))
                .count()
                >= 2
        },
        || format!("the long streams were not cut:\n{}", pair.b.logs()),
    );
    let cut_after = revoked_at.elapsed();
    let closed = wait_line(pair.b.daemon(), &["closed with its streams", "revoked"]);
    let refused = wait_line(
        pair.b.daemon(),
        &["tunnel::auth", "authentication failed", "revoked"],
    );
    // The refusal names whose certificate and which serial, as the CRL lists it.
    assert!(
        refused.contains("peer_identity=\"spiffe://example.org/frontend\"")
            && refused.contains("the certificate has been revoked: serial ")
            && refused.contains("(the leaf)"),
        "{refused}"
    );
    println!("long streams cut {cut_after:?} after the CRL was written\nB: {closed}\nB: {refused}");
    assert!(
        cut_after < Duration::from_secs(5),
        "cut after {cut_after:?}"
    );
    assert!(
        closed.contains("KeyCompromise") || closed.contains("revoked at"),
        "{closed}"
    );
    // Counted as revoked, from the error itself (not its wording).
    let metrics = pair
        .b
        .host
        .command("curl")
        .args(["-sS", "http://127.0.0.1:15000/metrics"])
        .output(SHORT)
        .stdout;
    let scrape = prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_string())))
        .expect("a Prometheus text scrape");
    let revoked = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "tunnel_tcp_connections_failed_total"
                && s.labels.get("reason") == Some("revoked")
        })
        .map(|s| format!("{:?}", s.value));
    println!("B: tunnel_tcp_connections_failed_total{{reason=\"revoked\"}} = {revoked:?}");
    assert!(revoked.is_some(), "revocations are counted as such");
    let (counts, _load) = finish_load(load, 20);
    println!("after the revocation: {counts:?}");
    assert_eq!(counts.long_ok, 0, "no stream outlives the revocation");
    assert!(counts.short_failed > 0, "new connections are refused");
}

/// `tunnel ca revoke`, as an operator runs it.
fn revoke(ca: &Path, cert: &Path, crl: &Path) {
    let out = std::process::Command::new(support::TUNNEL)
        .args(["ca", "revoke", "--reason", "key-compromise", "--ca"])
        .arg(ca)
        .arg("--cert")
        .arg(cert)
        .arg("--crl")
        .arg(crl)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tunnel ca revoke: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `netprobe.py handshakes` counted: TLS handshakes with B's tunnel port made by hand on
/// host A (outside any captured cgroup), so each one is a new handshake that B's inbound
/// verifier judges, with no pooled connection in between.
#[derive(Debug)]
struct Handshakes {
    ok: usize,
    refused: usize,
    p50_ms: f64,
    alert: String,
    line: String,
}

fn handshakes(pair: &Pair, credentials: &Path, n: usize) -> Handshakes {
    let out = pair
        .a
        .host
        .command("python3")
        .arg(NETPROBE)
        .args(["handshakes", "10.0.0.2", "15008"])
        .arg(credentials.join("cert.pem"))
        .arg(credentials.join("key.pem"))
        .arg(n.to_string())
        .output(LONG);
    let line = out.stdout.trim().to_string();
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {line:?}: {}", out.stderr))
            .to_string()
    };
    Handshakes {
        ok: field("ok=").parse().unwrap(),
        refused: field("refused=").parse().unwrap(),
        p50_ms: field("p50_ms=").parse().unwrap_or(f64::NAN),
        alert: field("alert="),
        line,
    }
}

/// A CRL of `entries` entries signed by the intermediate of the CA in `ca`, as `tunnel ca
/// revoke` signs one (but written at once): random 16-byte serials, and somewhere in the
/// middle the serial of the first certificate of `revoked` (KeyCompromise).
fn crl_of(ca: &Path, revoked: &Path, entries: usize) -> String {
    use rcgen::{
        CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair, RevocationReason,
        RevokedCertParams, SerialNumber,
    };
    let files = tunnel::ca::CaFiles::new(ca);
    let key = KeyPair::from_pem(&fs::read_to_string(&files.intermediate_key).unwrap()).unwrap();
    let issuer =
        Issuer::from_ca_cert_pem(&fs::read_to_string(&files.intermediate_cert).unwrap(), key)
            .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let entry = |serial: Vec<u8>, reason| RevokedCertParams {
        serial_number: SerialNumber::from(serial),
        revocation_time: now,
        reason_code: Some(reason),
        invalidity_date: None,
    };
    let mut revoked_certs: Vec<_> = (1..entries)
        .map(|_| {
            let mut serial = vec![0; 16];
            fastrand::fill(&mut serial);
            // Positive, and no leading zero to strip.
            serial[0] = serial[0] & 0x7f | 0x01;
            entry(serial, RevocationReason::Superseded)
        })
        .collect();
    revoked_certs.insert(
        entries / 2,
        entry(serial_of(revoked), RevocationReason::KeyCompromise),
    );
    CertificateRevocationListParams {
        this_update: now,
        next_update: now + time::Duration::days(7),
        crl_number: SerialNumber::from(vec![2]),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .unwrap()
    .pem()
    .unwrap()
}

/// The serial of the first certificate in a PEM file, as a CRL entry carries it (the number,
/// without the DER's leading zero byte).
fn serial_of(cert: &Path) -> Vec<u8> {
    use x509_parser::prelude::{FromDer as _, X509Certificate};
    let pem = fs::read(cert).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let (_, parsed) = X509Certificate::from_der(&pem.contents).unwrap();
    let serial = parsed.raw_serial();
    serial[serial.iter().take_while(|b| **b == 0).count()..].to_vec()
}

/// The intermediate's CRL grown to 200,000 entries, given to B while it runs: the revoked
/// caller is refused and named, a certificate of the same CA it does not list is accepted,
/// B's RSS with the list stays within 12 MiB of its level at rest and comes back to it once
/// the list is emptied, and handshakes do not slow down. Before the lists were held
/// compactly (debug build): +120 MiB, +72 MiB left once emptied, handshakes 7 to 9 ms slower.
#[test]
fn a_crl_of_200000_entries_costs_little_and_is_given_back() {
    const ENTRIES: usize = 200_000;
    const MIB: u64 = 1024;
    let crl = std::cell::OnceCell::new();
    let (pair, _server) = pair("lc-crl-size", |pair| {
        // B checks a CRL of the intermediate, empty at first (as `tunnel ca init` wrote it).
        let file = pair.testbed.dir().join("crl.pem");
        fs::copy(pair.pki.ca_dir().join("crl.pem"), &file).unwrap();
        let bundle_line = format!(
            "trust_bundle = \"{}/ca/bundle.pem\"",
            pair.testbed.dir().join("etc-host-b").display()
        );
        edit_config(
            &pair.b.config,
            &bundle_line,
            &format!("{bundle_line}\ncrl = [\"{}\"]", file.display()),
        );
        crl.set(file).unwrap();
    });
    let crl = crl.into_inner().unwrap();
    let empty = fs::read(&crl).unwrap();
    let etc_a = pair.testbed.dir().join("etc-host-a");
    let (frontend, node) = (etc_a.join("frontend"), etc_a.join("node"));
    let rss = || support::rss_kib(pair.b.daemon().pid());
    let called = |pair: &Pair| pair.frontend(&["first-line", "10.0.0.2", "8080"]);
    let trust_reloaded = |n| {
        wait_for_lines(
            pair.b.daemon(),
            &["trust bundle and CRLs reloaded"],
            n,
            LONG,
        )
    };

    // Idle with the empty CRL: everything that is allocated once has been, by a call through
    // the tunnel and handshakes of both certificates.
    let out = called(&pair);
    assert_eq!(out.stdout.trim(), "port=8080", "{}", out.stderr);
    handshakes(&pair, &frontend, 20);
    let before = handshakes(&pair, &node, 50);
    assert_eq!(before.ok, 50, "{before:?}");
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss();

    // 200,000 entries, frontend's serial among them.
    let started = std::time::Instant::now();
    let big = crl_of(&pair.pki.ca_dir(), &frontend.join("cert.pem"), ENTRIES);
    println!(
        "a CRL of {ENTRIES} entries: {} KiB of PEM, made in {:.1?}",
        big.len() / 1024,
        started.elapsed()
    );
    let swapped_at = std::time::Instant::now();
    rename_over(&crl, big.as_bytes());
    trust_reloaded(1);
    println!(
        "B reloaded it {:.1?} after it was written",
        swapped_at.elapsed()
    );

    // The revoked certificate is refused, by the handshake and through the tunnel, and B's
    // log names its serial as the CRL lists it; an unrevoked one of the same CA is accepted.
    let revoked = handshakes(&pair, &frontend, 3);
    assert!(
        revoked.ok == 0 && revoked.refused == 3 && revoked.alert.contains("REVOKED"),
        "{revoked:?}"
    );
    let serial = tunnel::identity::hex_serial(&serial_of(&frontend.join("cert.pem")));
    let refused = pair.b.daemon().wait_for_line(
        &[
            "authentication failed",
            "(the leaf) revoked at",
            "KeyCompromise",
        ],
        SHORT,
    );
    assert!(refused.contains(&serial), "{serial} in {refused}");
    let out = called(&pair);
    assert!(
        !out.status.success(),
        "a revoked caller got through: {out:?}"
    );
    let with = handshakes(&pair, &node, 50);
    assert_eq!(with.ok, 50, "{with:?}");
    std::thread::sleep(Duration::from_secs(2));
    let loaded = rss();

    // Back to the empty CRL: the memory of the big one is given back, and frontend is
    // accepted again.
    rename_over(&crl, &empty);
    trust_reloaded(2);
    let after_swap = handshakes(&pair, &frontend, 5);
    assert_eq!(after_swap.ok, 5, "{after_swap:?}");
    std::thread::sleep(Duration::from_secs(2));
    let back = rss();

    println!(
        "B's RSS: idle {:.1} MiB, with the {ENTRIES}-entry CRL {:.1} MiB ({:+.1}), back to the \
         empty CRL {:.1} MiB ({:+.1})",
        idle as f64 / 1024.0,
        loaded as f64 / 1024.0,
        (loaded as f64 - idle as f64) / 1024.0,
        back as f64 / 1024.0,
        (back as f64 - idle as f64) / 1024.0,
    );
    println!(
        "handshakes judged by B (p50, connect to B's first HTTP/2 frame): empty CRL {:.2} ms, \
         {ENTRIES}-entry CRL {:.2} ms\n  {}\n  {}",
        before.p50_ms, with.p50_ms, before.line, with.line
    );
    // Its serials are 3.2 MB, the index beside them 2.6 MB; the DER alone would be 9.8 MB.
    assert!(
        loaded <= idle + 12 * MIB,
        "the CRL costs {} KiB",
        loaded.saturating_sub(idle)
    );
    assert!(
        back <= idle + 4 * MIB,
        "{} KiB stay after the CRL is gone",
        back.saturating_sub(idle)
    );
    // A lookup is a binary search: the list's size is not felt by a handshake.
    assert!(
        with.p50_ms <= before.p50_ms * 2.0 + 2.0,
        "handshakes went from {} to {} ms",
        before.p50_ms,
        with.p50_ms
    );
}
