#!/usr/bin/env python3
"""What a TLS scanner and a packet capture see of the tunnel port, for tests/mtls.rs. Run by
the Python of the sslyze venv `cargo xtask setup` makes (target/tools/sslyze).

  scan HOST PORT CERT KEY
      sslyze's scans of HOST:PORT, presenting CERT/KEY when the server asks for a client
      certificate, summed up as one JSON line: the protocol versions accepted, session
      resumption (by id and by ticket), TLS 1.3 early data, the groups it accepts, the
      cipher suites; and what a client presenting no certificate gets.
  server-groups PCAP PORT
      the key exchange group of every ServerHello sent from PORT in PCAP (a tcpdump capture
      of Ethernet frames), by name where known, as one JSON line. A TLS 1.3 ServerHello is
      sent in the clear, so a capture shows the group two peers agreed on.
"""
import json
import struct
import subprocess
import sys
import tempfile

GROUPS = {
    0x0017: "secp256r1",
    0x0018: "secp384r1",
    0x0019: "secp521r1",
    0x001D: "X25519",
    0x001E: "X448",
    0x11EB: "SecP256r1MLKEM768",
    0x11EC: "X25519MLKEM768",
    0x11ED: "SecP384r1MLKEM1024",
}
VERSIONS = ["ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1", "tls_1_2", "tls_1_3"]


def last_line(trace):
    """An error trace's last line: what went wrong, without the stack."""
    return (trace or "").strip().splitlines()[-1] if trace else ""


def scan(host, port, cert, key):
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            [sys.executable, "-m", "sslyze", "--quiet", "--json_out", out.name,
             "--cert", cert, "--key", key,
             "--sslv2", "--sslv3", "--tlsv1", "--tlsv1_1", "--tlsv1_2", "--tlsv1_3",
             "--resum", "--early_data", "--elliptic_curves",
             f"{host}:{port}"],
            check=False, capture_output=True,
        )
        report = json.load(open(out.name))
    server = report["server_scan_results"][0]
    if server["scan_status"] != "COMPLETED":
        print(json.dumps({"error": server.get("connectivity_error_trace") or server["scan_status"]}))
        return
    results = server["scan_result"]
    summary = {
        # sslyze's own guess; with TLS 1.3 it cannot see a requirement before the handshake
        # ends, so `without_certificate` is what the tests judge by.
        "client_auth": server["connectivity_result"]["client_auth_requirement"],
        "accepted": [],
        "cipher_suites": [],
    }
    for version in VERSIONS:
        attempt = results[f"{version}_cipher_suites"]
        if attempt["status"] != "COMPLETED":
            summary[f"{version}_error"] = last_line(attempt.get("error_trace")) or attempt["status"]
            continue
        suites = attempt["result"]["accepted_cipher_suites"]
        if suites:
            summary["accepted"].append(version)
            summary["cipher_suites"] += [s["cipher_suite"]["name"] for s in suites]
    resumption = results["session_resumption"]
    if resumption["status"] == "COMPLETED":
        r = resumption["result"]
        summary["resumption_by_id"] = r["session_id_resumption_result"]
        summary["resumption_by_ticket"] = r["tls_ticket_resumption_result"]
    else:
        summary["resumption_error"] = last_line(resumption.get("error_trace")) or resumption["status"]
    early = results["tls_1_3_early_data"]
    if early["status"] == "COMPLETED":
        summary["early_data"] = early["result"]["supports_early_data"]
    else:
        summary["early_data_error"] = last_line(early.get("error_trace")) or early["status"]
    curves = results["elliptic_curves"]
    if curves["status"] == "COMPLETED":
        summary["groups"] = [c["name"] for c in curves["result"]["supported_curves"] or []]
    summary["without_certificate"] = without_certificate(host, port)
    summary["tls_1_3_resumption"] = tls_1_3_resumption(host, port, cert, key)
    print(json.dumps(summary))


def tls_1_3_resumption(host, port, cert, key):
    """sslyze tests session resumption over TLS 1.2 only. Over TLS 1.3: whether the server
    sends a ticket after a full handshake (with CERT/KEY), and whether a second connection
    offering the session it got is resumed."""
    import socket
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2"])
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"

    def connect(session=None):
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with context.wrap_socket(raw, session=session) as tls:
                tls.sendall(preface)
                tls.recv(64)  # the server's SETTINGS: any ticket was sent before it
                return tls.session, tls.session_reused

    try:
        session, _ = connect()
        ticket = bool(session and session.has_ticket)
        _, resumed = connect(session) if ticket else (None, False)
        return {"ticket": ticket, "resumed": resumed}
    except (OSError, ssl.SSLError) as e:
        return {"error": str(e)}


def without_certificate(host, port):
    """What a client that presents no certificate gets. In TLS 1.3 the server's verdict on the
    client's (empty) Certificate comes after the client has finished its side of the
    handshake, so it shows on the first read: "certificate_required" is the alert a server
    sends that requires one (RFC 8446, 4.4.2.4)."""
    import socket
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with context.wrap_socket(raw) as tls:
                data = tls.recv(1)
                return f"served: read {len(data)} bytes"
    except ssl.SSLError as e:
        return "refused: " + (e.reason or str(e))
    except OSError as e:
        return f"error: {e}"


def server_hellos(pcap, port):
    """The TCP payloads from PORT, one per segment, in capture order (ServerHello is the first
    record of the server's first flight, and fits in its first segment)."""
    data = open(pcap, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    offset = 24
    while offset + 16 <= len(data):
        _, _, caplen, _ = struct.unpack(endian + "IIII", data[offset:offset + 16])
        frame = data[offset + 16:offset + 16 + caplen]
        offset += 16 + caplen
        ethertype = struct.unpack(">H", frame[12:14])[0]
        if ethertype == 0x0800:
            ihl = (frame[14] & 0x0F) * 4
            proto, l4 = frame[14 + 9], 14 + ihl
        elif ethertype == 0x86DD:
            proto, l4 = frame[14 + 6], 14 + 40
        else:
            continue
        if proto != 6:
            continue
        src_port = struct.unpack(">H", frame[l4:l4 + 2])[0]
        payload = frame[l4 + (frame[l4 + 12] >> 4) * 4:]
        if src_port == int(port) and payload:
            yield payload


def key_share_group(payload):
    """The group of the key_share extension of the ServerHello that starts `payload`."""
    if len(payload) < 6 or payload[0] != 0x16 or payload[5] != 0x02:
        return None
    body = payload[9:]
    at = 2 + 32  # legacy_version, random
    at += 1 + body[at]  # legacy_session_id_echo
    at += 2 + 1  # cipher_suite, legacy_compression_method
    end = at + 2 + struct.unpack(">H", body[at:at + 2])[0]
    at += 2
    while at + 4 <= min(end, len(body)):
        kind, length = struct.unpack(">HH", body[at:at + 4])
        if kind == 0x0033:
            return struct.unpack(">H", body[at + 4:at + 6])[0]
        at += 4 + length
    return None


def server_groups(pcap, port):
    groups = [key_share_group(p) for p in server_hellos(pcap, port)]
    print(json.dumps([GROUPS.get(g, hex(g)) for g in groups if g is not None]))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {"scan": scan, "server-groups": server_groups}[cmd](*args)


if __name__ == "__main__":
    main()
