//! Revocation decided here as webpki decides it: each scenario is judged twice, by webpki
//! with its own CRL check (owned lists, the options the daemon used to give it) and by the
//! daemon's chain check with the compact lists, and the verdicts must be the same error, or
//! both none. Then what the compact form costs, and when a list's signed bytes go.

use std::{sync::Arc, time::Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    CrlIssuingDistributionPoint, CrlScope, DnType, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevocationReason, RevokedCertParams, SerialNumber,
};
use rustls::{
    RootCertStore,
    pki_types::{CertificateDer, UnixTime},
};
use time::{Duration, OffsetDateTime};
use webpki::{
    CertRevocationList, ExpirationPolicy, OwnedCertRevocationList, RevocationCheckDepth,
    RevocationOptionsBuilder, UnknownStatusPolicy,
};

use super::{Crl, Crls};
use crate::tls::{Trust, chain, provider};

/// A CA: its certificate, and what signs with its key under its name.
struct Ca {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    serial: u8,
}

/// A CA named `name`, self-signed or signed by `parent`, with serial `serial`.
fn ca(name: &str, parent: Option<&Ca>, serial: u8, key_usages: &[KeyUsagePurpose]) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = key_usages.to_vec();
    params.serial_number = Some(SerialNumber::from(vec![0x10, serial]));
    let cert = match parent {
        None => params.self_signed(&key).unwrap(),
        Some(parent) => params.signed_by(&key, &parent.issuer).unwrap(),
    };
    // The CRL signer: rcgen refuses to sign a CRL as an issuer without cRLSign, which is
    // exactly the CA some scenarios need.
    params.key_usages.clear();
    Ca {
        cert: cert.der().clone(),
        issuer: Issuer::new(params, key),
        serial,
    }
}

fn signing() -> Vec<KeyUsagePurpose> {
    vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign]
}

/// A leaf of `issuer`, serial `serial`, naming CRL distribution points `points`.
fn leaf(issuer: &Ca, serial: u8, points: &[&str]) -> CertificateDer<'static> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "leaf");
    params.serial_number = Some(SerialNumber::from(vec![0x20, serial]));
    if !points.is_empty() {
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: points.iter().map(|p| p.to_string()).collect(),
        }];
    }
    params
        .signed_by(&key, &issuer.issuer)
        .unwrap()
        .der()
        .clone()
}

/// What a CRL is made of, beyond its issuer.
#[derive(Default)]
struct List<'a> {
    /// Serials listed (a CA's `[0x10, n]`, a leaf's `[0x20, n]`).
    serials: Vec<Vec<u8>>,
    scope: Option<(&'a [&'a str], Option<CrlScope>)>,
    stale: bool,
}

fn crl(issuer: &Ca, list: List<'_>) -> Vec<u8> {
    let now = OffsetDateTime::now_utc();
    let (this_update, next_update) = match list.stale {
        true => (now - Duration::days(10), now - Duration::days(3)),
        false => (now - Duration::hours(1), now + Duration::days(7)),
    };
    CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from(vec![1]),
        issuing_distribution_point: list.scope.map(|(uris, scope)| CrlIssuingDistributionPoint {
            distribution_point: CrlDistributionPoint {
                uris: uris.iter().map(|u| u.to_string()).collect(),
            },
            scope,
        }),
        revoked_certs: list
            .serials
            .into_iter()
            .map(|serial| RevokedCertParams {
                serial_number: SerialNumber::from(serial),
                revocation_time: this_update,
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer.issuer)
    .unwrap()
    .der()
    .to_vec()
}

fn ca_serial(ca: &Ca) -> Vec<u8> {
    vec![0x10, ca.serial]
}

fn leaf_serial(n: u8) -> Vec<u8> {
    vec![0x20, n]
}

/// The trust a daemon builds from these roots and lists.
fn trust(roots: &[&Ca], lists: &[Vec<u8>]) -> Trust {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.cert.clone()).unwrap();
    }
    let crls = lists
        .iter()
        .map(|der| {
            let crl = Crl::from_der(der.clone()).unwrap();
            crl.verify_with(&store.roots);
            crl
        })
        .collect();
    Trust {
        roots: Arc::new(store),
        crls: Arc::new(Crls::new(crls, 0)),
    }
}

/// webpki's verdict with its own revocation check, as the daemon's verifiers configured it.
fn webpki_verdict(
    roots: &[&Ca],
    chain: &[CertificateDer<'static>],
    lists: &[Vec<u8>],
) -> Result<(), webpki::Error> {
    let anchors: Vec<_> = roots
        .iter()
        .map(|root| webpki::anchor_from_trusted_cert(&root.cert).unwrap())
        .collect();
    let owned: Vec<CertRevocationList<'_>> = lists
        .iter()
        .map(|der| OwnedCertRevocationList::from_der(der).unwrap().into())
        .collect();
    let refs: Vec<&CertRevocationList<'_>> = owned.iter().collect();
    let revocation = RevocationOptionsBuilder::new(&refs).ok().map(|builder| {
        builder
            .with_depth(RevocationCheckDepth::Chain)
            .with_status_policy(UnknownStatusPolicy::Allow)
            .with_expiration_policy(ExpirationPolicy::Ignore)
            .build()
    });
    webpki::EndEntityCert::try_from(&chain[0])?
        .verify_for_usage(
            provider().signature_verification_algorithms.all,
            &anchors,
            &chain[1..],
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            revocation,
            None,
        )
        .map(|_| ())
}

/// Both verdicts, which must agree; returns the daemon's.
fn judged(
    scenario: &str,
    roots: &[&Ca],
    chain: &[CertificateDer<'static>],
    lists: &[Vec<u8>],
) -> Result<(), webpki::Error> {
    let expected = webpki_verdict(roots, chain, lists);
    let trust = trust(roots, lists);
    let actual = chain::verify(
        &trust,
        &chain[0],
        &chain[1..],
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
    );
    assert_eq!(actual, expected, "{scenario}");
    // And again: a signature checked once is remembered, the verdict is the same.
    let again = chain::verify(
        &trust,
        &chain[0],
        &chain[1..],
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
    );
    assert_eq!(again, expected, "{scenario}, judged a second time");
    actual
}

#[test]
fn every_certificate_of_the_chain_is_judged_as_webpki_judges_it() {
    use webpki::Error::{CertRevoked, InvalidCrlSignatureForPublicKey, IssuerNotCrlSigner};
    let root = ca("Root", None, 1, &signing());
    let intermediate = ca("Intermediate", Some(&root), 2, &signing());
    let leaf = leaf(&intermediate, 1, &[]);
    let chain = [leaf, intermediate.cert.clone()];
    let listing = |issuer: &Ca, serials: Vec<Vec<u8>>| {
        crl(
            issuer,
            List {
                serials,
                ..List::default()
            },
        )
    };
    // A scenario, its lists, and the verdict webpki gives (checked, then held to).
    type Case = (&'static str, Vec<Vec<u8>>, Result<(), webpki::Error>);
    let cases: Vec<Case> = vec![
        ("no CRL", vec![], Ok(())),
        (
            "the intermediate's CRL lists the leaf",
            vec![listing(&intermediate, vec![leaf_serial(9), leaf_serial(1)])],
            Err(CertRevoked),
        ),
        (
            "the intermediate's CRL lists others",
            vec![listing(
                &intermediate,
                vec![leaf_serial(2), ca_serial(&intermediate)],
            )],
            Ok(()),
        ),
        (
            "the root's CRL lists the intermediate",
            vec![listing(&root, vec![ca_serial(&intermediate)])],
            Err(CertRevoked),
        ),
        (
            "the root's CRL lists a leaf's serial: not the root's leaf",
            vec![listing(&root, vec![leaf_serial(1)])],
            Ok(()),
        ),
        (
            "both CRLs, only the intermediate's lists",
            vec![
                listing(&root, vec![]),
                listing(&intermediate, vec![leaf_serial(1)]),
            ],
            Err(CertRevoked),
        ),
        (
            "the first list of an issuer judges, the second is not read",
            vec![
                listing(&intermediate, vec![]),
                listing(&intermediate, vec![leaf_serial(1)]),
            ],
            Ok(()),
        ),
        (
            "a stale CRL still revokes",
            vec![crl(
                &intermediate,
                List {
                    serials: vec![leaf_serial(1)],
                    stale: true,
                    ..List::default()
                },
            )],
            Err(CertRevoked),
        ),
        (
            "a CRL in the intermediate's name signed by another key",
            vec![listing(
                &ca("Intermediate", Some(&root), 3, &signing()),
                vec![],
            )],
            Err(InvalidCrlSignatureForPublicKey),
        ),
        (
            "a CRL in the root's name signed by another key",
            vec![listing(&ca("Root", None, 4, &signing()), vec![])],
            Err(InvalidCrlSignatureForPublicKey),
        ),
    ];
    for (scenario, lists, verdict) in cases {
        assert_eq!(
            judged(scenario, &[&root], &chain, &lists),
            verdict,
            "{scenario}"
        );
    }

    // An intermediate whose key usage leaves out cRLSign may not sign a CRL.
    let no_crl_sign = ca(
        "Intermediate",
        Some(&root),
        5,
        &[KeyUsagePurpose::KeyCertSign],
    );
    let chain = [self::leaf(&no_crl_sign, 1, &[]), no_crl_sign.cert.clone()];
    let lists = [listing(&no_crl_sign, vec![])];
    assert_eq!(
        judged("an issuer without cRLSign", &[&root], &chain, &lists),
        Err(IssuerNotCrlSigner)
    );
}

#[test]
fn an_issuing_distribution_point_limits_what_a_crl_speaks_for_as_in_webpki() {
    use webpki::Error::CertRevoked;
    const HERE: &str = "http://crl.example.org/intermediate.crl";
    const ELSEWHERE: &str = "http://crl.example.org/other.crl";
    let root = ca("Root", None, 1, &signing());
    let intermediate = ca("Intermediate", Some(&root), 2, &signing());
    let leaves = [
        (
            "a leaf naming no distribution point",
            leaf(&intermediate, 1, &[]),
        ),
        (
            "a leaf naming the CRL's",
            leaf(&intermediate, 1, &[ELSEWHERE, HERE]),
        ),
        (
            "a leaf naming another",
            leaf(&intermediate, 1, &[ELSEWHERE]),
        ),
    ];
    let scoped = |issuer: &Ca, serial: Vec<u8>, scope: Option<CrlScope>| {
        crl(
            issuer,
            List {
                serials: vec![serial],
                scope: Some((&[HERE], scope)),
                ..List::default()
            },
        )
    };
    for (leaf_case, leaf) in &leaves {
        let chain = [leaf.clone(), intermediate.cert.clone()];
        for (list_case, list) in [
            ("all", scoped(&intermediate, leaf_serial(1), None)),
            (
                "user certificates only",
                scoped(&intermediate, leaf_serial(1), Some(CrlScope::UserCertsOnly)),
            ),
            (
                "CA certificates only",
                scoped(&intermediate, leaf_serial(1), Some(CrlScope::CaCertsOnly)),
            ),
        ] {
            let scenario = format!("{leaf_case}, the intermediate's CRL for {list_case}");
            let _ = judged(&scenario, &[&root], &chain, &[list]);
        }
    }
    // The root's list of CA certificates reaches the intermediate (which names no point).
    let chain = [leaves[0].1.clone(), intermediate.cert.clone()];
    let list = scoped(&root, ca_serial(&intermediate), Some(CrlScope::CaCertsOnly));
    assert_eq!(
        judged("the root's CRL of CAs", &[&root], &chain, &[list]),
        Err(CertRevoked)
    );
    // And the scenarios above did cover both outcomes.
    let revoked = scoped(&intermediate, leaf_serial(1), None);
    let chain = [leaves[1].1.clone(), intermediate.cert.clone()];
    assert_eq!(
        judged("covered", &[&root], &chain, std::slice::from_ref(&revoked)),
        Err(CertRevoked)
    );
    let chain = [leaves[2].1.clone(), intermediate.cert.clone()];
    assert_eq!(judged("not covered", &[&root], &chain, &[revoked]), Ok(()));
}

#[test]
fn a_revoked_path_gives_way_to_another_as_in_webpki() {
    // One intermediate key and name, certified by two roots; the first root revokes its
    // certificate of it. webpki tries the path through the second root, and so must we.
    let (first, second) = (
        ca("Root one", None, 1, &signing()),
        ca("Root two", None, 2, &signing()),
    );
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "Intermediate");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = signing();
    let mut certify = |root: &Ca, serial: u8| {
        params.serial_number = Some(SerialNumber::from(vec![0x10, serial]));
        params.signed_by(&key, &root.issuer).unwrap().der().clone()
    };
    let (by_first, by_second) = (certify(&first, 3), certify(&second, 4));
    let intermediate = Ca {
        cert: by_first.clone(),
        issuer: Issuer::new(params, key),
        serial: 3,
    };
    let chain = [leaf(&intermediate, 1, &[]), by_first, by_second];
    let lists = [crl(
        &first,
        List {
            serials: vec![ca_serial(&intermediate)],
            ..List::default()
        },
    )];
    assert_eq!(
        judged("cross-certified", &[&first, &second], &chain, &lists),
        Ok(())
    );
    // With the second root gone, the only path is revoked.
    assert_eq!(
        judged("one root", &[&first], &chain, &lists),
        Err(webpki::Error::CertRevoked)
    );
}

#[test]
fn a_list_of_an_intermediate_keeps_its_bytes_until_a_chain_brings_the_intermediate() {
    let root = ca("Root", None, 1, &signing());
    let intermediate = ca("Intermediate", Some(&root), 2, &signing());
    let serials: Vec<Vec<u8>> = (0..5000u32)
        .map(|n| [&[0x30][..], &n.to_be_bytes()].concat())
        .collect();
    let of_root = crl(
        &root,
        List {
            serials: serials.clone(),
            ..List::default()
        },
    );
    let of_intermediate = crl(
        &intermediate,
        List {
            serials,
            ..List::default()
        },
    );
    let trust = trust(&[&root], &[of_root.clone(), of_intermediate.clone()]);
    let [by_root, by_intermediate] = [0, 1].map(|i| trust.crls.iter().nth(i).unwrap());
    // The root's was verified at load: its signed bytes are gone.
    assert!(by_root.is_verified());
    assert!(by_root.heap_bytes() < of_root.len() / 2, "{by_root:?}");
    assert!(!by_intermediate.is_verified());
    assert!(by_intermediate.heap_bytes() > of_intermediate.len());

    // A chain through the intermediate verifies its list, once; then the bytes go.
    let chain = [leaf(&intermediate, 1, &[]), intermediate.cert.clone()];
    chain::verify(
        &trust,
        &chain[0],
        &chain[1..],
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
    )
    .unwrap();
    assert!(by_intermediate.is_verified());
    assert!(by_intermediate.heap_bytes() < of_intermediate.len() / 2);

    // Another CA of the same name, with another key, is not its signer.
    let impostor = ca("Intermediate", Some(&root), 3, &signing());
    let chain = [leaf(&impostor, 1, &[]), impostor.cert.clone()];
    assert_eq!(
        chain::verify(
            &trust,
            &chain[0],
            &chain[1..],
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
        ),
        Err(webpki::Error::InvalidCrlSignatureForPublicKey)
    );
}

#[test]
fn entries_say_what_webpki_says_of_each_serial() {
    let root = ca("Root", None, 1, &signing());
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let reasons = [
        None,
        Some(RevocationReason::KeyCompromise),
        Some(RevocationReason::Superseded),
        Some(RevocationReason::CaCompromise),
    ];
    // Serials of every length from 1 to 20 bytes, some listed twice (the later entry
    // counts), in no order.
    let mut revoked: Vec<RevokedCertParams> = (0..2000u32)
        .map(|n| {
            let length = 1 + (n as usize * 7) % 20;
            // Positive, without a leading zero: the bytes are the DER INTEGER's.
            let mut serial = vec![0x11; length];
            serial[length - 1] = match length {
                1 => (n % 127) as u8 + 1,
                _ => (n % 251) as u8,
            };
            if length > 1 {
                serial[length - 2] = (n / 251) as u8 | 0x01;
            }
            RevokedCertParams {
                serial_number: SerialNumber::from(serial),
                revocation_time: now - Duration::seconds(i64::from(n)),
                reason_code: reasons[n as usize % 4],
                invalidity_date: None,
            }
        })
        .collect();
    let twice: Vec<_> = revoked[..50]
        .iter()
        .map(|entry| RevokedCertParams {
            reason_code: Some(RevocationReason::AffiliationChanged),
            ..entry.clone()
        })
        .collect();
    revoked.extend(twice);
    let der = CertificateRevocationListParams {
        this_update: now,
        next_update: now + Duration::days(1),
        crl_number: SerialNumber::from(vec![7]),
        issuing_distribution_point: None,
        revoked_certs: revoked.clone(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&root.issuer)
    .unwrap()
    .der()
    .to_vec();
    let theirs = CertRevocationList::from(OwnedCertRevocationList::from_der(&der).unwrap());
    let ours = Crls::new(vec![Crl::from_der(der).unwrap()], 0);
    let issuer = theirs.issuer().to_vec();
    let summary = ours.iter().next().unwrap().summary().clone();
    assert_eq!(summary.entries, 2050);
    assert_eq!(summary.this_update, now.unix_timestamp());
    assert_eq!(
        summary.next_update,
        Some((now + Duration::days(1)).unix_timestamp())
    );
    assert_eq!(summary.issuer, "CN=Root");
    for entry in &revoked {
        let serial = entry.serial_number.as_ref();
        let expected = theirs.find_serial(serial).unwrap().unwrap();
        let found = ours.find(&issuer, serial).expect("listed");
        assert_eq!(found.revoked_at, expected.revocation_date.as_secs());
        assert_eq!(found.reason, expected.reason_code, "{serial:?}");
    }
    // Not listed (webpki agrees): longer than any, and neighbours of listed ones.
    for serial in [
        &[0x11; 21][..],
        &[0x7f, 0x7f],
        &[0x12, 0x01, 0x01],
        &[0x11, 0x11, 0x00, 0x00],
    ] {
        assert!(theirs.find_serial(serial).unwrap().is_none(), "{serial:?}");
        assert_eq!(ours.find(&issuer, serial), None, "{serial:?}");
    }
    // Listed, but by a CRL of another issuer.
    let listed = revoked[7].serial_number.as_ref();
    assert!(ours.find(b"\x31\x00", listed).is_none());
}

#[test]
fn two_hundred_thousand_entries_cost_their_serials_and_a_lookup_stays_cheap() {
    const ENTRIES: usize = 200_000;
    let root = ca("Root", None, 1, &signing());
    let now = OffsetDateTime::now_utc();
    let serials: Vec<Vec<u8>> = (0..ENTRIES)
        .map(|_| {
            let mut serial = vec![0; 16];
            fastrand::fill(&mut serial);
            serial[0] = serial[0] & 0x7f | 0x01;
            serial
        })
        .collect();
    let der = CertificateRevocationListParams {
        this_update: now,
        next_update: now + Duration::days(1),
        crl_number: SerialNumber::from(vec![7]),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|serial| RevokedCertParams {
                serial_number: SerialNumber::from(serial.clone()),
                revocation_time: now,
                reason_code: Some(RevocationReason::Superseded),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&root.issuer)
    .unwrap()
    .der()
    .to_vec();
    let der_bytes = der.len();
    let trust = trust(&[&root], &[der]);
    let crl = trust.crls.iter().next().unwrap();
    assert!(crl.is_verified());
    // 16 bytes of serial, 4 for where it ends, 8 for the date, 1 for the reason.
    let serial_bytes = 16 * ENTRIES;
    println!(
        "{ENTRIES} entries: {der_bytes} bytes of DER, {} held ({serial_bytes} of serials)",
        crl.heap_bytes()
    );
    assert!(
        crl.heap_bytes() <= serial_bytes + 14 * ENTRIES,
        "{}",
        crl.heap_bytes()
    );

    let issuer = webpki::anchor_from_trusted_cert(&root.cert)
        .unwrap()
        .subject
        .to_vec();
    let started = Instant::now();
    for serial in serials.iter().step_by(20) {
        assert!(trust.crls.find(&issuer, serial).is_some());
    }
    for serial in serials.iter().step_by(20) {
        let mut other = serial.clone();
        other[15] ^= 0x5a;
        assert!(trust.crls.find(&issuer, &other).is_none());
    }
    let lookups = 2 * ENTRIES / 20;
    let each = started.elapsed() / lookups as u32;
    println!("{lookups} lookups, {each:?} each");
    // A binary search is some 18 comparisons; a scan of the list would be ~10,000 times
    // that. Generous for an unoptimised build on a busy machine.
    assert!(each.as_micros() < 50, "{each:?} per lookup");
}
