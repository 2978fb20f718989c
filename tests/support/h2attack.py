#!/usr/bin/env python3
"""Misbehaving HBONE clients for the hardening tests: each speaks raw HTTP/2 frames over
mTLS (with a real workload certificate, so it gets past authentication) and does what a
well-behaved peer never would. Each prints one JSON line that the Rust tests parse.

  continuation HOST PORT CERT KEY CA CONNS SECONDS
      CONNS connections, each sending one HEADERS without END_HEADERS followed by
      CONTINUATION frames for up to SECONDS; reports how many the server closed, and when
  big-header HOST PORT CERT KEY CA DEST BYTES
      one CONNECT to DEST carrying a header of BYTES; reports the answer (status, reset,
      GOAWAY or close)
  never-read HOST PORT CERT KEY CA DEST STREAMS SECONDS [CONNS]
      CONNS connections (default 1), each advertising a 2 GiB window and opening STREAMS
      CONNECTs to DEST; prints "holding", then never reads a byte for SECONDS
  handshakes HOST PORT CERT KEY CA PROCS SECONDS
      PROCS processes doing full mTLS handshakes in a loop (connect, handshake, close) for
      SECONDS; reports how many completed and how many failed
  no-tls HOST PORT CONNS SECONDS
      CONNS TCP connections that never send anything, held for SECONDS; reports how many
      the server reset or closed at once and how many it closed later
  no-tls-flood HOST PORT SOURCES PER_SOURCE SECONDS
      from each of SOURCES (comma-separated local addresses), PER_SOURCE connections that
      never send anything, each reopened as soon as the server closes it, for SECONDS;
      prints "flooding" at the start, then how many were opened, closed by the server and
      refused
"""
import json, socket, ssl, struct, sys, threading, time

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
MAX_WINDOW = (1 << 31) - 1


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value % 128) + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def literal(name, value):
    """A header as 'literal without indexing, new name', no Huffman: simplest to write."""
    return b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


def connect_block(dest, extra=b""):
    return literal(b":method", b"CONNECT") + literal(b":authority", dest.encode()) + extra


def tls_connect(host, port, cert, key, ca, timeout=10, rcvbuf=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # the server's identity is a SPIFFE URI, not a host name
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(timeout)
    raw.connect((host, int(port)))
    s = ctx.wrap_socket(raw)
    s.sendall(PREFACE + frame(SETTINGS, 0, 0))
    return s


def read_frames(s, deadline):
    """Frames until the deadline or the connection ends: [(kind, flags, stream, payload)]."""
    buf, frames = b"", []
    while time.time() < deadline:
        s.settimeout(max(0.05, deadline - time.time()))
        try:
            chunk = s.recv(65536)
        except (socket.timeout, TimeoutError):
            break
        except (ssl.SSLError, OSError):
            frames.append(("closed", 0, 0, b""))
            break
        if not chunk:
            frames.append(("closed", 0, 0, b""))
            break
        buf += chunk
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            kind, flags = buf[3], buf[4]
            stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            frames.append((kind, flags, stream, buf[9:9 + length]))
            buf = buf[9 + length:]
        if any(f[0] in (GOAWAY, "closed") for f in frames) or any(
            f[0] in (HEADERS, RST_STREAM) and f[2] == 1 for f in frames
        ):
            break
    return frames


def continuation(host, port, cert, key, ca, conns, seconds):
    results = []

    def one():
        started = time.time()
        try:
            s = tls_connect(host, port, cert, key, ca)
            s.sendall(frame(HEADERS, 0, 1, connect_block("10.0.0.2:8080")))
            sent = 0
            piece = literal(b"x-pad", b"p" * 16000)
            while time.time() - started < float(seconds):
                s.sendall(frame(CONTINUATION, 0, 1, piece))
                sent += len(piece)
                time.sleep(0.01)
            results.append({"closed": False, "sent": sent})
        except (OSError, ssl.SSLError):
            results.append({"closed": True, "after_s": round(time.time() - started, 2)})
        except Exception as e:  # reported, so a broken client cannot pass for a closed one
            results.append({"closed": False, "error": repr(e)})

    threads = [threading.Thread(target=one) for _ in range(int(conns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    closed = [r for r in results if r["closed"]]
    print(json.dumps({
        "connections": len(results),
        "closed": len(closed),
        "max_close_s": max([r["after_s"] for r in closed], default=None),
        "errors": sorted({r["error"] for r in results if "error" in r}),
    }), flush=True)


def big_header(host, port, cert, key, ca, dest, size):
    s = tls_connect(host, port, cert, key, ca)
    block = connect_block(dest, literal(b"x-pad", b"p" * int(size)))
    # The client may send frames of at most 16 KiB until it has read the server's SETTINGS.
    pieces = [block[i:i + 16384] for i in range(0, len(block), 16384)]
    answer = {"sent": len(block)}
    try:
        for i, piece in enumerate(pieces):
            kind = HEADERS if i == 0 else CONTINUATION
            flags = END_HEADERS if i == len(pieces) - 1 else 0
            s.sendall(frame(kind, flags, 1, piece))
    except (OSError, ssl.SSLError) as e:
        answer["send_error"] = str(e)
    for kind, flags, stream, payload in read_frames(s, time.time() + 10):
        if kind == HEADERS and stream == 1:
            answer["status_431"] = b"431" in payload
        elif kind == RST_STREAM and stream == 1:
            answer["reset"] = int.from_bytes(payload[:4], "big")
        elif kind == GOAWAY:
            answer["goaway"] = int.from_bytes(payload[4:8], "big")
        elif kind == "closed":
            answer["closed"] = True
    print(json.dumps(answer), flush=True)


def never_read(host, port, cert, key, ca, dest, streams, seconds, conns="1"):
    held, opened = [], 0
    for _ in range(int(conns)):
        try:
            # A small receive buffer: what is never read stays in the daemon, not in this
            # host's kernel (whose TCP memory, shared by every namespace, the test needs).
            s = tls_connect(host, port, cert, key, ca, rcvbuf=65536)
        except (OSError, ssl.SSLError):
            break
        settings = struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW)
        s.sendall(frame(SETTINGS, 0, 0, settings) + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", MAX_WINDOW - 65535)))
        for i in range(int(streams)):
            try:
                s.sendall(frame(HEADERS, END_HEADERS, 2 * i + 1, connect_block(dest)))
                opened += 1
            except (OSError, ssl.SSLError):
                break
        held.append(s)
    print("holding", flush=True)
    time.sleep(float(seconds))
    print(json.dumps({"requested": opened, "connections": len(held)}), flush=True)


def handshakes(host, port, cert, key, ca, procs, seconds):
    import multiprocessing

    def loop(counts):
        done = failed = 0
        deadline = time.time() + float(seconds)
        while time.time() < deadline:
            try:
                tls_connect(host, port, cert, key, ca, timeout=5).close()
                done += 1
            except (OSError, ssl.SSLError):
                failed += 1
        counts.put((done, failed))

    counts = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=loop, args=(counts,)) for _ in range(int(procs))]
    for w in workers:
        w.start()
    results = [counts.get() for _ in workers]
    for w in workers:
        w.join()
    print(json.dumps({"handshakes": sum(r[0] for r in results), "failed": sum(r[1] for r in results)}),
          flush=True)


def no_tls(host, port, conns, seconds):
    socks, refused = [], 0
    for _ in range(int(conns)):
        try:
            socks.append(socket.create_connection((host, int(port)), timeout=5))
        except OSError:
            refused += 1
    time.sleep(0.5)
    early = sum(1 for s in socks if gone(s))
    time.sleep(float(seconds))
    later = sum(1 for s in socks if gone(s)) - early
    print(json.dumps({"opened": len(socks), "refused": refused, "closed_at_once": early,
                      "closed_later": later}), flush=True)


def no_tls_flood(host, port, sources, per_source, seconds):
    """From each of SOURCES (comma-separated addresses of this host), keeps PER_SOURCE
    connections open that never start TLS, opening a new one as soon as one is closed or
    refused, for SECONDS: the most pre-TLS pressure these addresses can make."""
    import selectors
    deadline = time.monotonic() + float(seconds)
    totals = {"opened": 0, "closed_by_server": 0, "refused": 0}
    lock = threading.Lock()

    def one_source(source):
        sel = selectors.DefaultSelector()
        opened = closed = refused = 0
        live = 0
        while time.monotonic() < deadline:
            while live < int(per_source) and time.monotonic() < deadline:
                try:
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.bind((source, 0))
                    s.settimeout(2)
                    s.connect((host, int(port)))
                    s.setblocking(False)
                    sel.register(s, selectors.EVENT_READ)
                    opened += 1
                    live += 1
                except OSError:
                    s.close()
                    refused += 1
                    time.sleep(0.001)
            for key, _ in sel.select(timeout=0.05):
                sel.unregister(key.fileobj)
                key.fileobj.close()
                closed += 1
                live -= 1
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        with lock:
            totals["opened"] += opened
            totals["closed_by_server"] += closed
            totals["refused"] += refused

    workers = [threading.Thread(target=one_source, args=(src,)) for src in sources.split(",")]
    for w in workers:
        w.start()
    print("flooding", flush=True)
    for w in workers:
        w.join()
    print(json.dumps(totals), flush=True)


def gone(s):
    """Whether the server has closed or reset this socket (without blocking)."""
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {"continuation": continuation, "big-header": big_header, "never-read": never_read,
     "no-tls": no_tls, "no-tls-flood": no_tls_flood, "handshakes": handshakes}[cmd](*args)


if __name__ == "__main__":
    main()
