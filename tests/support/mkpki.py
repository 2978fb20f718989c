#!/usr/bin/python3
"""Every certificate of tests/certificates.rs, made with Python `cryptography` rather than
tunnel's own CA code, so that the daemon's checks and the CA's output are checked against an
independent implementation.

usage: mkpki.py DIR

Writes, in DIR:
  bundle.pem                  the root CA (the trust bundle)
  crl-intermediate.pem        CRL of the intermediate: revokes revoked-leaf (keyCompromise)
  crl-root.pem                CRL of the root: revokes revoked-intermediate's CA (cACompromise)
  <case>/cert.pem             leaf then its intermediate (PEM)
  <case>/key.pem              the leaf's key (PKCS#8 PEM)
  revoked-*/revoked-serial    the serial the CRL lists, in hex as openssl prints it

The cases are the good certificates (node-host-a, node-host-b, frontend, orders) and one
faulty certificate per entry of FAULTS. Prints nothing but errors.
"""

import datetime
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "spiffe://example.org"
NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)
BOTH = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


class Ca:
    """A CA certificate and its key."""

    def __init__(self, name, issuer=None, spiffe=None, pathlen=None):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = base(self.name, self.key, NOW - DAY, NOW + 3650 * DAY, issuer or self)
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=pathlen), True)
        builder = builder.add_extension(key_usage(cert_sign=True), True)
        if spiffe:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe)]), False
            )
        self.cert = builder.sign((issuer or self).key, hashes.SHA256())

    def intermediate(self, name):
        return Ca(name, issuer=self, spiffe=TRUST_DOMAIN, pathlen=0)

    def crl(self, revoked, reason):
        """A CRL signed by this CA listing `revoked` (certificates it issued)."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.name)
            .last_update(NOW - DAY)
            .next_update(NOW + 7 * DAY)
            .add_extension(x509.CRLNumber(1), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        for cert in revoked:
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(cert.serial_number)
                .revocation_date(NOW - datetime.timedelta(hours=1))
                .add_extension(x509.CRLReason(reason), False)
                .build()
            )
            builder = builder.add_revoked_certificate(entry)
        return builder.sign(self.key, hashes.SHA256())


def base(subject, key, not_before, not_after, issuer):
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
        )
    )


def key_usage(cert_sign=False):
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def leaf(issuer, path="/frontend", uris=None, ekus=BOTH, ca=False, not_before=None,
         not_after=None, names=None):
    """An X.509-SVID (ECDSA P-256) for TRUST_DOMAIN + path, unless told otherwise.
    Returns (certificate, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    uris = [TRUST_DOMAIN + path] if uris is None else uris
    names = [x509.UniformResourceIdentifier(u) for u in uris] if names is None else names
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "example.org")])
    not_before = not_before or NOW - datetime.timedelta(hours=1)
    builder = base(subject, key, not_before, not_after or NOW + 30 * DAY, issuer)
    builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    builder = builder.add_extension(key_usage(), True)
    builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), False)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
    return builder.sign(issuer.key, hashes.SHA256()), key


def issued(pki, **leaf_args):
    """A leaf of the intermediate, and the chain cert.pem holds: leaf, intermediate."""
    cert, key = leaf(pki.inter, **leaf_args)
    return [cert, pki.inter.cert], key


# One function per fault: each returns (the certificates of cert.pem, the key).

def expired(pki):
    return issued(pki, not_before=NOW - 2 * DAY, not_after=NOW - DAY)


def not_yet_valid(pki):
    return issued(pki, not_before=NOW + DAY, not_after=NOW + 2 * DAY)


def clock_skew(pki):
    return issued(pki, not_before=NOW + datetime.timedelta(minutes=2))


def other_ca(pki):
    cert, key = leaf(pki.other_inter)
    return [cert, pki.other_inter.cert], key


def missing_intermediate(pki):
    chain, key = issued(pki)
    return chain[:1], key


def no_client_auth(pki):
    return issued(pki, ekus=[ExtendedKeyUsageOID.SERVER_AUTH])


def ca_leaf(pki):
    return issued(pki, ca=True)


def no_uri_san(pki):
    return issued(pki, names=[x509.DNSName("frontend.example.org")])


def two_uri_sans(pki):
    return issued(pki, uris=[TRUST_DOMAIN + "/frontend", TRUST_DOMAIN + "/second"])


def foreign_domain(pki):
    return issued(pki, uris=["spiffe://other.org/frontend"])


def key_mismatch(pki):
    chain, _ = issued(pki)
    _, other_key = issued(pki)
    return chain, other_key


def revoked_leaf(pki):
    return [pki.revoked_leaf[0], pki.inter.cert], pki.revoked_leaf[1]


def revoked_intermediate(pki):
    cert, key = leaf(pki.revoked_inter)
    return [cert, pki.revoked_inter.cert], key


def node_no_server_auth(pki):
    return issued(pki, path="/node/host-b", ekus=[ExtendedKeyUsageOID.CLIENT_AUTH])


FAULTS = {
    "expired": expired,
    "not-yet-valid": not_yet_valid,
    "clock-skew": clock_skew,
    "other-ca": other_ca,
    "missing-intermediate": missing_intermediate,
    "no-client-auth": no_client_auth,
    "ca-leaf": ca_leaf,
    "no-uri-san": no_uri_san,
    "two-uri-sans": two_uri_sans,
    "foreign-domain": foreign_domain,
    "key-mismatch": key_mismatch,
    "revoked-leaf": revoked_leaf,
    "revoked-intermediate": revoked_intermediate,
    "node-host-b-no-server-auth": node_no_server_auth,
}

GOOD = {
    "node-host-a": "/node/host-a",
    "node-host-b": "/node/host-b",
    "frontend": "/frontend",
    "orders": "/orders",
}


class Pki:
    def __init__(self):
        self.root = Ca("tunnel test root CA")
        self.inter = self.root.intermediate("tunnel test intermediate CA")
        self.revoked_inter = self.root.intermediate("tunnel test revoked intermediate CA")
        other_root = Ca("another root CA")
        self.other_inter = other_root.intermediate("another intermediate CA")
        self.revoked_leaf = leaf(self.inter)


def hex_serial(cert):
    text = format(cert.serial_number, "X")
    return text.rjust(len(text) + len(text) % 2, "0").encode()


def pem(thing):
    return thing.public_bytes(serialization.Encoding.PEM)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_case(out, name, chain, key):
    write(os.path.join(out, name, "cert.pem"), b"".join(pem(c) for c in chain))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write(os.path.join(out, name, "key.pem"), key_pem)


def main(out):
    pki = Pki()
    write(os.path.join(out, "bundle.pem"), pem(pki.root.cert))
    for name, path in GOOD.items():
        write_case(out, name, *issued(pki, path=path))
    for name, fault in FAULTS.items():
        write_case(out, name, *fault(pki))
    write(os.path.join(out, "revoked-leaf", "revoked-serial"), hex_serial(pki.revoked_leaf[0]))
    write(os.path.join(out, "revoked-intermediate", "revoked-serial"),
          hex_serial(pki.revoked_inter.cert))
    key_compromise = x509.ReasonFlags.key_compromise
    ca_compromise = x509.ReasonFlags.ca_compromise
    write(os.path.join(out, "crl-intermediate.pem"),
          pem(pki.inter.crl([pki.revoked_leaf[0]], key_compromise)))
    write(os.path.join(out, "crl-root.pem"),
          pem(pki.root.crl([pki.revoked_inter.cert], ca_compromise)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: mkpki.py DIR")
    main(sys.argv[1])
