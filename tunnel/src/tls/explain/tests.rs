use std::{sync::Arc, time::Duration};

use rcgen::ExtendedKeyUsagePurpose;
use rustls::{
    AlertDescription, CertRevocationListError, CertificateError, ContentType, ExtendedKeyPurpose,
    HandshakeType, OtherError, PeerMisbehaved,
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::danger::ClientCertVerifier as _,
};

use super::*;
use crate::{
    ca::LeafSpec,
    identity::{SpiffeId, SvidError, TrustDomain, timestamp},
    tls::{
        test_pki::{Pki, td},
        verify::{SpiffeClientVerifier, VerifyError},
    },
};

/// Fragments of Debug output: none may reach a log line.
const DEBUG_LEAKS: &[&str] = &[
    "OtherError(",
    "Other(",
    "InvalidCertificate(",
    "AlertReceived(",
    "Context {",
    "Context(",
    "Unknown(",
    "Some(",
    "(0x",
    " { ",
];

fn assert_in_words(text: &str, fallback: &str) {
    assert!(!text.is_empty());
    for leak in DEBUG_LEAKS {
        assert!(
            !text.contains(leak),
            "Debug formatting {leak:?} in {text:?}"
        );
    }
    // A Debug list ([1, 2], ["a"], []); a config section name ([outbound]) is fine.
    let list = text.match_indices('[').any(|(i, _)| {
        text[i + 1..].starts_with(|c: char| c.is_ascii_digit() || c == '"' || c == ']')
    });
    assert!(!list, "Debug formatting of a list in {text:?}");
    assert!(
        !text.contains(fallback),
        "a variant fell through to the catch-all: {text:?}"
    );
}

fn at(unix: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(unix))
}

fn boxed(error: impl StdError + Send + Sync + 'static) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
}

/// 2026-01-01T00:00:00Z and a day and an hour later.
const NOT_AFTER: u64 = 1_767_225_600;
const CHECKED: u64 = NOT_AFTER + 90_000;

#[test]
fn every_rustls_error_is_in_words() {
    let errors = [
        Error::InappropriateMessage {
            expect_types: vec![ContentType::Handshake],
            got_type: ContentType::ApplicationData,
        },
        Error::InappropriateMessage {
            expect_types: vec![ContentType::Handshake, ContentType::Alert],
            got_type: ContentType::Unknown(99),
        },
        Error::InappropriateHandshakeMessage {
            expect_types: vec![HandshakeType::Certificate],
            got_type: HandshakeType::Finished,
        },
        Error::InvalidEncryptedClientHello(EncryptedClientHelloError::SniRequired),
        Error::InvalidMessage(InvalidMessage::InvalidContentType),
        Error::InvalidMessage(InvalidMessage::MissingData("ServerHello")),
        Error::InvalidMessage(InvalidMessage::CertificatePayloadTooLarge),
        Error::NoCertificatesPresented,
        Error::UnsupportedNameType,
        Error::DecryptError,
        Error::EncryptError,
        Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon),
        Error::PeerIncompatible(PeerIncompatible::ServerRejectedEncryptedClientHello(None)),
        Error::PeerMisbehaved(PeerMisbehaved::IllegalMiddleboxChangeCipherSpec),
        Error::AlertReceived(AlertDescription::CertificateUnknown),
        Error::InvalidCertificate(CertificateError::UnknownIssuer),
        Error::InvalidCertRevocationList(CertRevocationListError::BadSignature),
        Error::InvalidCertRevocationList(CertRevocationListError::Other(OtherError(Arc::new(
            webpki::Error::InvalidCrlNumber,
        )))),
        Error::General("the provider failed".into()),
        Error::FailedToGetCurrentTime,
        Error::FailedToGetRandomBytes,
        Error::HandshakeNotComplete,
        Error::PeerSentOversizedRecord,
        Error::NoApplicationProtocol,
        Error::BadMaxFragmentSize,
        Error::InconsistentKeys(InconsistentKeys::KeyMismatch),
        Error::InconsistentKeys(InconsistentKeys::Unknown),
        Error::Other(OtherError(Arc::new(std::io::Error::other("hsm offline")))),
    ];
    for error in &errors {
        assert_in_words(&explain(error), "TLS failed (");
    }
    let incompatible = [
        PeerIncompatible::EcPointsExtensionRequired,
        PeerIncompatible::ExtendedMasterSecretExtensionRequired,
        PeerIncompatible::IncorrectCertificateTypeExtension,
        PeerIncompatible::KeyShareExtensionRequired,
        PeerIncompatible::NamedGroupsExtensionRequired,
        PeerIncompatible::NoCertificateRequestSignatureSchemesInCommon,
        PeerIncompatible::NoCipherSuitesInCommon,
        PeerIncompatible::NoEcPointFormatsInCommon,
        PeerIncompatible::NoKxGroupsInCommon,
        PeerIncompatible::NoSignatureSchemesInCommon,
        PeerIncompatible::NullCompressionRequired,
        PeerIncompatible::ServerDoesNotSupportTls12Or13,
        PeerIncompatible::ServerSentHelloRetryRequestWithUnknownExtension,
        PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig,
        PeerIncompatible::SignatureAlgorithmsExtensionRequired,
        PeerIncompatible::SupportedVersionsExtensionRequired,
        PeerIncompatible::Tls12NotOffered,
        PeerIncompatible::Tls12NotOfferedOrEnabled,
        PeerIncompatible::Tls13RequiredForQuic,
        PeerIncompatible::UncompressedEcPointsRequired,
        PeerIncompatible::UnsolicitedCertificateTypeExtension,
    ];
    for why in incompatible {
        assert_in_words(&explain(&Error::PeerIncompatible(why)), "TLS failed (");
    }
    let text = explain(&Error::PeerIncompatible(
        PeerIncompatible::SupportedVersionsExtensionRequired,
    ));
    assert!(text.contains("it does not speak TLS 1.3"), "{text}");
    let text = explain(&errors[0]);
    assert!(
        text.contains("it sent a record of type ApplicationData where Handshake was due"),
        "{text}"
    );
}

#[test]
fn every_certificate_error_is_in_words() {
    #[allow(deprecated)]
    let errors = [
        CertificateError::BadEncoding,
        CertificateError::Expired,
        CertificateError::ExpiredContext {
            time: at(CHECKED),
            not_after: at(NOT_AFTER),
        },
        CertificateError::NotValidYet,
        CertificateError::NotValidYetContext {
            time: at(NOT_AFTER),
            not_before: at(CHECKED),
        },
        CertificateError::Revoked,
        CertificateError::UnhandledCriticalExtension,
        CertificateError::UnknownIssuer,
        CertificateError::UnknownRevocationStatus,
        CertificateError::ExpiredRevocationList,
        CertificateError::ExpiredRevocationListContext {
            time: at(CHECKED),
            next_update: at(NOT_AFTER),
        },
        CertificateError::BadSignature,
        CertificateError::UnsupportedSignatureAlgorithm,
        CertificateError::UnsupportedSignatureAlgorithmContext {
            signature_algorithm_id: vec![1, 2, 3],
            supported_algorithms: vec![],
        },
        CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext {
            signature_algorithm_id: vec![1, 2, 3],
            public_key_algorithm_id: vec![4, 5, 6],
        },
        CertificateError::NotValidForName,
        CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("host-b").unwrap(),
            presented: vec!["host-c".into()],
        },
        CertificateError::InvalidPurpose,
        CertificateError::InvalidPurposeContext {
            required: ExtendedKeyPurpose::ClientAuth,
            presented: vec![
                ExtendedKeyPurpose::ServerAuth,
                ExtendedKeyPurpose::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 4]),
            ],
        },
        CertificateError::InvalidOcspResponse,
        CertificateError::ApplicationVerificationFailure,
        CertificateError::Other(OtherError(Arc::new(webpki::Error::CaUsedAsEndEntity))),
    ];
    for error in errors {
        assert_in_words(
            &explain(&Error::InvalidCertificate(error)),
            "the certificate was refused (",
        );
    }

    let expired = explain(&Error::InvalidCertificate(
        CertificateError::ExpiredContext {
            time: at(CHECKED),
            not_after: at(NOT_AFTER),
        },
    ));
    assert_eq!(
        expired,
        "the certificate has expired: not valid after 2026-01-01T00:00:00Z, 1d 1h before the \
         check at 2026-01-02T01:00:00Z; renew it, or check this host's clock"
    );
    let purpose = explain(&Error::InvalidCertificate(
        CertificateError::InvalidPurposeContext {
            required: ExtendedKeyPurpose::ClientAuth,
            presented: vec![ExtendedKeyPurpose::ServerAuth],
        },
    ));
    assert!(
        purpose.contains("clientAuth is required, it allows serverAuth"),
        "{purpose}"
    );
}

#[test]
fn every_webpki_error_is_in_words() {
    let oid = vec![1, 2, 3];
    #[allow(deprecated)]
    let errors = [
        webpki::Error::BadDer,
        webpki::Error::BadDerTime,
        webpki::Error::CaUsedAsEndEntity,
        webpki::Error::CertDistrusted,
        webpki::Error::CertExpired {
            time: at(CHECKED),
            not_after: at(NOT_AFTER),
        },
        webpki::Error::CertNotValidForName(webpki::InvalidNameContext {
            expected: ServerName::try_from("host-b").unwrap(),
            presented: vec!["host-c".into()],
        }),
        webpki::Error::CertNotValidYet {
            time: at(NOT_AFTER),
            not_before: at(CHECKED),
        },
        webpki::Error::CertRevoked,
        webpki::Error::CrlExpired {
            time: at(CHECKED),
            next_update: at(NOT_AFTER),
        },
        webpki::Error::EmptyEkuExtension,
        webpki::Error::EndEntityUsedAsCa,
        webpki::Error::ExtensionValueInvalid,
        webpki::Error::InvalidCertValidity,
        webpki::Error::InvalidCrlNumber,
        webpki::Error::InvalidNetworkMaskConstraint,
        webpki::Error::InvalidSerialNumber,
        webpki::Error::InvalidCrlSignatureForPublicKey,
        webpki::Error::InvalidSignatureForPublicKey,
        webpki::Error::IssuerNotCrlSigner,
        webpki::Error::MalformedDnsIdentifier,
        webpki::Error::MalformedExtensions,
        webpki::Error::MalformedNameConstraint,
        webpki::Error::MaximumNameConstraintComparisonsExceeded,
        webpki::Error::MaximumPathBuildCallsExceeded,
        webpki::Error::MaximumPathDepthExceeded,
        webpki::Error::MaximumSignatureChecksExceeded,
        webpki::Error::NameConstraintViolation,
        webpki::Error::PathLenConstraintViolated,
        webpki::Error::RequiredEkuNotFound,
        webpki::Error::RequiredEkuNotFoundContext(webpki::RequiredEkuNotFoundContext {
            required: webpki::KeyUsage::client_auth(),
            present: vec![webpki::KeyUsage::SERVER_AUTH_REPR.to_vec()],
        }),
        webpki::Error::SignatureAlgorithmMismatch,
        webpki::Error::TrailingData(webpki::DerTypeId::Certificate),
        webpki::Error::UnknownIssuer,
        webpki::Error::UnknownRevocationStatus,
        webpki::Error::UnsupportedCertVersion,
        webpki::Error::UnsupportedCriticalExtension,
        webpki::Error::UnsupportedCrlIssuingDistributionPoint,
        webpki::Error::UnsupportedCrlVersion,
        webpki::Error::UnsupportedDeltaCrl,
        webpki::Error::UnsupportedIndirectCrl,
        webpki::Error::UnsupportedNameType,
        webpki::Error::UnsupportedRevocationReason,
        webpki::Error::UnsupportedRevocationReasonsPartitioning,
        webpki::Error::UnsupportedCrlSignatureAlgorithm,
        webpki::Error::UnsupportedCrlSignatureAlgorithmContext(
            webpki::UnsupportedSignatureAlgorithmContext {
                signature_algorithm_id: oid.clone(),
                supported_algorithms: vec![],
            },
        ),
        webpki::Error::UnsupportedSignatureAlgorithm,
        webpki::Error::UnsupportedSignatureAlgorithmContext(
            webpki::UnsupportedSignatureAlgorithmContext {
                signature_algorithm_id: oid.clone(),
                supported_algorithms: vec![],
            },
        ),
        webpki::Error::UnsupportedCrlSignatureAlgorithmForPublicKey,
        webpki::Error::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(
            webpki::UnsupportedSignatureAlgorithmForPublicKeyContext {
                signature_algorithm_id: oid.clone(),
                public_key_algorithm_id: oid.clone(),
            },
        ),
        webpki::Error::UnsupportedSignatureAlgorithmForPublicKey,
        webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(
            webpki::UnsupportedSignatureAlgorithmForPublicKeyContext {
                signature_algorithm_id: oid.clone(),
                public_key_algorithm_id: oid,
            },
        ),
    ];
    for error in errors {
        assert_in_words(
            &explain(&boxed(error)),
            "the certificate chain was refused (",
        );
    }
    let text = explain(&boxed(webpki::Error::CaUsedAsEndEntity));
    assert!(
        text.starts_with("the certificate is a CA certificate"),
        "{text}"
    );
    let text = explain(&boxed(webpki::Error::RequiredEkuNotFoundContext(
        webpki::RequiredEkuNotFoundContext {
            required: webpki::KeyUsage::client_auth(),
            present: vec![vec![1, 3, 6, 1, 5, 5, 7, 3, 4]],
        },
    )));
    assert!(
        text.contains("clientAuth is required, it allows 1.3.6.1.5.5.7.3.4"),
        "{text}"
    );
    let text = explain(&boxed(webpki::Error::CertNotValidYet {
        time: at(NOT_AFTER),
        not_before: at(CHECKED),
    }));
    assert!(
        text.contains("not valid before 2026-01-02T01:00:00Z, 1d 1h after the check"),
        "{text}"
    );
}

#[test]
fn a_certificate_valid_in_a_few_minutes_suggests_clock_skew() {
    let soon = explain(&Error::InvalidCertificate(
        CertificateError::NotValidYetContext {
            time: at(1_000_000),
            not_before: at(1_000_090),
        },
    ));
    assert!(soon.contains("clock skew suspected"), "{soon}");
    let tomorrow = explain(&Error::InvalidCertificate(
        CertificateError::NotValidYetContext {
            time: at(1_000_000),
            not_before: at(1_086_400),
        },
    ));
    assert!(!tomorrow.contains("clock skew"), "{tomorrow}");
    assert!(tomorrow.contains("check both clocks"), "{tomorrow}");
}

#[test]
fn every_alert_is_in_words() {
    for code in 0..=u8::MAX {
        let text = explain(&Error::AlertReceived(AlertDescription::from(code)));
        assert_in_words(&text, "TLS failed (");
        assert!(
            text.starts_with("the peer refused the handshake with alert "),
            "{text}"
        );
    }
    assert_eq!(
        explain(&Error::AlertReceived(AlertDescription::CertificateRequired)),
        "the peer refused the handshake with alert certificate_required (116): the peer \
         requires a client certificate"
    );
    assert!(
        explain(&Error::AlertReceived(AlertDescription::from(200))).contains("alert number 200")
    );
}

#[test]
fn every_spiffe_rule_is_in_words() {
    let id = |s: &str| s.parse::<SpiffeId>().unwrap();
    let errors = [
        VerifyError::NotSvid(SvidError::NoUriSan),
        VerifyError::NotSvid(SvidError::MultipleUriSans(2)),
        VerifyError::NotSvid(SvidError::LeafIsCa),
        VerifyError::NotSvid(SvidError::ForbiddenKeyUsage),
        VerifyError::NotSvid(SvidError::Unparseable("truncated".into())),
        VerifyError::NotSvid(SvidError::InvalidSpiffeId(
            "http://x".parse::<SpiffeId>().unwrap_err(),
        )),
        VerifyError::NotSvid(SvidError::MissingExtendedKeyUsage(
            crate::identity::Purpose::ClientAuth,
        )),
        VerifyError::ForeignTrustDomain {
            id: id("spiffe://other.org/a"),
            trust_domain: "example.org".parse::<TrustDomain>().unwrap(),
        },
        VerifyError::UnexpectedPeer {
            expected: id("spiffe://example.org/node/b"),
            actual: id("spiffe://example.org/node/c"),
        },
        VerifyError::NotANode {
            pattern: crate::identity::IdPattern::nodes_of(&td()),
            actual: id("spiffe://example.org/batch"),
        },
    ];
    for error in errors {
        let expected = error.to_string();
        let text = explain(&boxed(error));
        assert_in_words(&text, "TLS failed (");
        assert_eq!(text, expected);
    }
}

/// The inbound verifier's verdict on a caller presenting `chain`, in words.
fn explain_client(pki: &Pki, chain: &[CertificateDer<'static>]) -> String {
    let verifier = SpiffeClientVerifier::new(&pki.trust, td()).unwrap();
    let error = verifier
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .unwrap_err();
    let text = explain(&error);
    assert_in_words(&text, "the certificate was refused (");
    text
}

#[test]
fn real_refusals_read_as_sentences() {
    let pki = Pki::new();
    let id: SpiffeId = "spiffe://example.org/frontend".parse().unwrap();
    let day = Duration::from_secs(86_400);

    // The case seen in the field: a CA certificate configured as a workload's.
    let ca_leaf = LeafSpec {
        is_ca: true,
        ..LeafSpec::workload(&id, day)
    };
    let text = explain_client(&pki, &pki.chain_for(&ca_leaf));
    assert!(
        text.starts_with("the certificate is a CA certificate"),
        "{text}"
    );

    let mut expired = LeafSpec::workload(&id, day);
    expired.not_before -= time::Duration::days(3);
    expired.not_after = expired.not_before + time::Duration::days(1);
    let not_after = timestamp(expired.not_after.unix_timestamp());
    let text = explain_client(&pki, &pki.chain_for(&expired));
    assert!(
        text.starts_with(&format!(
            "the certificate has expired: not valid after {not_after}, 2d"
        )),
        "{text}"
    );

    let server_only = LeafSpec {
        extended_key_usages: vec![ExtendedKeyUsagePurpose::ServerAuth],
        ..LeafSpec::workload(&id, day)
    };
    let text = explain_client(&pki, &pki.chain_for(&server_only));
    assert!(
        text.contains("clientAuth is required, it allows serverAuth"),
        "{text}"
    );

    let foreign = Pki::new();
    let text = explain_client(&pki, &foreign.chain("spiffe://example.org/frontend"));
    assert!(text.contains("issued by another CA"), "{text}");
}
