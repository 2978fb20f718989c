#!/usr/bin/python3
"""A stand-in for the Kubernetes API server in tests/pods.rs: answers
GET /api/v1/namespaces/<ns>/pods/<name> with the Pod JSON a real API server returns
(trimmed to the usual top-level shape: kind, apiVersion, metadata, spec, status), and
GET /api/v1/pods?fieldSelector=status.podIP%3D<ip> with a PodList, for the pods listed in a
JSON file, over HTTPS with a certificate signed by a CA it makes itself, for 127.0.0.1.
A request without the expected bearer token gets 401, an unknown pod 404, each with a
Status object as the real server sends. Kubernetes cannot run on the test machines; the
daemon's one API call is what is exercised.

usage: kubeapi.py DIR PORT TOKEN PODS_JSON
  writes DIR/ca.crt (the certificate to trust) and prints "listening" once it serves.
  PODS_JSON: [{"namespace":..,"name":..,"uid":..,"serviceAccountName":..,"nodeName":..,
               "podIP": (optional)}, ...]
"""

import datetime
import http.server
import json
import os
import ssl
import sys
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def certificate(subject, key, issuer_name, issuer_key, ca, san=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def serving_certificate(dir):
    """A cluster CA (DIR/ca.crt, what a pod's service account mount holds) and the API
    server's certificate for 127.0.0.1 that it signs."""
    import ipaddress

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("kubernetes-test-ca", ca_key, "kubernetes-test-ca", ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = certificate(
        "kube-apiserver", key, "kubernetes-test-ca", ca_key, False,
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    pem = serialization.Encoding.PEM
    with open(os.path.join(dir, "ca.crt"), "wb") as f:
        f.write(ca.public_bytes(pem))
    with open(os.path.join(dir, "apiserver.crt"), "wb") as f:
        f.write(leaf.public_bytes(pem))
    with open(os.path.join(dir, "apiserver.key"), "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return os.path.join(dir, "apiserver.crt"), os.path.join(dir, "apiserver.key")


def status(code, reason, message):
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def pod_object(pod):
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": pod["name"],
            "namespace": pod["namespace"],
            "uid": pod["uid"],
            "resourceVersion": "4242",
            "creationTimestamp": "2026-11-30T10:00:00Z",
            "labels": {"app": pod["name"]},
        },
        "spec": {
            "serviceAccountName": pod["serviceAccountName"],
            "serviceAccount": pod["serviceAccountName"],
            "nodeName": pod["nodeName"],
            "containers": [{"name": "app", "image": "registry.example/app:1"}],
        },
        "status": {"phase": "Pending", "podIP": pod.get("podIP", "")},
    }


def main():
    dir, port, token, pods_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    cert, key = serving_certificate(dir)

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.headers.get("Authorization") != "Bearer " + token:
                return self.answer(401, status(401, "Unauthorized", "Unauthorized"))
            path, _, query = self.path.partition("?")
            with open(pods_file) as f:
                pods = json.load(f)
            if path == "/api/v1/pods":
                selector = urllib.parse.unquote(query.partition("fieldSelector=")[2])
                ip = selector.partition("status.podIP=")[2]
                items = [pod_object(p) for p in pods if ip and p.get("podIP") == ip]
                return self.answer(200, {"kind": "PodList", "apiVersion": "v1",
                                         "metadata": {"resourceVersion": "4242"}, "items": items})
            parts = path.strip("/").split("/")
            if len(parts) != 6 or parts[:3] != ["api", "v1", "namespaces"] or parts[4] != "pods":
                return self.answer(404, status(404, "NotFound", "the server could not find the requested resource"))
            for pod in pods:
                if pod["namespace"] == parts[3] and pod["name"] == parts[5]:
                    return self.answer(200, pod_object(pod))
            return self.answer(404, status(404, "NotFound", f'pods "{parts[5]}" not found'))

        def log_message(self, fmt, *args):
            sys.stderr.write("kubeapi: " + (fmt % args) + "\n")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
