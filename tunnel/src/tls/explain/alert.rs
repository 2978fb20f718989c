//! A TLS alert received from the peer: what it usually means for us, and its name as the
//! RFCs write it.

use rustls::AlertDescription;

pub(super) fn alert_received(alert: AlertDescription) -> String {
    let meaning = match alert {
        AlertDescription::CertificateExpired => {
            "our certificate (or its chain) is expired or not yet valid for the peer (the \
             alert is the same for both: check our certificate's dates, and both clocks)"
        }
        AlertDescription::UnknownCA => "the peer does not trust the CA that issued our certificate",
        AlertDescription::UnsupportedCertificate => {
            "our certificate lacks the extended key usage the peer needs"
        }
        AlertDescription::CertificateRevoked => "the peer considers our certificate revoked",
        AlertDescription::BadCertificate
        | AlertDescription::CertificateUnknown
        | AlertDescription::AccessDenied => {
            "the peer refused our certificate's identity (see the peer's log for the exact rule)"
        }
        AlertDescription::CertificateRequired | AlertDescription::NoCertificate => {
            "the peer requires a client certificate"
        }
        AlertDescription::DecryptError => {
            "a signature did not verify on the peer (our certificate's chain or our handshake \
             signature)"
        }
        AlertDescription::HandshakeFailure | AlertDescription::InsufficientSecurity => {
            "no acceptable TLS parameters in common"
        }
        AlertDescription::ProtocolVersion => "the peer does not accept TLS 1.3",
        AlertDescription::NoApplicationProtocol => "the peer does not speak HBONE (ALPN h2)",
        AlertDescription::BadCertificateStatusResponse
        | AlertDescription::BadCertificateHashValue
        | AlertDescription::CertificateUnobtainable => {
            "the peer could not use our certificate's status or chain"
        }
        AlertDescription::UnexpectedMessage
        | AlertDescription::DecodeError
        | AlertDescription::IllegalParameter
        | AlertDescription::MissingExtension
        | AlertDescription::UnsupportedExtension
        | AlertDescription::RecordOverflow => {
            "the peer found our TLS messages malformed (a bug on one side)"
        }
        AlertDescription::BadRecordMac | AlertDescription::DecryptionFailed => {
            "a record did not decrypt on the peer: the data was corrupted or altered on the way"
        }
        AlertDescription::InternalError => "the peer failed internally (its log says why)",
        AlertDescription::CloseNotify | AlertDescription::UserCanceled => {
            "the peer ended the handshake"
        }
        AlertDescription::UnrecognisedName => "the peer does not serve the requested name",
        AlertDescription::EncryptedClientHelloRequired => {
            "the peer requires encrypted client hello, which tunnel does not use"
        }
        AlertDescription::DecompressionFailure
        | AlertDescription::ExportRestriction
        | AlertDescription::NoRenegotiation => {
            "an alert of TLS versions before 1.3: the peer does not speak TLS 1.3"
        }
        AlertDescription::InappropriateFallback => {
            "the peer saw what looks like a protocol version downgrade"
        }
        AlertDescription::UnknownPSKIdentity => {
            "the peer does not know the session offered for resumption (tunnel never resumes)"
        }
        _ => "an alert unknown to tunnel (see the peer's log)",
    };
    format!(
        "the peer refused the handshake with alert {}: {meaning}",
        alert_name(alert)
    )
}

/// The alert's name as the TLS RFCs (and OpenSSL's logs) write it.
fn alert_name(alert: AlertDescription) -> String {
    let name = match alert {
        AlertDescription::CloseNotify => "close_notify",
        AlertDescription::UnexpectedMessage => "unexpected_message",
        AlertDescription::BadRecordMac => "bad_record_mac",
        AlertDescription::DecryptionFailed => "decryption_failed",
        AlertDescription::RecordOverflow => "record_overflow",
        AlertDescription::DecompressionFailure => "decompression_failure",
        AlertDescription::HandshakeFailure => "handshake_failure",
        AlertDescription::NoCertificate => "no_certificate",
        AlertDescription::BadCertificate => "bad_certificate",
        AlertDescription::UnsupportedCertificate => "unsupported_certificate",
        AlertDescription::CertificateRevoked => "certificate_revoked",
        AlertDescription::CertificateExpired => "certificate_expired",
        AlertDescription::CertificateUnknown => "certificate_unknown",
        AlertDescription::IllegalParameter => "illegal_parameter",
        AlertDescription::UnknownCA => "unknown_ca",
        AlertDescription::AccessDenied => "access_denied",
        AlertDescription::DecodeError => "decode_error",
        AlertDescription::DecryptError => "decrypt_error",
        AlertDescription::ExportRestriction => "export_restriction",
        AlertDescription::ProtocolVersion => "protocol_version",
        AlertDescription::InsufficientSecurity => "insufficient_security",
        AlertDescription::InternalError => "internal_error",
        AlertDescription::InappropriateFallback => "inappropriate_fallback",
        AlertDescription::UserCanceled => "user_canceled",
        AlertDescription::NoRenegotiation => "no_renegotiation",
        AlertDescription::MissingExtension => "missing_extension",
        AlertDescription::UnsupportedExtension => "unsupported_extension",
        AlertDescription::CertificateUnobtainable => "certificate_unobtainable",
        AlertDescription::UnrecognisedName => "unrecognized_name",
        AlertDescription::BadCertificateStatusResponse => "bad_certificate_status_response",
        AlertDescription::BadCertificateHashValue => "bad_certificate_hash_value",
        AlertDescription::UnknownPSKIdentity => "unknown_psk_identity",
        AlertDescription::CertificateRequired => "certificate_required",
        AlertDescription::NoApplicationProtocol => "no_application_protocol",
        AlertDescription::EncryptedClientHelloRequired => "encrypted_client_hello_required",
        _ => "",
    };
    let code = u8::from(alert);
    if name.is_empty() {
        format!("number {code}")
    } else {
        format!("{name} ({code})")
    }
}
