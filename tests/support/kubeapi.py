#!/usr/bin/python3
"""A stand-in for the Kubernetes API server in tests/pods.rs, for the Pods, Services and
EndpointSlices listed in JSON files, over HTTPS (HTTP/1.1) with a certificate for 127.0.0.1
signed by a CA it makes itself. Kubernetes cannot run on the test machines; this speaks the
parts of the API the daemon uses as the real server does, with the real object shapes, so the
daemon needs no test-only path.

Resources, each with its own paths (PREFIX: /api/v1 for the core group, /apis/GROUP/VERSION
for another):

  resource         PREFIX                        kind, list kind                apiVersion
  pods             /api/v1                       Pod, PodList                   v1
  services         /api/v1                       Service, ServiceList           v1
  endpointslices   /apis/discovery.k8s.io/v1     EndpointSlice,                 discovery.k8s.io/v1
                                                 EndpointSliceList

  GET PREFIX/namespaces/<ns>/<resource>/<name>   one object; 404 Status `pods "x" not found`
                                                 (`endpointslices.discovery.k8s.io "x" not
                                                 found` for a group's), as the real server's
  GET PREFIX/<resource>                          a list of every namespace's objects
  GET PREFIX/namespaces/<ns>/<resource>          a list of one namespace's objects
      ?labelSelector=  k=v, k==v, k!=v, k, !k  (comma-separated, all must hold; set-based
                                                forms such as `k in (a,b)` get 400), e.g.
                                                kubernetes.io/service-name=NAME for slices
      ?fieldSelector=  metadata.name and metadata.namespace for every resource; for pods
                       also spec.nodeName, spec.serviceAccountName, spec.hostNetwork,
                       status.phase, status.podIP; with =, == or != (comma-separated; another
                       field gets 400 "field label not supported: <field>", as the real server
                       says)
      ?limit=N&continue=TOKEN  pages in key order (namespace/name, as etcd's keys sort);
                       metadata.continue names the next page, metadata.remainingItemCount is
                       set when no selector filters. A token holds the list's resourceVersion
                       and the last key: later pages are the same snapshot (rebuilt from the
                       kept history); once that history is gone (see `compact`), 410 Expired.
      resourceVersion / resourceVersionMatch on a list are accepted and ignored: a list is
                       always the current state (which satisfies "0", "NotOlderThan" and a
                       resourceVersion that is the current one).
  The list paths with ?watch=true (or 1): a watch of that resource only. HTTP 200,
  Transfer-Encoding: chunked, Content-Type: application/json, one chunk per event, each a
  JSON line
      {"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{...}}
  whose object carries its kind and apiVersion.
      resourceVersion=RV   every kept event of the resource after RV, then live ones. RV older
                           than the kept history (at start, or after `compact`) gets, as the
                           real server does, HTTP 200 then one event and the end of the stream:
                           {"type":"ERROR","object":{"kind":"Status","apiVersion":"v1",
                            "metadata":{},"status":"Failure","message":"too old resource
                            version: RV (CURRENT)","reason":"Expired","code":410}}
                           RV newer than the current one is waited for up to 3 s, then 504
                           (reason Timeout, "Too large resource version").
      none, or "0"         ADDED for every current object first, then live events.
      sendInitialEvents=true  (streaming lists) ADDED for every current object, then a
                           BOOKMARK annotated "k8s.io/initial-events-end": "true", then live
                           events.
      allowWatchBookmarks=true  a BOOKMARK, {"kind":KIND,"apiVersion":APIVERSION,"metadata":
                           {"resourceVersion":"CURRENT"}}, after each second without events.
      timeoutSeconds=N     the stream ends cleanly (the terminating chunk) after N seconds.
      Selectors apply to events as the real server's watch cache applies them: a change that
      makes an object match is sent as ADDED, one that makes it stop matching as DELETED
      (with the object's new state); a change to an object that matches neither before nor
      after is not sent.
  Anything else gets a 404 Status, a request without the expected bearer token a 401 Status;
  every answer that is not a watch has a Content-Length. SIGTERM ends every watch cleanly.

The store: the objects of PODS_JSON, SERVICES_JSON and SLICES_JSON, each file read again
every 50 ms and before each request (the whole file, compared by content: mtimes are too
coarse for two quick edits; a half-written file is waited for; a file whose JSON parses but
holds a record that cannot be served, e.g. one without its uid, is logged and its last good
state kept). Each difference becomes an event with the next value of one global counter,
shared by every resource as etcd's revision is (the resourceVersion, an integer string): a
new (namespace, name) is ADDED, a changed record MODIFIED, a record gone (or marked "deleted":
true) DELETED, a record whose uid changed DELETED then ADDED. Each object carries the
resourceVersion of its last change (a DELETED event's object, that of its deletion). The last
1000 events of all resources together are kept, for watches that resume and for the pages of
a list; a watch or list sees only its own resource's.

usage: kubeapi.py DIR PORT TOKEN PODS_JSON [SERVICES_JSON [SLICES_JSON]]
  writes DIR/ca.crt (the certificate to trust) and prints "listening" once it serves.
  PODS_JSON: records (not Pod objects), [{"namespace":..,"name":..,"uid":..,
               "serviceAccountName":..,"nodeName":..,
               "podIP": (optional), "podIPs": [..] (optional; else [podIP] when it is set),
               "hostNetwork": true (optional), "phase": (optional; "Running" for a pod with
               an address, "Pending" for one without), "labels": {..} (optional; else
               {"app": name}), "hostIP": (optional; else the pod's own address for a
               host-network pod, 10.0.0.N for a node named nN as the test cluster's are),
               "creationTimestamp": (optional), "deleted": true (optional: as if absent)}]
    A record without serviceAccountName runs as "default" (as the ServiceAccount admission
    plugin sets it); one with null or "" has none in its spec.
  SERVICES_JSON, SLICES_JSON (optional; without them there are no Services, no
  EndpointSlices, and their lists and watches answer empty): the objects themselves, as a
  user writes them, [{"metadata":{"namespace":..,"name":..,"uid":..,"labels":{..}},
  "spec":{..}}, ..] for Services, [{"metadata":{..},"addressType":"IPv4","endpoints":[{
  "addresses":[..],"conditions":{"ready":..,"serving":..,"terminating":..},"nodeName":..,
  "zone":..,"targetRef":{..},"hints":{"forZones":[{"name":..}]}}],"ports":[{"name":..,
  "port":..,"protocol":..}]}, ..] for EndpointSlices. metadata.name and metadata.uid are
  required (nothing is generated), metadata.namespace is "default" when absent, and "deleted":
  true beside "metadata" makes the record absent. The stand-in sets apiVersion and kind,
  metadata.resourceVersion (that of the object's last change) and metadata.creationTimestamp
  (when it was first seen, unless the record has one), and fills in what the API server's
  defaulting would:
    Service: spec.type "ClusterIP", spec.sessionAffinity "None", each port's protocol "TCP"
      and targetPort (= its port), status {"loadBalancer":{}}; unless the type is
      ExternalName: spec.internalTrafficPolicy "Cluster", spec.clusterIPs [clusterIP] (or
      clusterIP clusterIPs[0]), spec.ipFamilies from those addresses ("None", headless:
      ["IPv4"] with a selector, ["IPv4","IPv6"] without, as a dual-stack cluster whose first
      service range is IPv4 does), spec.ipFamilyPolicy "SingleStack" for one family,
      "RequireDualStack" for two; for NodePort and LoadBalancer, spec.externalTrafficPolicy
      "Cluster". No cluster IP or node port is allocated: a Service without spec.clusterIP
      has none.
    EndpointSlice: addressType is required; each port's name "" and protocol "TCP";
      each endpoint's conditions {} when absent; endpoints and ports that are absent or empty
      are null, as the real server (which stores them in protobuf) returns them.
  What the record says is otherwise served as it is, and compared by content (after these
  defaults) to tell a change.

Control, for the test harness, with nothing a real server would not have on the wire: write
one command (a line) to DIR/control (best written as DIR/control.tmp, then renamed); it is
read within 50 ms and the file removed once the command has taken effect, so a harness that
waits for the file to go knows it has. The source files are read again (a half-written one
waited for) before a command is taken: it applies to every edit the harness finished before
writing it.
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
import ipaddress
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
# to a client, so the state before the files are read is not version 0.
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

# The fields a field selector may name: every resource's, and a Pod's own.
META_FIELDS = {
    "metadata.name": lambda o: o["metadata"]["name"],
    "metadata.namespace": lambda o: o["metadata"]["namespace"],
}
POD_FIELDS = {
    **META_FIELDS,
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
    def __init__(self, kind, namespace, label_selector, field_selector):
        self.kind = kind
        self.namespace = namespace
        self.labels = requirements(label_selector)
        self.fields = requirements(field_selector)
        for key, op, _ in self.fields:
            if op not in ("=", "!="):
                raise BadRequest(f"invalid field selector: {key!r}: a field needs a value")
            if key not in kind.fields:
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
            if (self.kind.fields[key](obj) == value) != (op == "="):
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


# --- Services and EndpointSlices ----------------------------------------------------------

# What a record says of an object, with its defaults: compared between reads to tell a change.
Want = collections.namedtuple("Want", "key uid created body")


class BadRecord(Exception):
    """A record that parses as JSON but cannot be served (logged; the file's last good state
    serves)."""


def ip_family(address):
    try:
        return "IPv6" if ipaddress.ip_address(address).version == 6 else "IPv4"
    except ValueError:
        raise BadRecord(f"not an IP address: {address!r}")


def object_desired(record, kind):
    """The object a record of SERVICES_JSON or SLICES_JSON stands for, without what the store
    sets (kind, apiVersion, resourceVersion), and the name to complain with: a deep copy,
    checked."""
    if not isinstance(record, dict) or not isinstance(record.get("metadata"), dict):
        raise BadRecord(f"a {kind} record that is not an object with metadata")
    what = f"{kind} {record['metadata'].get('name')!r}"
    body = json.loads(json.dumps(record))
    for server_set in ("deleted", "kind", "apiVersion"):
        body.pop(server_set, None)
    metadata = body["metadata"]
    for required in ("name", "uid"):
        if not isinstance(metadata.get(required), str) or not metadata[required]:
            raise BadRecord(f"{what}: metadata.{required} is required")
    metadata.setdefault("namespace", "default")
    metadata.pop("resourceVersion", None)
    return body, what


def object_want(body):
    """The Want of a Service's or EndpointSlice's completed body."""
    metadata = body["metadata"]
    created = metadata.pop("creationTimestamp", None)
    return Want(metadata["namespace"] + "/" + metadata["name"], metadata["uid"], created, body)


def service_desired(record):
    body, what = object_desired(record, "Service")
    spec = body.setdefault("spec", {})
    if not isinstance(spec, dict):
        raise BadRecord(f"{what}: spec is not an object")
    kind = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        if not isinstance(port, dict) or "port" not in port:
            raise BadRecord(f"{what}: a port without its port number")
        port.setdefault("protocol", "TCP")
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port["port"]
    if kind != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
        if kind in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        if spec.get("clusterIP") and not spec.get("clusterIPs"):
            spec["clusterIPs"] = [spec["clusterIP"]]
        elif spec.get("clusterIPs") and not spec.get("clusterIP"):
            spec["clusterIP"] = spec["clusterIPs"][0]
        addresses = spec.get("clusterIPs") or []
        if "ipFamilies" not in spec:
            if addresses == ["None"]:
                # Headless: the first service range's family with a selector, both without.
                families = ["IPv4"] if spec.get("selector") else ["IPv4", "IPv6"]
            else:
                families = [ip_family(a) for a in addresses]
            if families:
                spec["ipFamilies"] = families
        if "ipFamilyPolicy" not in spec and spec.get("ipFamilies"):
            spec["ipFamilyPolicy"] = ("SingleStack" if len(spec["ipFamilies"]) == 1
                                      else "RequireDualStack")
    body.setdefault("status", {"loadBalancer": {}})
    return object_want(body)


def slice_desired(record):
    body, what = object_desired(record, "EndpointSlice")
    if not body.get("addressType"):
        raise BadRecord(f"{what}: addressType is required")
    endpoints = body.get("endpoints") or None
    for endpoint in endpoints or []:
        if not isinstance(endpoint, dict) or not endpoint.get("addresses"):
            raise BadRecord(f"{what}: an endpoint without addresses")
        endpoint.setdefault("conditions", {})
    ports = body.get("ports") or None
    for port in ports or []:
        if not isinstance(port, dict):
            raise BadRecord(f"{what}: a port that is not an object")
        port.setdefault("name", "")
        port.setdefault("protocol", "TCP")
    body["endpoints"] = endpoints
    body["ports"] = ports
    return object_want(body)


def object_of(kind, body, resource_version, created):
    """The served object: the record's body with what the API server sets."""
    body = json.loads(json.dumps(body))
    metadata = body.pop("metadata")
    head = {key: metadata.pop(key) for key in ("name", "namespace", "uid")}
    head["resourceVersion"] = str(resource_version)
    head["creationTimestamp"] = created
    return {"kind": kind.kind, "apiVersion": kind.api_version,
            "metadata": {**head, **metadata}, **body}


# --- Resources ----------------------------------------------------------------------------


class Kind:
    """One resource the stand-in serves: its paths, its object and list shapes, the fields a
    selector may name, and how a file's record becomes an object."""

    def __init__(self, resource, kind, api_version, fields, desired, build):
        self.resource = resource
        self.kind = kind
        self.api_version = api_version
        self.list_kind = kind + "List"
        self.group, _, version = api_version.rpartition("/")  # group "" for the core group
        self.prefix = ["apis", self.group, version] if self.group else ["api", version]
        self.fields = fields
        self.want = desired  # a file's record -> Want
        self._build = build

    def build(self, want, resource_version, created):
        """The served object of a Want, at a version, first seen at `created`."""
        return self._build(self, want.body, resource_version, created)

    def not_found(self, name):
        qualified = self.resource + ("." + self.group if self.group else "")
        details = {"name": name, "kind": self.resource}
        if self.group:
            details["group"] = self.group
        return status(404, "NotFound", f'{qualified} "{name}" not found', details)


def pod_want(record):
    want = desired(record)
    key = want["namespace"] + "/" + want["name"]
    return Want(key, want["uid"], want["creationTimestamp"], want)


def pod_build(kind, want, resource_version, created):
    return pod_object(want, resource_version, created)


# Every resource served, in the order of their files on the command line.
KINDS = {
    kind.resource: kind
    for kind in (
        Kind("pods", "Pod", "v1", POD_FIELDS, pod_want, pod_build),
        Kind("services", "Service", "v1", META_FIELDS, service_desired, object_of),
        Kind("endpointslices", "EndpointSlice", "discovery.k8s.io/v1", META_FIELDS,
             slice_desired, object_of),
    )
}


# --- The store ----------------------------------------------------------------------------


class Expired(Exception):
    pass


class Source:
    """One file of records, for one resource: what it said when last read."""

    def __init__(self, kind, path):
        self.kind = kind
        self.path = path  # None: no file, no objects
        self.raw = None
        self.wants = {}  # key -> Want
        self.complained = None  # the content last logged as unservable


class Store:
    """Every resource's objects, the one version counter and the kept history of events
    (of all resources, as etcd's), under one Condition that wakes the watchers."""

    def __init__(self, sources):
        self.sources = sources
        self.cond = threading.Condition()
        self.version = FIRST_VERSION
        self.oldest = FIRST_VERSION  # the history holds every event after this version
        self.objects = {kind.resource: {} for kind in KINDS.values()}  # resource -> key -> JSON
        self.history = collections.deque()  # (rv, resource, type, prev, obj)
        self.reading = threading.Lock()  # one reader at a time: never an older read applied last
        self.drops = 0  # bumped by drop-watches: each watcher ends when it changes
        self.abrupt = False
        self.closing = False
        self.paused_until = 0.0

    def refresh(self, wait=False):
        """Reads every source file; turns what changed into events. `wait`: a file that does
        not parse (being written) is read again for up to 0.5 s before its last state
        serves."""
        with self.reading:
            for source in self.sources:
                self._refresh(source, wait)

    def _refresh(self, source, wait):
        if source.path is None:
            return
        deadline = time.monotonic() + (0.5 if wait else 0)
        while True:
            raw = None
            try:
                with open(source.path, "rb") as f:
                    raw = f.read()
                if raw == source.raw:
                    return
                records = json.loads(raw)
                wants = {}
                for record in records:
                    if isinstance(record, dict) and record.get("deleted"):
                        continue
                    want = source.kind.want(record)
                    wants.setdefault(want.key, want)
                break
            except BadRecord as e:
                if raw != source.complained:
                    source.complained = raw
                    log(f"{source.path}: {e}; its last good state serves")
                return
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.01)
        with self.cond:
            if raw == source.raw:
                return
            source.raw = raw
            changed = False
            for key in sorted(set(source.wants) | set(wants)):
                old, new = source.wants.get(key), wants.get(key)
                if old == new:
                    continue
                if old is not None and (new is None or old.uid != new.uid):
                    self._record(source.kind, "DELETED", key, None)
                if new is not None:
                    exists = key in self.objects[source.kind.resource]
                    self._record(source.kind, "MODIFIED" if exists else "ADDED", key, new)
                changed = True
            source.wants = wants
            if changed:
                self.cond.notify_all()

    def _record(self, kind, change, key, want):
        self.version += 1
        objects = self.objects[kind.resource]
        prev = objects.get(key)
        if want is None:
            obj = json.loads(json.dumps(prev))
            obj["metadata"]["resourceVersion"] = str(self.version)
            del objects[key]
        else:
            created = want.created or (
                prev["metadata"]["creationTimestamp"] if prev else now_timestamp())
            obj = kind.build(want, self.version, created)
            objects[key] = obj
        self.history.append((self.version, kind.resource, change, prev, obj))
        while len(self.history) > HISTORY:
            self.oldest = self.history.popleft()[0]
        log(f"{self.version} {change} {kind.resource} {key}")

    def compact(self):
        with self.cond:
            self.history.clear()
            self.oldest = self.version
            self.cond.notify_all()

    def state_at(self, kind, version):
        """{key: object} of one resource as of `version` (rebuilt from the kept history);
        call under cond."""
        if version < self.oldest:
            raise Expired()
        state = dict(self.objects[kind.resource])
        for rv, resource, _, prev, obj in reversed(self.history):
            if rv <= version:
                break
            if resource != kind.resource:
                continue
            key = key_of(obj)
            if prev is None:
                state.pop(key, None)
            else:
                state[key] = prev
        return state

    def since(self, version):
        """The kept events (of every resource) after `version`; call under cond."""
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


def route(parts):
    """(kind, namespace or None, name or None) for a path's parts, or None: not served."""
    for kind in KINDS.values():
        rest = parts[len(kind.prefix):]
        if parts[:len(kind.prefix)] != kind.prefix:
            continue
        if rest == [kind.resource]:
            return kind, None, None
        if len(rest) in (3, 4) and rest[0] == "namespaces" and rest[2] == kind.resource:
            return kind, rest[1], rest[3] if len(rest) == 4 else None
    return None


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
            store.refresh(wait=True)
            found = route(path.strip("/").split("/"))
            if found is None:
                return self.not_found()
            kind, namespace, name = found
            try:
                if name is not None:
                    return self.get_one(kind, namespace, name)
                selector = Selector(kind, namespace, params.get("labelSelector"),
                                    params.get("fieldSelector"))
                if params.get("watch") in ("true", "1"):
                    return self.watch(selector, params)
                return self.list(selector, params)
            except BadRequest as e:
                return self.answer(400, status(400, "BadRequest", str(e)))

        def get_one(self, kind, namespace, name):
            with store.cond:
                obj = store.objects[kind.resource].get(namespace + "/" + name)
            if obj is None:
                return self.answer(404, kind.not_found(name))
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
                        state = store.state_at(selector.kind, version)
                    except Expired:
                        return self.answer(410, status(
                            410, "Expired",
                            "The provided continue parameter is too old to display a "
                            "consistent list result. You can start a new list without the "
                            "continue parameter."))
                else:
                    version, after = store.version, None
                    state = dict(store.objects[selector.kind.resource])
            keys = sorted(k for k in state if after is None or k > after)
            items = [state[k] for k in keys if selector.matches(state[k])]
            metadata = {"resourceVersion": str(version)}
            if limit > 0 and len(items) > limit:
                rest = len(items) - limit
                items = items[:limit]
                metadata["continue"] = encode_continue(version, key_of(items[-1]))
                if not selector.filters:
                    metadata["remainingItemCount"] = rest
            return self.answer(200, {"kind": selector.kind.list_kind,
                                     "apiVersion": selector.kind.api_version,
                                     "metadata": metadata, "items": items})

        def watch(self, selector, params):
            kind = selector.kind
            objects = store.objects[kind.resource]
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
                    for key in sorted(objects):
                        if selector.matches(objects[key]):
                            pending.append({"type": "ADDED", "object": objects[key]})
                    if initial:
                        pending.append(self.bookmark(kind, cursor,
                                                     {"k8s.io/initial-events-end": "true"}))
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
                        for _, resource, change, prev, obj in events:
                            if resource != kind.resource:
                                continue  # the counter is shared, not the events
                            seen = selector.event(change, prev, obj)
                            if seen:
                                pending.append({"type": seen, "object": obj})
                        if events:
                            cursor = events[-1][0]
                        if (not pending and bookmarks
                                and time.monotonic() - last_sent >= BOOKMARK_EVERY):
                            pending.append(self.bookmark(kind, max(cursor, store.version)))
                            cursor = max(cursor, store.version)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                self.close_connection = True

        @staticmethod
        def bookmark(kind, version, annotations=None):
            metadata = {"resourceVersion": str(version)}
            if annotations:
                metadata["annotations"] = annotations
            return {"type": "BOOKMARK", "object": {"kind": kind.kind, "apiVersion": kind.api_version,
                                                   "metadata": metadata}}

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
    # An edit finished before the command was written may have been read half-written (and
    # skipped) in this same poll round: read the files again, so that `compact` after an edit
    # forgets the edit's event too instead of leaving it for the next round.
    store.refresh(wait=True)
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
    if not 5 <= len(sys.argv) <= 7:
        sys.exit("usage: kubeapi.py DIR PORT TOKEN PODS_JSON [SERVICES_JSON [SLICES_JSON]]")
    dir, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    files = sys.argv[4:] + [None] * (7 - len(sys.argv))
    cert, key = serving_certificate(dir)
    store = Store([Source(kind, path) for kind, path in zip(KINDS.values(), files)])
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
