#!/usr/bin/python3
"""A stand-in for the Kubernetes API server in tests/pods.rs, for the pods listed in a JSON
file, over HTTPS (HTTP/1.1) with a certificate for 127.0.0.1 signed by a CA it makes itself.
Kubernetes cannot run on the test machines; this speaks the parts of the API the daemon uses
as the real server does, with the real object shapes, so the daemon needs no test-only path:

  GET /api/v1/namespaces/<ns>/pods/<name>      a Pod
  GET /api/v1/pods                             a PodList of every namespace's pods
  GET /api/v1/namespaces/<ns>/pods             a PodList of one namespace's pods
      ?labelSelector=  k=v, k==v, k!=v, k, !k  (comma-separated, all must hold; set-based
                                                forms such as `k in (a,b)` get 400)
      ?fieldSelector=  metadata.name, metadata.namespace, spec.nodeName,
                       spec.serviceAccountName, spec.hostNetwork, status.phase,
                       status.podIP with =, == or != (comma-separated; another field gets 400
                       "field label not supported: <field>", as the real server says)
      ?limit=N&continue=TOKEN  pages in key order (namespace/name, as etcd's keys sort);
                       metadata.continue names the next page, metadata.remainingItemCount is
                       set when no selector filters. A token holds the list's resourceVersion
                       and the last key: later pages are the same snapshot (rebuilt from the
                       kept history); once that history is gone (see `compact`), 410 Expired.
      resourceVersion / resourceVersionMatch on a list are accepted and ignored: a list is
                       always the current state (which satisfies "0", "NotOlderThan" and a
                       resourceVersion that is the current one).
  The list paths with ?watch=true (or 1): a watch. HTTP 200, Transfer-Encoding: chunked,
  Content-Type: application/json, one chunk per event, each a JSON line
      {"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{...}}
      resourceVersion=RV   every kept event after RV, then live ones. RV older than the kept
                           history (at start, or after `compact`) gets, as the real server
                           does, HTTP 200 then one event and the end of the stream:
                           {"type":"ERROR","object":{"kind":"Status","apiVersion":"v1",
                            "metadata":{},"status":"Failure","message":"too old resource
                            version: RV (CURRENT)","reason":"Expired","code":410}}
                           RV newer than the current one is waited for up to 3 s, then 504
                           (reason Timeout, "Too large resource version").
      none, or "0"         ADDED for every current pod first, then live events.
      sendInitialEvents=true  (streaming lists) ADDED for every current pod, then a BOOKMARK
                           annotated "k8s.io/initial-events-end": "true", then live events.
      allowWatchBookmarks=true  a BOOKMARK, {"kind":"Pod","apiVersion":"v1","metadata":
                           {"resourceVersion":"CURRENT"}}, after each second without events.
      timeoutSeconds=N     the stream ends cleanly (the terminating chunk) after N seconds.
      Selectors apply to events as the real server's watch cache applies them: a change that
      makes a pod match is sent as ADDED, one that makes it stop matching as DELETED (with
      the pod's new state); a change to a pod that matches neither before nor after is
      not sent.
  Anything else gets a 404 Status, a request without the expected bearer token a 401 Status;
  every answer that is not a watch has a Content-Length. SIGTERM ends every watch cleanly.

The store: the pods of PODS_JSON, read again every 50 ms and before each request (the whole
file, compared by content: mtimes are too coarse for two quick edits; a half-written file is
waited for). Each difference becomes an event with the next value of one global counter (the
resourceVersion, an integer string as etcd's revision): a new (namespace, name) is ADDED, a
changed record MODIFIED, a record gone (or marked "deleted": true) DELETED, a record whose
uid changed DELETED then ADDED. Each object carries the resourceVersion of its last change
(a DELETED event's object, that of its deletion). The last 1000 events are kept for watches
that resume and for the pages of a list.

usage: kubeapi.py DIR PORT TOKEN PODS_JSON
  writes DIR/ca.crt (the certificate to trust) and prints "listening" once it serves.
  PODS_JSON: [{"namespace":..,"name":..,"uid":..,"serviceAccountName":..,"nodeName":..,
               "podIP": (optional), "podIPs": [..] (optional; else [podIP] when it is set),
               "hostNetwork": true (optional), "phase": (optional; "Running" for a pod with
               an address, "Pending" for one without), "labels": {..} (optional; else
               {"app": name}), "hostIP": (optional; else the pod's own address for a
               host-network pod, 10.0.0.N for a node named nN as the test cluster's are),
               "creationTimestamp": (optional), "deleted": true (optional: as if absent)}]
  A record without serviceAccountName runs as "default" (as the ServiceAccount admission
  plugin sets it); one with null or "" has none in its spec.

Control, for the test harness, with nothing a real server would not have on the wire: write
one command (a line) to DIR/control (best written as DIR/control.tmp, then renamed); it is
read within 50 ms and the file removed once the command has taken effect, so a harness that
waits for the file to go knows it has.
  drop-watches         end every open watch stream at once (the terminating chunk, then the
                       connection closed), as an API server that restarts does.
  drop-watches abrupt  the same, but the connections are cut with no terminating chunk.
  compact              forget the kept history: a watch resuming from any resourceVersion
                       older than the current one gets the 410 ERROR event, a list's
                       continue token older than it 410 Expired (open watches go on:
                       they have been sent everything up to the current version).
  pause SECONDS        be down for that long: open watches end (as drop-watches), new
                       connections are closed as soon as accepted, requests on kept-alive
                       connections closed unanswered; then serve again.
"""

import base64
import collections
import datetime
import http.server
import json
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

POLL = 0.05
HISTORY = 1000
BOOKMARK_EVERY = 1.0
# The counter's first value: a real cluster's revisions are never small, and "0" means "any"
# to a client, so the state before the file is read is not version 0.
FIRST_VERSION = 1000


def log(message):
    sys.stderr.write("kubeapi: " + message + "\n")
    sys.stderr.flush()


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


def status(code, reason, message, details=None):
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def now_timestamp():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- Pods ---------------------------------------------------------------------------------


def desired(record):
    """What a record of PODS_JSON says of a pod, with its defaults: compared between reads to
    tell a change."""
    name = record["name"]
    pod_ips = record.get("podIPs")
    if pod_ips is None:
        pod_ips = [record["podIP"]] if record.get("podIP") else []
    host_network = bool(record.get("hostNetwork", False))
    host_ip = record.get("hostIP")
    if host_ip is None:
        if host_network and pod_ips:
            host_ip = pod_ips[0]
        else:
            match = re.fullmatch(r"n(\d+)", record.get("nodeName") or "")
            host_ip = f"10.0.0.{match.group(1)}" if match else None
    return {
        "namespace": record.get("namespace", "default"),
        "name": name,
        "uid": record["uid"],
        "serviceAccountName": record.get("serviceAccountName", "default") or None,
        "nodeName": record.get("nodeName") or None,
        "podIPs": list(pod_ips),
        "hostNetwork": host_network,
        "phase": record.get("phase") or ("Running" if pod_ips else "Pending"),
        "labels": record.get("labels", {"app": name}),
        "hostIP": host_ip,
        "creationTimestamp": record.get("creationTimestamp"),
    }


def pod_object(want, resource_version, created):
    """The Pod JSON a real API server returns (the usual fields of each part)."""
    spec = {
        "containers": [{
            "name": "app",
            "image": "registry.example/app:1",
            "resources": {},
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "imagePullPolicy": "IfNotPresent",
        }],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler",
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": 0,
    }
    if want["serviceAccountName"]:
        spec["serviceAccountName"] = want["serviceAccountName"]
        spec["serviceAccount"] = want["serviceAccountName"]
    if want["nodeName"]:
        spec["nodeName"] = want["nodeName"]
    if want["hostNetwork"]:
        spec["hostNetwork"] = True
    pod_status = {"phase": want["phase"], "qosClass": "BestEffort"}
    if want["hostIP"]:
        pod_status["hostIP"] = want["hostIP"]
        pod_status["hostIPs"] = [{"ip": want["hostIP"]}]
    if want["podIPs"]:
        pod_status["podIP"] = want["podIPs"][0]
        pod_status["podIPs"] = [{"ip": ip} for ip in want["podIPs"]]
    if want["nodeName"]:
        pod_status["startTime"] = created
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": want["name"],
            "namespace": want["namespace"],
            "uid": want["uid"],
            "resourceVersion": str(resource_version),
            "creationTimestamp": created,
            "labels": want["labels"],
        },
        "spec": spec,
        "status": pod_status,
    }


def key_of(obj):
    return obj["metadata"]["namespace"] + "/" + obj["metadata"]["name"]


# --- Selectors ----------------------------------------------------------------------------

FIELDS = {
    "metadata.name": lambda o: o["metadata"]["name"],
    "metadata.namespace": lambda o: o["metadata"]["namespace"],
    "spec.nodeName": lambda o: o["spec"].get("nodeName", ""),
    "spec.serviceAccountName": lambda o: o["spec"].get("serviceAccountName", ""),
    "spec.hostNetwork": lambda o: "true" if o["spec"].get("hostNetwork") else "false",
    "status.phase": lambda o: o["status"].get("phase", ""),
    "status.podIP": lambda o: o["status"].get("podIP", ""),
}


class BadRequest(Exception):
    pass


def requirements(text):
    """`k=v,k!=v,...` as (key, op, value) triples; BadRequest on anything else."""
    out = []
    for term in filter(None, (t.strip() for t in (text or "").split(","))):
        match = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*([^=!\s]*)", term)
        if match:
            key, op, value = match.groups()
            out.append((key, "!=" if op == "!=" else "=", value))
        elif re.fullmatch(r"!?[A-Za-z0-9._/-]+", term):
            out.append((term.lstrip("!"), "!" if term.startswith("!") else "exists", None))
        else:
            raise BadRequest(f"unable to parse requirement: {term!r}: only equality, "
                             "inequality and existence are served by this stand-in")
    return out


class Selector:
    def __init__(self, namespace, label_selector, field_selector):
        self.namespace = namespace
        self.labels = requirements(label_selector)
        self.fields = requirements(field_selector)
        for key, op, _ in self.fields:
            if op not in ("=", "!="):
                raise BadRequest(f"invalid field selector: {key!r}: a field needs a value")
            if key not in FIELDS:
                raise BadRequest(f"field label not supported: {key}")

    @property
    def filters(self):
        return bool(self.labels or self.fields)

    def matches(self, obj):
        if obj is None:
            return False
        if self.namespace is not None and obj["metadata"]["namespace"] != self.namespace:
            return False
        labels = obj["metadata"].get("labels") or {}
        for key, op, value in self.labels:
            if op == "exists" and key not in labels:
                return False
            if op == "!" and key in labels:
                return False
            if op == "=" and labels.get(key) != value:
                return False
            if op == "!=" and labels.get(key) == value:
                return False
        for key, op, value in self.fields:
            if (FIELDS[key](obj) == value) != (op == "="):
                return False
        return True

    def event(self, kind, prev, obj):
        """An event as a watcher with this selector sees it, or None."""
        was, now = self.matches(prev), self.matches(obj)
        if kind == "ADDED":
            return "ADDED" if now else None
        if kind == "DELETED":
            return "DELETED" if was else None
        if was and now:
            return "MODIFIED"
        if now:
            return "ADDED"
        if was:
            return "DELETED"
        return None


# --- The store ----------------------------------------------------------------------------


class Expired(Exception):
    pass


class Store:
    """The pods, their versions and the kept history of events, under one Condition that
    wakes the watchers."""

    def __init__(self, pods_file):
        self.pods_file = pods_file
        self.cond = threading.Condition()
        self.version = FIRST_VERSION
        self.oldest = FIRST_VERSION  # the history holds every event after this version
        self.objects = {}  # key -> Pod JSON
        self.wants = {}  # key -> desired(record)
        self.history = collections.deque()  # (rv, type, prev, obj)
        self.raw = None
        self.reading = threading.Lock()  # one reader at a time: never an older read applied last
        self.drops = 0  # bumped by drop-watches: each watcher ends when it changes
        self.abrupt = False
        self.closing = False
        self.paused_until = 0.0

    def refresh(self, wait=False):
        """Reads PODS_JSON; turns what changed into events. `wait`: a file that does not
        parse (being written) is read again for up to 0.5 s before the last state serves."""
        with self.reading:
            self._refresh(wait)

    def _refresh(self, wait):
        deadline = time.monotonic() + (0.5 if wait else 0)
        while True:
            try:
                with open(self.pods_file, "rb") as f:
                    raw = f.read()
                if raw == self.raw:
                    return
                records = json.loads(raw)
                wants = {}
                for record in records:
                    if record.get("deleted"):
                        continue
                    want = desired(record)
                    wants.setdefault(want["namespace"] + "/" + want["name"], want)
                break
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.01)
        with self.cond:
            if raw == self.raw:
                return
            self.raw = raw
            changed = False
            for key in sorted(set(self.wants) | set(wants)):
                old, new = self.wants.get(key), wants.get(key)
                if old == new:
                    continue
                if old is not None and (new is None or old["uid"] != new["uid"]):
                    self._record("DELETED", key, None)
                if new is not None:
                    self._record("MODIFIED" if key in self.objects else "ADDED", key, new)
                changed = True
            self.wants = wants
            if changed:
                self.cond.notify_all()

    def _record(self, kind, key, want):
        self.version += 1
        prev = self.objects.get(key)
        if want is None:
            obj = json.loads(json.dumps(prev))
            obj["metadata"]["resourceVersion"] = str(self.version)
            del self.objects[key]
        else:
            created = want["creationTimestamp"] or (
                prev["metadata"]["creationTimestamp"] if prev else now_timestamp())
            obj = pod_object(want, self.version, created)
            self.objects[key] = obj
        self.history.append((self.version, kind, prev, obj))
        while len(self.history) > HISTORY:
            self.oldest = self.history.popleft()[0]
        log(f"{self.version} {kind} {key}")

    def compact(self):
        with self.cond:
            self.history.clear()
            self.oldest = self.version
            self.cond.notify_all()

    def state_at(self, version):
        """{key: object} as of `version` (rebuilt from the kept history); call under cond."""
        if version < self.oldest:
            raise Expired()
        state = dict(self.objects)
        for rv, _, prev, obj in reversed(self.history):
            if rv <= version:
                break
            key = key_of(obj)
            if prev is None:
                state.pop(key, None)
            else:
                state[key] = prev
        return state

    def since(self, version):
        """The kept events after `version`; call under cond."""
        if version < self.oldest:
            raise Expired()
        return [e for e in self.history if e[0] > version]


# --- HTTP ---------------------------------------------------------------------------------


def encode_continue(version, last_key):
    token = json.dumps({"v": "meta.k8s.io/v1", "rv": version, "start": last_key + "\x00"})
    return base64.urlsafe_b64encode(token.encode()).decode()


def decode_continue(token):
    try:
        padded = token + "=" * (-len(token) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return int(body["rv"]), body["start"].rstrip("\x00")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BadRequest("continue key is not valid: incorrect encoded start resourceVersion "
                         "(version meta.k8s.io/v1)")


def make_handler(store, token):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, code, body):
            data = json.dumps(body, separators=(",", ":")).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def not_found(self, message="the server could not find the requested resource"):
            return self.answer(404, status(404, "NotFound", message))

        def do_GET(self):
            if time.monotonic() < store.paused_until:
                self.close_connection = True
                return
            if self.headers.get("Authorization") != "Bearer " + token:
                return self.answer(401, status(401, "Unauthorized", "Unauthorized"))
            path, _, query = self.path.partition("?")
            params = {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}
            parts = path.strip("/").split("/")
            store.refresh(wait=True)
            if parts == ["api", "v1", "pods"]:
                namespace = None
            elif len(parts) in (5, 6) and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
                namespace = parts[3]
            else:
                return self.not_found()
            try:
                if len(parts) == 6:
                    return self.get_pod(namespace, parts[5])
                selector = Selector(namespace, params.get("labelSelector"), params.get("fieldSelector"))
                if params.get("watch") in ("true", "1"):
                    return self.watch(selector, params)
                return self.list(selector, params)
            except BadRequest as e:
                return self.answer(400, status(400, "BadRequest", str(e)))

        def get_pod(self, namespace, name):
            with store.cond:
                obj = store.objects.get(namespace + "/" + name)
            if obj is None:
                return self.answer(404, status(404, "NotFound", f'pods "{name}" not found',
                                              {"name": name, "kind": "pods"}))
            return self.answer(200, obj)

        def list(self, selector, params):
            try:
                limit = int(params.get("limit") or 0)
            except ValueError:
                raise BadRequest("limit: invalid value")
            with store.cond:
                if params.get("continue"):
                    version, after = decode_continue(params["continue"])
                    try:
                        state = store.state_at(version)
                    except Expired:
                        return self.answer(410, status(
                            410, "Expired",
                            "The provided continue parameter is too old to display a "
                            "consistent list result. You can start a new list without the "
                            "continue parameter."))
                else:
                    version, after, state = store.version, None, dict(store.objects)
            keys = sorted(k for k in state if after is None or k > after)
            items = [state[k] for k in keys if selector.matches(state[k])]
            metadata = {"resourceVersion": str(version)}
            if limit > 0 and len(items) > limit:
                rest = len(items) - limit
                items = items[:limit]
                metadata["continue"] = encode_continue(version, key_of(items[-1]))
                if not selector.filters:
                    metadata["remainingItemCount"] = rest
            return self.answer(200, {"kind": "PodList", "apiVersion": "v1",
                                     "metadata": metadata, "items": items})

        def watch(self, selector, params):
            rv = params.get("resourceVersion") or ""
            initial = params.get("sendInitialEvents") == "true"
            bookmarks = params.get("allowWatchBookmarks") == "true"
            try:
                timeout = float(params.get("timeoutSeconds") or 1800)
                since = int(rv) if rv else 0
            except ValueError:
                raise BadRequest(f"invalid resource version: {rv}")
            deadline = time.monotonic() + timeout
            with store.cond:
                if since > store.version and not initial:
                    store.cond.wait_for(lambda: store.version >= since, timeout=3)
                    if since > store.version:
                        return self.answer(504, status(
                            504, "Timeout",
                            f"Too large resource version: {since}, current: {store.version}",
                            {"causes": [{"reason": "ResourceVersionTooLarge",
                                         "message": "Too large resource version"}],
                             "retryAfterSeconds": 1}))
                drops = store.drops
                expired = None
                pending = []
                if initial or since == 0:
                    cursor = store.version
                    for key in sorted(store.objects):
                        if selector.matches(store.objects[key]):
                            pending.append({"type": "ADDED", "object": store.objects[key]})
                    if initial:
                        pending.append(self.bookmark(cursor, {"k8s.io/initial-events-end": "true"}))
                elif since < store.oldest:
                    expired = status(410, "Expired",
                                     f"too old resource version: {since} ({store.version})")
                else:
                    cursor = since
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-cache, private")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                if expired:
                    self.chunk({"type": "ERROR", "object": expired})
                    return self.end_stream()
                last_sent = time.monotonic()
                while True:
                    for event in pending:
                        self.chunk(event)
                        last_sent = time.monotonic()
                    pending = []
                    with store.cond:
                        def woken():
                            return (store.version > cursor or store.drops != drops
                                    or store.closing or store.oldest > cursor)
                        wait = deadline - time.monotonic()
                        if bookmarks:
                            wait = min(wait, last_sent + BOOKMARK_EVERY - time.monotonic())
                        store.cond.wait_for(woken, timeout=max(wait, 0))
                        if store.drops != drops or store.closing:
                            if store.abrupt and not store.closing:
                                self.connection.shutdown(socket.SHUT_RDWR)
                                self.close_connection = True
                                return
                            self.close_connection = True
                            return self.end_stream()
                        if time.monotonic() >= deadline:
                            return self.end_stream()
                        try:
                            events = store.since(cursor)
                        except Expired:
                            expired = status(410, "Expired",
                                             f"too old resource version: {cursor} ({store.version})")
                            self.chunk({"type": "ERROR", "object": expired})
                            return self.end_stream()
                        for rv_, kind, prev, obj in events:
                            seen = selector.event(kind, prev, obj)
                            if seen:
                                pending.append({"type": seen, "object": obj})
                        if events:
                            cursor = events[-1][0]
                        if (not pending and bookmarks
                                and time.monotonic() - last_sent >= BOOKMARK_EVERY):
                            pending.append(self.bookmark(max(cursor, store.version)))
                            cursor = max(cursor, store.version)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                self.close_connection = True

        @staticmethod
        def bookmark(version, annotations=None):
            metadata = {"resourceVersion": str(version)}
            if annotations:
                metadata["annotations"] = annotations
            return {"type": "BOOKMARK",
                    "object": {"kind": "Pod", "apiVersion": "v1", "metadata": metadata}}

        def chunk(self, event):
            data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def end_stream(self):
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def log_message(self, fmt, *args):
            log(fmt % args)

    return Handler


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    store = None

    def verify_request(self, request, client_address):
        # Down (`pause`): an accepted connection is closed at once.
        return time.monotonic() >= self.store.paused_until

    def handle_error(self, request, client_address):
        log(f"connection from {client_address[0]}:{client_address[1]}: {sys.exc_info()[1]!r}")


def control(store, path):
    """DIR/control's command, if there is one; the file is removed once it took effect."""
    try:
        with open(path) as f:
            command = f.read().split()
    except FileNotFoundError:
        return
    if not command:
        return  # being written
    log("control: " + " ".join(command))
    with store.cond:
        if command[0] == "drop-watches":
            store.abrupt = command[1:] == ["abrupt"]
            store.drops += 1
        elif command[0] == "compact":
            store.history.clear()
            store.oldest = store.version
        elif command[0] == "pause" and len(command) == 2:
            store.paused_until = time.monotonic() + float(command[1])
            store.abrupt = False
            store.drops += 1
        else:
            log("control: unknown command " + " ".join(command))
        store.cond.notify_all()
    os.unlink(path)


def main():
    dir, port, token, pods_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    cert, key = serving_certificate(dir)
    store = Store(pods_file)
    store.refresh(wait=True)

    Server.store = store
    server = Server(("127.0.0.1", port), make_handler(store, token))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    # The handshake happens in the connection's own thread, not in the accepting one.
    server.socket = context.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)

    stop = threading.Event()

    def poll():
        control_file = os.path.join(dir, "control")
        while not stop.is_set():
            try:
                store.refresh()
                control(store, control_file)
            except Exception as e:  # keep polling whatever one round met
                log(f"poll: {e!r}")
            stop.wait(POLL)

    threading.Thread(target=poll, daemon=True).start()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print("listening", flush=True)
    while not stop.wait(1):
        pass
    with store.cond:
        store.closing = True
        store.cond.notify_all()
    server.shutdown()
    time.sleep(0.2)  # the watch threads write their terminating chunks


if __name__ == "__main__":
    main()
