use std::{sync::Arc, time::Duration};

use rcgen::ExtendedKeyUsagePurpose;

use super::*;
use crate::{
    app::wiring,
    ca::LeafSpec,
    config::Config,
    test_support::{CONFIG, FRONTEND_ID, Fixture, Logs, NODE_ID, expired, good},
};

fn load(config: &Config) -> Result<Credentials, ConfigError> {
    Credentials::load(config, wiring::credentials_spec(config))
}

/// The refusals as `tunnel run` prints them.
fn refusals(fixture: &Fixture) -> String {
    let config = fixture.config();
    let credentials = load(&config).unwrap();
    ConfigError::new(&config.file, credentials.refusals(&config)).to_string()
}

fn line_of(needle: &str) -> usize {
    CONFIG.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn good_certificates_pass() {
    let fixture = Fixture::new();
    let config = fixture.config();
    let credentials = load(&config).unwrap();
    assert!(credentials.refusals(&config).is_empty());
    assert!(
        credentials
            .workload_problems("frontend", &FRONTEND_ID.parse().unwrap())
            .is_empty()
    );
}

#[test]
fn each_unusable_certificate_stops_startup_at_its_key() {
    let node_only_client = LeafSpec {
        extended_key_usages: vec![ExtendedKeyUsagePurpose::ClientAuth],
        ..good(NODE_ID)
    };
    let frontend_only_server = LeafSpec {
        extended_key_usages: vec![ExtendedKeyUsagePurpose::ServerAuth],
        ..good(FRONTEND_ID)
    };
    let mut not_yet_valid = good(NODE_ID);
    not_yet_valid.not_before += time::Duration::days(1);
    not_yet_valid.not_after += time::Duration::days(1);
    let cases = [
        ("node", expired(NODE_ID), "the certificate expired "),
        (
            "node",
            not_yet_valid,
            "the certificate is not valid for another",
        ),
        (
            "node",
            LeafSpec {
                is_ca: true,
                ..good(NODE_ID)
            },
            "the certificate is a CA certificate",
        ),
        (
            "node",
            node_only_client,
            "the certificate has no serverAuth extended key usage",
        ),
        (
            "node",
            good("spiffe://example.org/node/b"),
            "the certificate is for spiffe://example.org/node/b, but the node is \
             spiffe://example.org/node/a",
        ),
        (
            "frontend",
            LeafSpec {
                is_ca: true,
                ..good(FRONTEND_ID)
            },
            "the certificate is a CA certificate",
        ),
        (
            "frontend",
            good("spiffe://example.org/backend"),
            "the certificate is for spiffe://example.org/backend, but workload \"frontend\" is \
             spiffe://example.org/frontend",
        ),
        (
            "frontend",
            frontend_only_server,
            "the certificate has no clientAuth extended key usage",
        ),
    ];
    for (name, spec, expected) in cases {
        let fixture = Fixture::new();
        fixture.issue(name, &spec);
        let (key, line) = match name {
            "node" => ("node.cert", line_of("cert = \"node/cert.pem\"")),
            _ => ("workload[0].cert", line_of("cert = \"frontend/cert.pem\"")),
        };
        let prefix = format!(
            "{}:{line}: {key}: {}: {expected}",
            fixture.path("tunnel.toml").display(),
            fixture.path(&format!("{name}/cert.pem")).display()
        );
        let message = refusals(&fixture);
        assert!(
            message.starts_with(&prefix) && message.lines().count() == 1,
            "{name} with {spec:?}: expected {prefix:?}, got:\n{message}"
        );
    }
}

#[test]
fn an_expired_node_certificate_says_what_it_breaks() {
    let fixture = Fixture::new();
    fixture.issue("node", &expired(NODE_ID));
    let message = refusals(&fixture);
    assert!(
        message.ends_with("; peers refuse it, so no tunnel to this host can open"),
        "{message}"
    );
}

#[test]
fn an_expired_workload_certificate_is_only_warned_about() {
    let fixture = Fixture::new();
    fixture.issue("frontend", &expired(FRONTEND_ID));
    let config = fixture.config();
    let credentials = load(&config).unwrap();
    assert!(credentials.refusals(&config).is_empty());
    let problems = credentials.workload_problems("frontend", &FRONTEND_ID.parse().unwrap());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("the certificate expired "),
        "{problems:?}"
    );
}

#[test]
fn every_unreadable_file_is_named_at_once() {
    let fixture = Fixture::new();
    std::fs::remove_file(fixture.dir.path().join("node/key.pem")).unwrap();
    std::fs::write(fixture.dir.path().join("frontend/cert.pem"), "not PEM").unwrap();
    let config = fixture.config();
    let message = match load(&config) {
        Ok(_) => panic!("the material must not load"),
        Err(e) => e.to_string(),
    };
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines.len(), 2, "{message}");
    let file = fixture.path("tunnel.toml").display().to_string();
    assert!(
        lines[0].starts_with(&format!(
            "{file}:{}: node.key: cannot read a private key from {}",
            line_of("key = \"node/key.pem\""),
            fixture.path("node/key.pem").display()
        )),
        "{message}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{file}:{}: workload[0].cert: {} holds no PEM certificate",
            line_of("cert = \"frontend/cert.pem\""),
            fixture.path("frontend/cert.pem").display()
        )),
        "{message}"
    );
}

/// The serial of the frontend's certificate in force.
fn frontend_serial(credentials: &Credentials) -> String {
    credentials.current().workloads["frontend"]
        .leaf
        .serial
        .clone()
}

#[test]
fn a_reload_takes_a_good_certificate_and_keeps_the_one_in_force_over_a_broken_one() {
    let fixture = Fixture::new();
    let credentials = load(&fixture.config()).unwrap();
    let first = frontend_serial(&credentials);
    assert_eq!(credentials.reload("test"), 0, "nothing changed");

    let other_ca = Fixture::new();
    let expired_spec = expired(FRONTEND_ID);
    let mut other_identity = good("spiffe://example.org/batch");
    other_identity.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    type Write<'a> = Box<dyn Fn() + 'a>;
    let broken: [(&str, Write); 4] = [
        (
            "half-written",
            Box::new(|| {
                std::fs::write(
                    fixture.dir.path().join("frontend/cert.pem"),
                    "-----BEGIN CERT",
                )
                .unwrap()
            }),
        ),
        (
            "from another CA",
            Box::new(|| {
                other_ca.issue("frontend", &good(FRONTEND_ID));
                for file in ["cert.pem", "key.pem"] {
                    std::fs::copy(
                        other_ca.dir.path().join("frontend").join(file),
                        fixture.dir.path().join("frontend").join(file),
                    )
                    .unwrap();
                }
            }),
        ),
        (
            "expired",
            Box::new(|| fixture.issue("frontend", &expired_spec)),
        ),
        (
            "for another identity",
            Box::new(|| fixture.issue("frontend", &other_identity)),
        ),
    ];
    for (what, write) in broken {
        write();
        assert_eq!(
            credentials.reload("test"),
            0,
            "a certificate {what} is not taken"
        );
        assert_eq!(
            frontend_serial(&credentials),
            first,
            "{what}: the old one stays"
        );
    }
    let generation = credentials.current().generation();
    fixture.issue("frontend", &good(FRONTEND_ID));
    assert_eq!(credentials.reload("test"), 1);
    let second = frontend_serial(&credentials);
    assert_ne!(second, first, "the good new certificate is in force");
    assert_eq!(credentials.current().generation(), generation + 1);
    // The node's certificate, untouched, is the same one (not reloaded).
    assert_eq!(credentials.reload("test"), 0);
}

#[test]
fn a_key_written_after_its_certificate_is_taken_when_it_arrives() {
    let fixture = Fixture::new();
    let credentials = load(&fixture.config()).unwrap();
    let first = frontend_serial(&credentials);
    // Same CA: issue into a side directory, then copy the certificate first, the key later,
    // as a tool that writes two files one after the other does.
    fixture.issue("staging", &good(FRONTEND_ID));
    let (from, to) = (
        fixture.dir.path().join("staging"),
        fixture.dir.path().join("frontend"),
    );
    std::fs::copy(from.join("cert.pem"), to.join("cert.pem")).unwrap();
    assert_eq!(credentials.reload("test"), 0, "the key does not match yet");
    assert_eq!(frontend_serial(&credentials), first);
    std::fs::copy(from.join("key.pem"), to.join("key.pem")).unwrap();
    assert_eq!(credentials.reload("test"), 1, "the pair is complete");
    assert_ne!(frontend_serial(&credentials), first);
}

#[tokio::test(start_paused = true)]
async fn an_issued_certificate_is_renewed_at_about_half_its_lifetime() {
    let fixture = Fixture::new();
    let text = CONFIG.replace(
        "cert = \"frontend/cert.pem\"\nkey = \"frontend/key.pem\"",
        "issuer = \"ca\"\nttl = \"40s\"",
    );
    let config = Config::parse(&text, &fixture.dir.path().join("tunnel.toml")).unwrap();
    let credentials = Arc::new(load(&config).unwrap());
    let first = credentials.current().workloads["frontend"].clone();
    assert!(credentials.refusals(&config).is_empty());
    let lifetime = first.leaf.not_after - first.leaf.not_before;
    assert!(
        (49..=51).contains(&lifetime),
        "40 s, backdated 10 s: {lifetime}"
    );
    let renewals = tokio::spawn(credentials.clone().renew_forever());
    // Renewal comes between 16 s and 24 s (40 % to 60 % of 40 s).
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(frontend_serial(&credentials), first.leaf.serial, "not yet");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let second = frontend_serial(&credentials);
    assert_ne!(second, first.leaf.serial, "renewed by 25 s");
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_ne!(frontend_serial(&credentials), second, "and again");
    renewals.abort();
}

#[test]
fn the_node_may_issue_its_own_certificate_too() {
    let text = CONFIG.replace(
        "cert = \"node/cert.pem\"\nkey = \"node/key.pem\"",
        "issuer = \"ca\"\nttl = \"1h\"",
    );
    let fixture = Fixture::with_config(&text);
    let config = fixture.config();
    let credentials = load(&config).unwrap();
    assert!(
        credentials.refusals(&config).is_empty(),
        "{:?}",
        credentials.refusals(&config)
    );
    let node = credentials.current().node.clone();
    assert_eq!(node.leaf.uris, vec![NODE_ID.to_string()]);
    assert_eq!(
        node.leaf.not_after - node.leaf.not_before,
        3600 + 300,
        "1 h, backdated 5 min"
    );
}

#[tokio::test]
async fn the_expiry_watch_warns_once_past_two_thirds_and_says_when_it_has_expired() {
    let logs = Logs::capture();
    let fixture = Fixture::new();
    // Three seconds of life, two of them gone: past 2/3 now, expired a second from now.
    let now = time::OffsetDateTime::now_utc();
    let mut spec = good(FRONTEND_ID);
    spec.not_before = now - time::Duration::seconds(2);
    spec.not_after = now + time::Duration::seconds(1);
    fixture.issue("frontend", &spec);
    let credentials = Arc::new(load(&fixture.config()).unwrap());
    let watch = tokio::spawn(credentials.clone().watch_expiry());
    let warned = logs
        .wait_for("past 2/3 of its lifetime", Duration::from_secs(2))
        .await;
    assert!(warned.contains("owner=workload \"frontend\""), "{warned}");
    let expired = logs
        .wait_for("certificate has expired", Duration::from_secs(4))
        .await;
    println!("{warned}\n{expired}");
    assert!(expired.contains("ERROR"), "{expired}");
    assert_eq!(
        logs.lines_with("past 2/3").len(),
        1,
        "said once:\n{}",
        logs.text()
    );
    assert!(
        logs.lines_with("past 2/3")
            .iter()
            .all(|l| !l.contains("node"))
    );
    watch.abort();
}

/// Pods' certificates come and go at run time: each ADD and DEL publishes a whole new
/// snapshot (client configs of every workload and pod), so its cost grows with the pods on
/// the node. Prints the time of an add at 1 and at 100 pods; checks what is in force.
#[test]
fn pods_certificates_are_added_and_removed_whole() {
    let fixture = Fixture::new();
    let config = fixture.config();
    let credentials = load(&config).unwrap();
    let issuer = CertSource::Issuer {
        dir: crate::config::Located {
            value: fixture.path("ca"),
            site: config.node.credential.site().clone(),
        },
        ttl: Duration::from_secs(3600),
    };
    let id = |i: usize| -> SpiffeId {
        format!("spiffe://example.org/ns/shop/sa/pod-{i}")
            .parse()
            .unwrap()
    };
    let mut times = Vec::new();
    for i in 0..100 {
        let started = std::time::Instant::now();
        credentials
            .add(&format!("shop/pod-{i}"), &id(i), issuer.clone())
            .unwrap();
        times.push(started.elapsed());
    }
    println!(
        "adding a pod's certificate: {:?} with 1 pod, {:?} with 100 (each add issues one and rebuilds every client config)",
        times[0], times[99]
    );
    let snapshot = credentials.current();
    assert_eq!(snapshot.workloads.len(), 101, "frontend and 100 pods");
    let pod = &snapshot.workloads["shop/pod-42"];
    // A pod serves its HBONE listener with it too.
    assert!(pod.problems(&id(42), Purpose::ServerAuth).is_empty());
    assert!(pod.problems(&id(42), Purpose::ClientAuth).is_empty());
    assert!(snapshot.client("shop/pod-42", None).is_some());
    for i in 0..100 {
        assert!(credentials.remove(&format!("shop/pod-{i}")));
    }
    assert!(!credentials.remove("shop/pod-0"), "removing twice");
    assert_eq!(credentials.current().workloads.len(), 1);
    assert_eq!(
        credentials.expiries().len(),
        2,
        "the node and frontend are left"
    );
}

#[test]
fn a_pods_certificate_that_cannot_serve_is_refused() {
    let fixture = Fixture::new();
    let config = fixture.config();
    let credentials = load(&config).unwrap();
    let id = "spiffe://example.org/ns/shop/sa/client-only";
    fixture.issue(
        "client-only",
        &LeafSpec {
            extended_key_usages: vec![ExtendedKeyUsagePurpose::ClientAuth],
            ..good(id)
        },
    );
    let file = |name: &str| crate::config::Located {
        value: fixture.path("client-only").join(name),
        site: config.node.credential.site().clone(),
    };
    let files = CertSource::Files {
        cert: file("cert.pem"),
        key: file("key.pem"),
    };
    let e = credentials
        .add("shop/client-only", &id.parse().unwrap(), files)
        .unwrap_err();
    assert!(matches!(e, CredentialsError::PeersRefuse(_)), "{e:?}");
    let e = errors::chain(&e);
    assert!(e.contains("serverAuth"), "{e}");
    assert!(
        !credentials
            .current()
            .workloads
            .contains_key("shop/client-only")
    );
}

/// An issuer that is not there: the step, then the CA's own error, each said once.
#[test]
fn an_issuer_that_cannot_be_read_is_named_once_with_its_cause() {
    let fixture = Fixture::new();
    let dir = fixture.path("no-ca");
    let td = "example.org".parse().unwrap();
    let e = match issued::IssuerState::load(&dir, Duration::from_secs(3600), &td) {
        Ok(_) => panic!("an issuer without files must not load"),
        Err(e) => e,
    };
    assert!(matches!(e, CredentialsError::LoadIssuer { .. }), "{e:?}");
    let cert = dir.join("intermediate.pem");
    let cause = std::fs::read_to_string(&cert).unwrap_err();
    assert_eq!(
        errors::chain(&e),
        format!(
            "cannot use the issuer {}: cannot read the CA file {}: {cause}",
            dir.display(),
            cert.display()
        )
    );
}

#[test]
fn each_link_of_a_credentials_error_is_printed_once() {
    use std::io;
    let dir = std::path::PathBuf::from("/ca");
    let issue = CredentialsError::Issue {
        dir: dir.clone(),
        source: CaError::Write {
            path: "/ca/x".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        },
    };
    assert_eq!(
        errors::chain(&issue),
        "cannot issue from /ca: failed to write /ca/x: entity not found"
    );
    let load = CredentialsError::LoadIssuer {
        dir,
        source: CaError::ZeroTtl,
    };
    assert_eq!(
        errors::chain(&load),
        "cannot use the issuer /ca: a TTL of zero issues a certificate that is never valid"
    );
    let unusable = CredentialsError::Unusable {
        source: rustls::Error::General("no signing key".into()),
    };
    assert_eq!(
        errors::chain(&unusable),
        format!(
            "the issued certificate is unusable: {}",
            rustls::Error::General("no signing key".into())
        )
    );
    assert_eq!(
        errors::chain(&unusable).matches("no signing key").count(),
        1
    );
    // Transparent: the file's error alone, as `MaterialError` says it.
    let files = CredentialsError::from(MaterialError::NoCertificates {
        path: "/x/cert.pem".into(),
    });
    assert_eq!(
        errors::chain(&files),
        "/x/cert.pem holds no PEM certificate"
    );
    // `tunnel check` gets the same text.
    assert_eq!(
        errors::chain(&issue),
        "cannot issue from /ca: failed to write /ca/x: entity not found"
    );
}

/// A cluster's existing CA (Istio's `cacerts`, a cert-manager issuer) has no SPIFFE URI SAN:
/// the trust domain comes from the config, and the certificates it issues are judged and
/// used like any others. Here a root made with no SAN at all signs directly.
#[test]
fn a_ca_without_any_san_issues_for_the_configured_trust_domain() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let fixture = Fixture::new();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "cluster root (no SAN)");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let root = params.self_signed(&key).unwrap();
    assert!(params.subject_alt_names.is_empty());
    let dir = fixture.path("cluster-ca");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("intermediate.pem"), root.pem()).unwrap();
    std::fs::write(dir.join("intermediate.key"), key.serialize_pem()).unwrap();
    std::fs::write(fixture.path("cluster-bundle.pem"), root.pem()).unwrap();

    let text = CONFIG
        .replace("ca/bundle.pem", "cluster-bundle.pem")
        .replace(
            "cert = \"node/cert.pem\"\nkey = \"node/key.pem\"",
            "issuer = \"cluster-ca\"",
        )
        .replace(
            "cert = \"frontend/cert.pem\"\nkey = \"frontend/key.pem\"",
            "issuer = \"cluster-ca\"",
        );
    let config = Config::parse(&text, &fixture.dir.path().join("tunnel.toml")).unwrap();
    let credentials = load(&config).expect("a CA without SAN issues for example.org");
    assert!(
        credentials.refusals(&config).is_empty(),
        "{:?}",
        credentials.refusals(&config)
    );
    let frontend = &credentials.current().workloads["frontend"];
    println!(
        "issued by a root without SAN: {} (serial {})",
        frontend.leaf.uris.join(", "),
        frontend.leaf.serial
    );
    assert_eq!(frontend.leaf.uris, vec![FRONTEND_ID.to_string()]);

    // Without a trust domain to go by, such a CA is refused, saying why.
    let error = match crate::ca::Ca::load(&dir) {
        Ok(_) => panic!("a CA without SAN has no trust domain of its own"),
        Err(e) => errors::chain(&e),
    };
    assert!(
        error.contains("no spiffe://<trust domain> URI SAN"),
        "{error}"
    );
}
