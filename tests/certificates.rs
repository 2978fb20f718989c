//! Every certificate fault an operator can make, refused and explained end to end. The
//! certificates all come from `tests/support/mkpki.py` (Python `cryptography`), not from
//! tunnel's own CA code, so the daemon is checked against an independent implementation.
//!
//! Two hosts from the examples: B (10.0.0.2) runs its daemon with workload `orders`; A
//! (10.0.0.1) gets one config per fault, pointing workload `frontend` at the faulty
//! certificate. For each fault, `tunnel probe` on A must fail and say why, B's log must give
//! the precise reason, and `tunnel check` on A's config must name the fault and the file.
//! Faults a daemon will not start with are refused by `tunnel run` itself (exit 64).

mod support;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use support::{Host, NETPROBE, Proc, SHORT, Site, TUNNEL, Testbed, render_example, write};

const MKPKI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/support/mkpki.py");
/// Debian's Python, which has `python3-cryptography` (`cargo xtask setup`).
const PYTHON: &str = "/usr/bin/python3";

/// Host B up (daemon and `orders`), host A's config rendered but its daemon not started:
/// every call is made by `tunnel probe` with a config of A's.
struct Bed {
    testbed: Testbed,
    /// mkpki.py's output.
    pki: PathBuf,
    a: Site,
    b: Site,
    _orders: Option<Proc>,
}

impl Bed {
    fn new(name: &str) -> Self {
        let mut testbed = Testbed::new(name);
        let pki = testbed.dir().join("pki");
        let out = Command::new(PYTHON)
            .arg(MKPKI)
            .arg(&pki)
            .output()
            .expect("run mkpki.py");
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "mkpki.py must succeed silently: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let host_a = testbed.add_host("host-a");
        let host_b = testbed.add_host("host-b");
        let a_text = host_config(&testbed, &pki, "host-a.toml", "a", "node-host-a");
        let b_text = host_config(&testbed, &pki, "host-b.toml", "b", "node-host-b");
        let a_config = write(&testbed.dir().join("host-a.toml"), &a_text);
        let b_config = write(&testbed.dir().join("host-b.toml"), &b_text);
        testbed.cgroup("a/workloads/frontend");
        testbed.cgroup("b/workloads");
        let site = |host, label: &str, config| Site {
            host,
            label: label.into(),
            config,
            daemon: None,
        };
        Self {
            a: site(host_a, "a", a_config),
            b: site(host_b, "b", b_config),
            testbed,
            pki,
            _orders: None,
        }
    }

    /// B's daemon and `orders` (netprobe serve-tagged 8080) up.
    fn start_b(&mut self) {
        self.b.start(&self.testbed);
        let mut server = self
            .b
            .host
            .command("python3")
            .arg(NETPROBE)
            .args(["serve-tagged", "8080"])
            .spawn();
        server.wait_for("listening", SHORT);
        self.b.host.wait_for_listener(8080, SHORT);
        self._orders = Some(server);
    }

    /// A file of case `case` from mkpki.py.
    fn file(&self, case: &str, name: &str) -> PathBuf {
        self.pki.join(case).join(name)
    }

    /// `config` with `from`'s certificate and key files replaced by case `case`'s.
    fn config_with(&self, config: &Path, from: &str, case: &str) -> PathBuf {
        let text = fs::read_to_string(config).unwrap();
        let from = format!("{}/", self.pki.join(from).display());
        assert!(text.contains(&from), "{from} in {}", config.display());
        let text = text.replace(&from, &format!("{}/", self.pki.join(case).display()));
        let name = config.file_stem().unwrap().to_string_lossy();
        write(
            &self.testbed.dir().join(format!("{name}-{case}.toml")),
            &text,
        )
    }

    /// A's config with `frontend` presenting case `case`'s certificate.
    fn a_config(&self, case: &str) -> PathBuf {
        self.config_with(&self.a.config, "frontend", case)
    }

    /// `tunnel probe` on host A, as `frontend`, to `orders` through B's tunnel port.
    fn probe(&self, config: &Path) -> testbed::Output {
        let out = self
            .a
            .host
            .command(TUNNEL)
            .args(["probe", "--config"])
            .arg(config)
            .args([
                "--as",
                "frontend",
                "--via",
                "10.0.0.2:15008",
                "10.0.0.2:8080",
            ])
            .output(SHORT);
        println!(
            "$ tunnel probe ({})\n{}{}",
            config.display(),
            out.stdout,
            out.stderr
        );
        out
    }

    /// The good setup first: without it every refusal below could pass vacuously.
    fn assert_good_setup_works(&self) {
        let out = self.probe(&self.a.config);
        assert!(
            out.status.success()
                && out
                    .stdout
                    .contains("the peer is spiffe://example.org/node/host-b")
                && out.stdout.contains("CONNECT 10.0.0.2:8080: 200"),
            "the good frontend certificate must open a tunnel:\n{}{}\nB:\n{}",
            out.stdout,
            out.stderr,
            self.b.logs()
        );
        self.b
            .daemon()
            .wait_for_line(&["allowed", "caller=spiffe://example.org/frontend"], SHORT);
        assert_check_passes(&self.a.host, &self.a.config);
        assert_check_passes(&self.b.host, &self.b.config);
    }

    /// A caller fault: the probe fails and says what the peer answered, B logs the reason,
    /// `tunnel check` names the fault and the file.
    fn assert_refused(&self, fault: &CallerFault<'_>) {
        println!("==== {}", fault.case);
        let config = self.a_config(fault.case);
        let b_lines = self.b.logs().lines().count();
        let out = self.probe(&config);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: the probe must fail (exit 1):\n{}{}",
            fault.case,
            out.stdout,
            out.stderr
        );
        for words in ["failed: mTLS handshake with 10.0.0.2:15008 failed: "]
            .iter()
            .chain(fault.probe_says)
        {
            assert!(
                out.stdout.contains(words),
                "{}: expected {words:?} in the probe's output:\n{}",
                fault.case,
                out.stdout
            );
        }
        let mut needles = vec!["tunnel::auth", "peer=10.0.0.1:", "direction=\"inbound\""];
        needles.extend(fault.b_says);
        let line = self.wait_for_b_line(b_lines, &needles);
        println!("B: {}", line.trim());
        for words in fault.must_not_say {
            assert!(!line.contains(words), "{}: {words:?} in {line}", fault.case);
        }
        let check = format!("workload frontend: {}", fault.check);
        let cert = self.file(fault.case, "cert.pem");
        let message = assert_check_fails(&self.a.host, &config, &check, &cert, fault.check_says);
        for words in fault.must_not_say {
            assert!(
                !message.contains(words),
                "{}: {words:?} in {message}",
                fault.case
            );
        }
    }

    /// A line of B's log after its first `skip` lines with every one of `needles`.
    fn wait_for_b_line(&self, skip: usize, needles: &[&str]) -> String {
        let mut found = None;
        testbed::wait_until(
            SHORT,
            std::time::Duration::from_millis(10),
            || {
                found = self
                    .b
                    .logs()
                    .lines()
                    .skip(skip)
                    .find(|l| needles.iter().all(|n| l.contains(n)))
                    .map(str::to_string);
                found.is_some()
            },
            || format!("B logged no line with {needles:?}:\n{}", self.b.logs()),
        );
        found.expect("found")
    }

    /// B logs one line per refusal reason per second (and counts the rest): a refusal for
    /// the same reason as the last one is only logged once that second has passed.
    fn after_the_refusal_log_interval(&self) {
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
}

/// An example config with every certificate from mkpki.py (node `node`), and both CRLs: on A
/// as on B, since every host carries them (README), and `tunnel check` of A's config needs
/// them to see that A's certificate is revoked.
fn host_config(testbed: &Testbed, pki: &Path, example: &str, label: &str, node: &str) -> String {
    let text = render_example(example, testbed, label, pki);
    let pki = pki.display();
    let bundle = format!("trust_bundle = \"{pki}/bundle.pem\"");
    let crls = format!("crl = [\"{pki}/crl-intermediate.pem\", \"{pki}/crl-root.pem\"]");
    let text = text
        .replace(
            &format!("{pki}/ca/bundle.pem"),
            &format!("{pki}/bundle.pem"),
        )
        .replace(&format!("{pki}/node/"), &format!("{pki}/{node}/"));
    assert!(text.contains(&bundle), "{text}");
    text.replace(&bundle, &format!("{bundle}\n{crls}"))
}

/// A certificate fault of the caller (`frontend` on host A), and what each side says.
struct CallerFault<'a> {
    /// mkpki.py's directory of the faulty certificate.
    case: &'a str,
    /// In the probe's output: the peer's alert in words, and what the probe itself finds
    /// wrong with the certificate.
    probe_says: &'a [&'a str],
    /// In B's auth line (`tunnel::auth`).
    b_says: &'a [&'a str],
    /// Neither in B's line nor in the check's message.
    must_not_say: &'a [&'a str],
    /// The check of `tunnel check` on A's config that fails (`workload frontend: <check>`),
    /// naming the certificate file and these words.
    check: &'a str,
    check_says: &'a [&'a str],
}

/// What a caller hears of a refused date: the same alert for expired and not yet valid.
const EXPIRED_ALERT: &str = "alert certificate_expired (45): our certificate (or its chain) is \
                             expired or not yet valid for the peer (the alert is the same for \
                             both: check our certificate's dates, and both clocks)";
/// What a caller hears of a broken SPIFFE rule: B's log has the rule.
const IDENTITY_ALERT: &str = "alert certificate_unknown (46): the peer refused our certificate's \
                              identity (see the peer's log for the exact rule)";
const UNKNOWN_CA_ALERT: &str =
    "alert unknown_ca (48): the peer does not trust the CA that issued our certificate";
const REVOKED_ALERT: &str =
    "alert certificate_revoked (44): the peer considers our certificate revoked";

#[test]
fn certificates_outside_their_validity_are_refused() {
    let mut bed = Bed::new("cert-validity");
    bed.start_b();
    bed.assert_good_setup_works();
    // Clock skew first: its certificate becomes valid 2 minutes after mkpki.py ran.
    bed.assert_refused(&CallerFault {
        case: "clock-skew",
        probe_says: &[
            EXPIRED_ALERT,
            "warning: our certificate: the certificate is not valid for another",
        ],
        b_says: &[
            "reason=the certificate is not valid yet: not valid before",
            "after the check at",
            "clock skew suspected: the issuer's clock and this host's disagree; check NTP on both",
        ],
        must_not_say: &[],
        check: "validity",
        check_says: &["is not valid for another", "clock skew suspected"],
    });
    bed.assert_refused(&CallerFault {
        case: "not-yet-valid",
        probe_says: &[
            EXPIRED_ALERT,
            "warning: our certificate: the certificate is not valid for another",
        ],
        b_says: &[
            "reason=the certificate is not valid yet: not valid before",
            "after the check at",
            "check both clocks, or wait for its validity to start",
        ],
        must_not_say: &["clock skew"],
        check: "validity",
        check_says: &["is not valid for another"],
    });
    bed.assert_refused(&CallerFault {
        case: "expired",
        probe_says: &[
            EXPIRED_ALERT,
            "warning: our certificate: the certificate expired",
        ],
        b_says: &[
            "reason=the certificate has expired: not valid after",
            "before the check at",
            "renew it, or check this host's clock",
        ],
        must_not_say: &[],
        check: "validity",
        check_says: &["expired", "ago (not after"],
    });
}

#[test]
fn chains_that_do_not_lead_to_the_bundle_are_refused() {
    let mut bed = Bed::new("cert-chain");
    bed.start_b();
    bed.assert_good_setup_works();
    // B words both the same: webpki reports an unknown issuer whether the CA is foreign or
    // its intermediate was not sent. `tunnel check` tells them apart.
    let unknown_issuer =
        "reason=the certificate was not issued by a CA in the trust bundle (unknown issuer)";
    bed.assert_refused(&CallerFault {
        case: "other-ca",
        probe_says: &[UNKNOWN_CA_ALERT],
        b_says: &[unknown_issuer],
        must_not_say: &[],
        check: "chain",
        check_says: &["peers refuse it", "unknown issuer"],
    });
    bed.after_the_refusal_log_interval();
    bed.assert_refused(&CallerFault {
        case: "missing-intermediate",
        probe_says: &[UNKNOWN_CA_ALERT],
        b_says: &[unknown_issuer],
        must_not_say: &[],
        check: "chain",
        check_says: &[
            "missing intermediate: the leaf was issued by CN=tunnel test intermediate CA",
        ],
    });
}

#[test]
fn certificates_that_break_the_svid_rules_are_refused() {
    let mut bed = Bed::new("cert-svid");
    bed.start_b();
    bed.assert_good_setup_works();
    for fault in [
        CallerFault {
            case: "no-client-auth",
            probe_says: &[
                "alert unsupported_certificate (43): our certificate lacks the extended key \
                 usage the peer needs",
                "warning: our certificate: the certificate has no clientAuth extended key usage",
            ],
            b_says: &[
                "reason=the certificate is not valid for this use: clientAuth is required, \
                       it allows serverAuth",
            ],
            must_not_say: &[],
            check: "EKU",
            check_says: &["has no clientAuth extended key usage (it has: serverAuth)"],
        },
        CallerFault {
            case: "ca-leaf",
            probe_says: &[
                IDENTITY_ALERT,
                "warning: our certificate: the certificate is a CA certificate \
                 (basicConstraints cA=true)",
            ],
            b_says: &[
                "reason=the certificate is a CA certificate (basicConstraints cA=true), not \
                       a leaf",
            ],
            must_not_say: &[],
            check: "leaf",
            check_says: &["the certificate is a CA certificate (basicConstraints cA=true)"],
        },
        CallerFault {
            case: "no-uri-san",
            probe_says: &[
                IDENTITY_ALERT,
                "warning: our certificate: the certificate has no URI SAN",
            ],
            b_says: &["reason=not an X.509-SVID: the certificate has no URI SAN"],
            must_not_say: &[],
            check: "SPIFFE ID",
            check_says: &["the certificate has no URI SAN"],
        },
        CallerFault {
            case: "two-uri-sans",
            probe_says: &[
                IDENTITY_ALERT,
                "warning: our certificate: the certificate has 2 URI SANs",
            ],
            b_says: &["reason=not an X.509-SVID: the certificate has 2 URI SANs"],
            must_not_say: &[],
            check: "SPIFFE ID",
            check_says: &[
                "the certificate has 2 URI SANs (spiffe://example.org/frontend, \
                 spiffe://example.org/second)",
            ],
        },
        CallerFault {
            case: "foreign-domain",
            probe_says: &[
                IDENTITY_ALERT,
                "warning: our certificate: the certificate is for spiffe://other.org/frontend",
            ],
            b_says: &["reason=spiffe://other.org/frontend is outside the trust domain example.org"],
            must_not_say: &[],
            check: "SPIFFE ID",
            check_says: &["spiffe://other.org/frontend is outside the trust domain example.org"],
        },
    ] {
        bed.assert_refused(&fault);
    }
}

// B's refusal of a revoked chain says only "revoked": not the serial, nor whether the leaf
// or an intermediate is listed (a CRL cutting a live connection says both, see
// lifecycle.rs). `tunnel check` names the serial and which certificate it is.
#[test]
fn revoked_certificates_and_chains_are_refused() {
    let mut bed = Bed::new("cert-revoked");
    bed.start_b();
    bed.assert_good_setup_works();
    let revoked = "reason=the certificate has been revoked";
    let serial = |case| {
        let file = bed.file(case, "revoked-serial");
        fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
    };
    let leaf = format!("serial {} (the leaf) revoked at", serial("revoked-leaf"));
    bed.assert_refused(&CallerFault {
        case: "revoked-leaf",
        probe_says: &[REVOKED_ALERT],
        b_says: &[revoked],
        must_not_say: &[],
        check: "revocation",
        check_says: &[&leaf, "KeyCompromise"],
    });
    bed.after_the_refusal_log_interval();
    let intermediate = format!(
        "serial {} (an intermediate CA of its chain) revoked at",
        serial("revoked-intermediate")
    );
    bed.assert_refused(&CallerFault {
        case: "revoked-intermediate",
        probe_says: &[REVOKED_ALERT],
        b_says: &[revoked],
        must_not_say: &[],
        check: "revocation",
        check_says: &[&intermediate, "CaCompromise"],
    });
}

#[test]
fn a_daemon_does_not_start_with_a_key_of_another_certificate_or_a_node_without_server_auth() {
    let bed = Bed::new("cert-startup");

    // A's frontend with the key of another certificate: neither `tunnel run` nor `tunnel
    // probe` can present it.
    let a_config = bed.a_config("key-mismatch");
    let key = bed.file("key-mismatch", "key.pem").display().to_string();
    let cert = bed.file("key-mismatch", "cert.pem").display().to_string();
    let says = [
        "workload[0].cert: the key in ",
        &key,
        " does not belong to the certificate in ",
        &cert,
    ];
    let run = run_refused(&bed.testbed, &bed.a.host, "a", &a_config);
    assert_names(&run, &says);
    let probe = bed.probe(&a_config);
    assert_eq!(
        probe.status.code(),
        Some(64),
        "{}{}",
        probe.stdout,
        probe.stderr
    );
    assert_names(&probe.stderr, &says);
    assert_check_fails(
        &bed.a.host,
        &a_config,
        "workload frontend: key",
        Path::new(&key),
        &["does not belong to the certificate in ", &cert],
    );

    // B's node certificate without serverAuth: no caller would accept it.
    let b_config = bed.config_with(&bed.b.config, "node-host-b", "node-host-b-no-server-auth");
    let cert = bed.file("node-host-b-no-server-auth", "cert.pem");
    let says = "the certificate has no serverAuth extended key usage";
    let run = run_refused(&bed.testbed, &bed.b.host, "b", &b_config);
    assert_names(&run, &["node.cert: ", &cert.display().to_string(), says]);
    assert_check_fails(
        &bed.b.host,
        &b_config,
        "node: EKU",
        &cert,
        &["has no serverAuth extended key usage (it has: clientAuth)"],
    );
}

/// `tunnel run` with `config`, which must refuse to start (exit 64); its stderr.
fn run_refused(testbed: &Testbed, host: &Host, label: &str, config: &Path) -> String {
    let out = host
        .command(TUNNEL)
        .args(["run", "--config"])
        .arg(config)
        .in_cgroup(&testbed.cgroup(&format!("{label}/refused")))
        .output(SHORT);
    println!("$ tunnel run ({})\n{}", config.display(), out.stderr);
    assert_eq!(
        out.status.code(),
        Some(64),
        "tunnel run must refuse {}:\n{}{}",
        config.display(),
        out.stdout,
        out.stderr
    );
    out.stderr
}

/// One line of `text` has every one of `words`.
fn assert_names(text: &str, words: &[&str]) {
    assert!(
        text.lines().any(|l| words.iter().all(|w| l.contains(w))),
        "expected a line with {words:?} in:\n{text}"
    );
}

/// One check of `tunnel check --json`.
#[derive(Debug)]
struct Check {
    section: String,
    check: String,
    status: String,
    message: String,
    hint: String,
}

/// `tunnel check --config <config> --json` on `host`: its exit code and checks.
fn tunnel_check(host: &Host, config: &Path) -> (Option<i32>, Vec<Check>) {
    let out = host
        .command(TUNNEL)
        .args(["check", "--json", "--config"])
        .arg(config)
        .output(SHORT);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "tunnel check --json printed no JSON ({e}):\n{}{}",
            out.stdout, out.stderr
        )
    });
    let text = |value: &serde_json::Value, key: &str| {
        value[key]
            .as_str()
            .unwrap_or_else(|| panic!("no string {key:?} in {value}"))
            .to_string()
    };
    let checks: Vec<Check> = json["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no \"checks\" array in {json}"))
        .iter()
        .map(|c| Check {
            section: text(c, "section"),
            check: text(c, "check"),
            status: text(c, "status"),
            message: text(c, "message"),
            // null when there is nothing to do
            hint: c["hint"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    let count = |status: &str| checks.iter().filter(|c| c.status == status).count() as u64;
    for status in ["ok", "warn", "fail"] {
        assert_eq!(
            json[status].as_u64(),
            Some(count(status)),
            "the {status:?} count must match the checks: {json}"
        );
    }
    (out.status.code(), checks)
}

/// `tunnel check` finds nothing to fail in `config`.
fn assert_check_passes(host: &Host, config: &Path) {
    let (code, checks) = tunnel_check(host, config);
    print_not_ok(&checks);
    let failed: Vec<&Check> = checks.iter().filter(|c| c.status == "fail").collect();
    assert!(
        failed.is_empty() && code == Some(0),
        "tunnel check must pass {} (exit {code:?}): {failed:#?}",
        config.display()
    );
}

/// `tunnel check` fails `config` (exit 1), and its check `check` fails with a message that
/// names `file` and has every one of `words`; the message.
fn assert_check_fails(
    host: &Host,
    config: &Path,
    check: &str,
    file: &Path,
    words: &[&str],
) -> String {
    let (code, checks) = tunnel_check(host, config);
    print_not_ok(&checks);
    assert_eq!(code, Some(1), "tunnel check exits 1 on a failed check");
    let file = file.display().to_string();
    let found = checks
        .iter()
        .find(|c| c.check == check && c.status == "fail");
    let Some(found) = found else {
        panic!(
            "tunnel check of {}: no failed check {check:?}: {checks:#?}",
            config.display()
        );
    };
    for words in std::iter::once(file.as_str()).chain(words.iter().copied()) {
        assert!(
            found.message.contains(words),
            "tunnel check {check:?} must say {words:?}: {}",
            found.message
        );
    }
    found.message.clone()
}

fn print_not_ok(checks: &[Check]) {
    for c in checks.iter().filter(|c| c.status != "ok") {
        println!(
            "check: {} [{}] {}: {} (hint: {})",
            c.status, c.section, c.check, c.message, c.hint
        );
    }
}
