#!/usr/bin/python3
"""A quick check of kubeapi.py's list+watch protocol, by hand: starts it on a free port with
a temporary PODS_JSON, SERVICES_JSON and SLICES_JSON and drives it over TLS as a client would
(list pages, watch, edits of the files, bookmarks, compaction, dropped watches, a pause; the
Service and EndpointSlice shapes, and each watch seeing its own resource's events only while
the resourceVersion counter is one). Exits nonzero on failure.

usage: python3 tests/support/kubeapi_selftest.py
"""

import http.client
import json
import os
import queue
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN = "T"


def pod(name, sa, ip=None, ns="shop", node="n1", **extra):
    record = {"namespace": ns, "name": name, "uid": f"uid-{ns}-{name}",
              "serviceAccountName": sa, "nodeName": node}
    if ip:
        record["podIP"] = ip
    record.update(extra)
    return record


def service(name, cluster_ip, ns="shop", **spec):
    """A Service as a user writes it (the stand-in fills in the server's defaults)."""
    return {"metadata": {"namespace": ns, "name": name, "uid": f"svc-{ns}-{name}",
                         "labels": {"app": name}},
            "spec": {"selector": {"app": name}, "clusterIP": cluster_ip,
                     "ports": [{"name": "http", "port": 80}], **spec}}


def endpoint_slice(name, service_name, addresses, ns="shop", address_type="IPv4"):
    """An EndpointSlice as the EndpointSlice controller writes one (ports' protocol left to
    the defaults)."""
    return {"metadata": {"namespace": ns, "name": name, "uid": f"eps-{ns}-{name}",
                         "labels": {"kubernetes.io/service-name": service_name,
                                    "endpointslice.kubernetes.io/managed-by":
                                        "endpointslice-controller.k8s.io"}},
            "addressType": address_type,
            "endpoints": [{"addresses": [address],
                           "conditions": {"ready": True, "serving": True, "terminating": False},
                           "nodeName": "n1", "zone": "z1",
                           "targetRef": {"kind": "Pod", "namespace": ns, "name": f"{service_name}-{i}",
                                         "uid": f"uid-{ns}-{service_name}-{i}"},
                           "hints": {"forZones": [{"name": "z1"}]}}
                          for i, address in enumerate(addresses)],
            "ports": [{"name": "http", "port": 8080}]}


class Stand:
    def __init__(self, tmp):
        self.dir = tmp
        self.pods = os.path.join(tmp, "pods.json")
        self.services = os.path.join(tmp, "services.json")
        self.slices = os.path.join(tmp, "slices.json")
        self.write([pod("a", "sa-a", "10.1.1.2"), pod("b", "sa-b", "10.1.1.3"),
                    pod("c", "sa-c", ns="bank", node="n2"),
                    pod("host", "mon", "10.0.0.1", ns="kube-system", hostNetwork=True)])
        self.write([service("web", "10.96.0.10"),
                    service("db", "10.96.0.20", ns="bank",
                            clusterIPs=["10.96.0.20", "fd00:96::20"]),
                    service("peers", "None")], self.services)
        self.write([endpoint_slice("web-4x7kq", "web", ["10.1.1.2"]),
                    endpoint_slice("web-9dfzm", "web", ["fd01:1::2"], address_type="IPv6"),
                    endpoint_slice("db-2mxlp", "db", ["10.1.2.7"], ns="bank"),
                    {"metadata": {"namespace": "shop", "name": "peers-8vq2n", "uid": "eps-shop-peers",
                                  "labels": {"kubernetes.io/service-name": "peers"}},
                     "addressType": "IPv4"}], self.slices)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "kubeapi.py"), tmp, str(self.port), TOKEN,
             self.pods, self.services, self.slices],
            stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "stderr"), "w"), text=True)
        assert self.proc.stdout.readline().strip() == "listening"
        self.ctx = ssl.create_default_context(cafile=os.path.join(tmp, "ca.crt"))

    def write(self, records, path=None, **dump):
        with open(path or self.pods, "w") as f:
            json.dump(records, f, **dump)

    def read(self, path=None):
        with open(path or self.pods) as f:
            return json.load(f)

    def control(self, command):
        tmp = os.path.join(self.dir, "control.tmp")
        with open(tmp, "w") as f:
            f.write(command + "\n")
        os.rename(tmp, os.path.join(self.dir, "control"))
        for _ in range(200):
            if not os.path.exists(os.path.join(self.dir, "control")):
                return
            time.sleep(0.01)
        raise AssertionError(f"control {command!r} not taken")

    def connection(self, timeout=10):
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=timeout)

    def get(self, path, token=TOKEN, conn=None):
        conn = conn or self.connection()
        conn.request("GET", path, headers={"Authorization": "Bearer " + token})
        resp = conn.getresponse()
        assert resp.getheader("Content-Length") is not None, path
        return resp.status, json.loads(resp.read())

    def watch(self, query, path="/api/v1/pods"):
        return Watch(self, query, path)


class Watch:
    """A watch stream read on a thread: its events in a queue, None at a clean end, "cut" when
    the connection ended without the terminating chunk."""

    def __init__(self, stand, query, path):
        self.conn = stand.connection(timeout=30)
        self.conn.request("GET", path + "?watch=true&" + query,
                          headers={"Authorization": "Bearer " + TOKEN})
        self.resp = self.conn.getresponse()
        self.sock = self.conn.sock
        assert self.resp.status == 200, self.resp.status
        assert self.resp.getheader("Transfer-Encoding") == "chunked"
        assert self.resp.getheader("Content-Type") == "application/json"
        self.events = queue.Queue()
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        fp = self.resp.fp
        try:
            while True:
                size = int(fp.readline().strip(), 16)
                if size == 0:
                    fp.readline()
                    self.events.put(None)
                    return
                data = fp.read(size)
                assert fp.read(2) == b"\r\n"
                assert data.endswith(b"\n") and data.count(b"\n") == 1, data
                self.events.put(json.loads(data))
        except Exception:
            self.events.put("cut")

    def close(self):
        # A shutdown first: it wakes the reading thread, which holds the response's buffer
        # (conn.close() alone would wait for that read to time out).
        self.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()

    def end(self, timeout=3):
        """The way the stream ended (None: the terminating chunk; "cut"), past any events."""
        while True:
            event = self.next(timeout=timeout)
            if event is None or event == "cut":
                return event

    def next(self, timeout=5, skip_bookmarks=True):
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(deadline - time.monotonic(), 0.01))
            if skip_bookmarks and isinstance(event, dict) and event["type"] == "BOOKMARK":
                continue
            return event


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        stand = Stand(tmp)
        try:
            run(stand)
        except Exception:
            with open(os.path.join(tmp, "stderr")) as f:
                sys.stderr.write(f.read()[-4000:])
            raise
        finally:
            stand.proc.terminate()
            stand.proc.wait(5)
    print("all passed")


def run(stand):
    # Today's calls.
    code, body = stand.get("/api/v1/namespaces/shop/pods/a")
    check(code == 200 and body["kind"] == "Pod" and body["spec"]["serviceAccountName"] == "sa-a"
          and body["status"]["podIPs"] == [{"ip": "10.1.1.2"}] and body["status"]["phase"] == "Running",
          "GET a pod: the Pod's shape")
    code, body = stand.get("/api/v1/namespaces/shop/pods/nope")
    check(code == 404 and body["reason"] == "NotFound" and body["message"] == 'pods "nope" not found',
          "an unknown pod: 404 Status")
    code, body = stand.get("/api/v1/pods", token="wrong")
    check(code == 401 and body["kind"] == "Status", "a wrong token: 401 Status")
    code, body = stand.get("/apis/apps/v1/deployments")
    check(code == 404, "an unknown path: 404")
    code, body = stand.get("/api/v1/pods?fieldSelector=status.podIP%3D10.1.1.3")
    check(code == 200 and [p["metadata"]["name"] for p in body["items"]] == ["b"],
          "the pods at an address (fieldSelector status.podIP)")
    code, body = stand.get("/api/v1/pods?fieldSelector=spec.nodeName%3Dn2")
    check([p["metadata"]["name"] for p in body["items"]] == ["c"], "fieldSelector spec.nodeName")
    code, body = stand.get("/api/v1/pods?labelSelector=app%3Da")
    check([p["metadata"]["name"] for p in body["items"]] == ["a"], "labelSelector app=a")
    code, body = stand.get("/api/v1/pods?fieldSelector=spec.bogus%3Dx")
    check(code == 400 and body["message"] == "field label not supported: spec.bogus",
          "an unsupported field: 400 Status")
    code, body = stand.get("/api/v1/namespaces/shop/pods")
    check([p["metadata"]["name"] for p in body["items"]] == ["a", "b"], "a namespace's list")
    code, body = stand.get("/api/v1/namespaces/kube-system/pods/host")
    check(body["spec"]["hostNetwork"] is True and body["status"]["hostIP"] == "10.0.0.1",
          "a host-network pod")

    # Pages, on one kept-alive connection.
    conn = stand.connection()
    names, token, rvs = [], "", set()
    while True:
        code, body = stand.get("/api/v1/pods?limit=2&resourceVersion=0"
                               + (f"&continue={token}" if token else ""), conn=conn)
        names += [p["metadata"]["namespace"] + "/" + p["metadata"]["name"] for p in body["items"]]
        rvs.add(body["metadata"]["resourceVersion"])
        token = body["metadata"].get("continue")
        if not token:
            break
    check(names == ["bank/c", "kube-system/host", "shop/a", "shop/b"] and len(rvs) == 1,
          f"limit=2 + continue: every pod once, in key order, one resourceVersion ({names})")
    list_rv = int(rvs.pop())

    # Watch from the list's version; edits of the file become events.
    watch = stand.watch(f"resourceVersion={list_rv}&allowWatchBookmarks=true&timeoutSeconds=60")
    records = stand.read()
    records[0]["serviceAccountName"] = "sa-a2"
    stand.write(records)
    e = watch.next()
    check(e["type"] == "MODIFIED" and e["object"]["spec"]["serviceAccountName"] == "sa-a2"
          and int(e["object"]["metadata"]["resourceVersion"]) > list_rv, "a changed record: MODIFIED")
    rv1 = int(e["object"]["metadata"]["resourceVersion"])
    stand.write(stand.read() + [pod("d", "sa-d", "10.1.1.9")])
    e = watch.next()
    check(e["type"] == "ADDED" and e["object"]["metadata"]["name"] == "d"
          and int(e["object"]["metadata"]["resourceVersion"]) > rv1, "a new record: ADDED")
    rv2 = int(e["object"]["metadata"]["resourceVersion"])
    stand.write([r for r in stand.read() if r["name"] != "b"])
    e = watch.next()
    check(e["type"] == "DELETED" and e["object"]["metadata"]["name"] == "b"
          and int(e["object"]["metadata"]["resourceVersion"]) > rv2, "a removed record: DELETED")
    rv3 = int(e["object"]["metadata"]["resourceVersion"])
    e = watch.next(skip_bookmarks=False, timeout=3)
    check(e["type"] == "BOOKMARK" and e["object"]["metadata"]["resourceVersion"] == str(rv3)
          and e["object"]["kind"] == "Pod", "idle: a BOOKMARK at the current version")

    # Resuming from an older version replays the kept events.
    resumed = stand.watch(f"resourceVersion={list_rv}")
    kinds = [resumed.next()["type"] for _ in range(3)]
    check(kinds == ["MODIFIED", "ADDED", "DELETED"], "a resume replays the history")
    resumed.close()

    # Without a version: ADDED for every pod first.
    fresh = stand.watch("fieldSelector=metadata.namespace%3Dshop")
    names = sorted(fresh.next()["object"]["metadata"]["name"] for _ in range(2))
    check(names == ["a", "d"], "a watch without a version starts with ADDED for each pod")
    records = stand.read()
    for r in records:
        if r["name"] == "d":
            r["namespace"] = "elsewhere"
    stand.write(records)
    e = fresh.next()
    check(e["type"] == "DELETED" and e["object"]["metadata"]["name"] == "d",
          "a pod leaving the selector (another namespace, so another pod): DELETED for the watcher")

    # A change that makes a pod match a label selector: ADDED for that watcher.
    labelled = stand.watch("labelSelector=tier%3Dback&allowWatchBookmarks=true")
    check(labelled.next(skip_bookmarks=False)["type"] == "BOOKMARK", "no pod matches yet: only bookmarks")
    records = stand.read()
    records[0]["labels"] = {"app": "a", "tier": "back"}
    stand.write(records)
    e = labelled.next()
    check(e["type"] == "ADDED" and e["object"]["metadata"]["name"] == "a",
          "a pod that comes to match the selector: ADDED for the watcher")
    records[0]["labels"] = {"app": "a"}
    stand.write(records)
    e = labelled.next()
    check(e["type"] == "DELETED" and e["object"]["metadata"]["labels"] == {"app": "a"},
          "... and one that stops matching: DELETED, with its new state")
    labelled.close()

    # Streaming list.
    streaming = stand.watch("sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true")
    events = [streaming.next(skip_bookmarks=False) for _ in range(5)]
    check([e["type"] for e in events] == ["ADDED"] * 4 + ["BOOKMARK"]
          and events[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"},
          "sendInitialEvents: ADDED each, then the initial-events-end BOOKMARK")
    streaming.close()

    # timeoutSeconds ends the stream cleanly.
    short = stand.watch("timeoutSeconds=1")
    check(short.end(timeout=5) is None, "timeoutSeconds: the terminating chunk")

    run_services(stand)

    # compact: an old version is gone: 200, then the 410 ERROR event, then the end.
    stand.control("compact")
    old = stand.watch(f"resourceVersion={list_rv}")
    e = old.next()
    check(e["type"] == "ERROR" and e["object"] == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"too old resource version: {list_rv} ({e['object']['message'].split('(')[1][:-1]})",
        "reason": "Expired", "code": 410}, f"compact, then an old version: the 410 ERROR event {e}")
    check(old.next() is None, "... and the stream's end")
    code, body = stand.get("/api/v1/pods?limit=1")
    stale = body["metadata"]["continue"]
    code, body = stand.get("/api/v1/pods?limit=1&continue=" + stale)
    check(code == 200, "a continue token of the current version still serves")
    stand.write(stand.read() + [pod("e", "sa-e")])
    stand.control("compact")
    code, body = stand.get("/api/v1/pods?limit=1&continue=" + stale)
    check(code == 410 and body["reason"] == "Expired", "a continue token older than the history: 410 Expired")

    # drop-watches ends every open stream.
    stand.control("drop-watches")
    check(watch.end() is None, "drop-watches: the stream ends (terminating chunk)")
    check(fresh.end() is None, "drop-watches: every stream ends")

    # drop-watches abrupt: the connection is cut, no terminating chunk.
    cut = stand.watch("")
    for _ in range(4):
        cut.next()
    stand.control("drop-watches abrupt")
    check(cut.end() == "cut", "drop-watches abrupt: the connection cut")

    # pause: refused, then served again.
    stand.control("pause 3")
    started = time.monotonic()
    try:
        stand.get("/api/v1/pods")
        refused = False
    except (ConnectionError, ssl.SSLError, http.client.HTTPException, OSError):
        refused = True
    check(refused, "pause 3: a request is refused")
    while True:
        try:
            code, _ = stand.get("/api/v1/pods")
            break
        except (ConnectionError, ssl.SSLError, http.client.HTTPException, OSError):
            time.sleep(0.2)
    waited = time.monotonic() - started
    check(code == 200 and 2.5 < waited < 5, f"... and served again after {waited:.1f} s")

    # SIGTERM ends the open watches cleanly.
    last = stand.watch("")
    for _ in range(4):
        last.next()
    stand.proc.terminate()
    check(last.end() is None, "SIGTERM: open watches end with the terminating chunk")
    check(stand.proc.wait(5) == 0, "the stand-in exits, 0")


SERVICES = "/api/v1/services"
SLICES = "/apis/discovery.k8s.io/v1/endpointslices"


def names(body):
    return [o["metadata"]["namespace"] + "/" + o["metadata"]["name"] for o in body["items"]]


def run_services(stand):
    """Services and EndpointSlices: their shapes, paths and selectors; their watches beside
    the pods' on the one resourceVersion counter."""
    code, body = stand.get(SERVICES)
    web = next(o for o in body["items"] if o["metadata"]["name"] == "web")
    check(code == 200 and body["kind"] == "ServiceList" and body["apiVersion"] == "v1"
          and names(body) == ["bank/db", "shop/peers", "shop/web"]
          and all(o["kind"] == "Service" and o["apiVersion"] == "v1" for o in body["items"])
          and web["metadata"]["uid"] == "svc-shop-web" and web["metadata"]["labels"] == {"app": "web"}
          and int(web["metadata"]["resourceVersion"]) <= int(body["metadata"]["resourceVersion"])
          and web["metadata"]["creationTimestamp"].endswith("Z"),
          "a ServiceList of every namespace: Service items with kind, apiVersion and metadata")
    check(web["spec"] == {"selector": {"app": "web"}, "clusterIP": "10.96.0.10",
                          "clusterIPs": ["10.96.0.10"], "type": "ClusterIP",
                          "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
                          "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                          "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                     "targetPort": 80}]}
          and web["status"] == {"loadBalancer": {}},
          "a Service has the API server's defaults filled in")
    code, db = stand.get("/api/v1/namespaces/bank/services/db")
    code2, peers = stand.get("/api/v1/namespaces/shop/services/peers")
    check(code == 200 and db["kind"] == "Service"
          and db["spec"]["ipFamilies"] == ["IPv4", "IPv6"]
          and db["spec"]["ipFamilyPolicy"] == "RequireDualStack"
          and code2 == 200 and peers["spec"]["clusterIPs"] == ["None"]
          and peers["spec"]["ipFamilies"] == ["IPv4"],
          "GET one Service; a dual-stack one's and a headless one's families")
    code, body = stand.get("/api/v1/namespaces/shop/services/nope")
    check(code == 404 and body["message"] == 'services "nope" not found'
          and body["details"] == {"name": "nope", "kind": "services"}, "an unknown Service: 404 Status")
    code, body = stand.get("/api/v1/namespaces/shop/services")
    check(code == 200 and names(body) == ["shop/peers", "shop/web"], "a namespace's ServiceList")
    code, body = stand.get(SERVICES + "?fieldSelector=metadata.name%3Dweb")
    code2, body2 = stand.get(SERVICES + "?fieldSelector=spec.nodeName%3Dn1")
    check(code == 200 and names(body) == ["shop/web"] and code2 == 400
          and body2["message"] == "field label not supported: spec.nodeName",
          "Services' field selectors: metadata.name; a Pod's own field gets 400")

    code, body = stand.get(SLICES)
    by_name = {o["metadata"]["name"]: o for o in body["items"]}
    v4 = by_name.get("web-4x7kq", {})
    check(code == 200 and body["kind"] == "EndpointSliceList"
          and body["apiVersion"] == "discovery.k8s.io/v1"
          and names(body) == ["bank/db-2mxlp", "shop/peers-8vq2n", "shop/web-4x7kq", "shop/web-9dfzm"]
          and all(o["kind"] == "EndpointSlice" and o["apiVersion"] == "discovery.k8s.io/v1"
                  for o in body["items"]),
          "an EndpointSliceList of every namespace: EndpointSlice items")
    check(v4.get("addressType") == "IPv4"
          and v4["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
          and v4["endpoints"][0]["addresses"] == ["10.1.1.2"]
          and v4["endpoints"][0]["conditions"] == {"ready": True, "serving": True, "terminating": False}
          and v4["endpoints"][0]["targetRef"]["name"] == "web-0"
          and v4["endpoints"][0]["hints"] == {"forZones": [{"name": "z1"}]}
          and by_name["web-9dfzm"]["addressType"] == "IPv6"
          and by_name["peers-8vq2n"]["endpoints"] is None and by_name["peers-8vq2n"]["ports"] is None,
          "a slice's endpoints and ports as written (protocol defaulted); an empty one's are null")
    code, body = stand.get("/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices"
                           "?labelSelector=kubernetes.io%2Fservice-name%3Dweb")
    check(code == 200 and names(body) == ["shop/web-4x7kq", "shop/web-9dfzm"],
          "a namespace's slices of one Service (labelSelector kubernetes.io/service-name=web)")
    code, body = stand.get("/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices/nope")
    check(code == 404 and body["message"] == 'endpointslices.discovery.k8s.io "nope" not found',
          "an unknown EndpointSlice: 404 Status, named with its group")
    code, body = stand.get(SERVICES + "?limit=2")
    code2, rest = stand.get(SERVICES + "?limit=2&continue=" + body["metadata"]["continue"])
    check(names(body) + names(rest) == ["bank/db", "shop/peers", "shop/web"]
          and body["metadata"]["remainingItemCount"] == 1
          and rest["metadata"]["resourceVersion"] == body["metadata"]["resourceVersion"],
          "a ServiceList in pages")

    # One counter: a pod list, a service list and a slice list are at one version.
    rv = {stand.get(path)[1]["metadata"]["resourceVersion"]
          for path in ("/api/v1/pods", SERVICES, SLICES)}
    check(len(rv) == 1, f"one resourceVersion counter for every resource ({rv})")
    start = int(rv.pop())

    # Watches from that version, each of its own resource.
    services = stand.watch(f"resourceVersion={start}&allowWatchBookmarks=true", SERVICES)
    pods = stand.watch(f"resourceVersion={start}&allowWatchBookmarks=true")
    web_slices = stand.watch(
        f"resourceVersion={start}&labelSelector=kubernetes.io%2Fservice-name%3Dweb",
        "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices")
    records = stand.read(stand.services)
    stand.write(records, stand.services, indent=2)  # the same content: no event
    records[2]["spec"]["ports"][0]["port"] = 8443
    stand.write(records, stand.services)
    e = services.next()
    check(e["type"] == "MODIFIED" and e["object"]["kind"] == "Service"
          and e["object"]["metadata"]["name"] == "peers"
          and e["object"]["spec"]["ports"][0]["targetPort"] == 8443
          and int(e["object"]["metadata"]["resourceVersion"]) == start + 1,
          "a changed Service: MODIFIED (the same content rewritten: none)")
    stand.write(records + [service("api", "10.96.0.30")], stand.services)
    e = services.next()
    check(e["type"] == "ADDED" and e["object"]["metadata"]["name"] == "api"
          and e["object"]["apiVersion"] == "v1", "a new Service: ADDED")
    records[0]["metadata"]["uid"] = "svc-shop-web-2"
    stand.write([r for r in records if r["metadata"]["name"] != "db"] + [service("api", "10.96.0.30")],
                stand.services)
    events = [services.next() for _ in range(3)]
    check([(e["type"], e["object"]["metadata"]["name"], e["object"]["metadata"]["uid"]) for e in events]
          == [("DELETED", "db", "svc-bank-db"), ("DELETED", "web", "svc-shop-web"),
              ("ADDED", "web", "svc-shop-web-2")],
          "a removed Service: DELETED; one whose uid changed: DELETED, then ADDED")
    last_service_rv = int(events[-1]["object"]["metadata"]["resourceVersion"])

    # The pods' watch saw none of that; a pod's change comes next on the one counter.
    records = stand.read()
    next(r for r in records if r["name"] == "c")["serviceAccountName"] = "sa-c2"
    stand.write(records)
    e = pods.next()
    check(e["type"] == "MODIFIED" and e["object"]["kind"] == "Pod"
          and e["object"]["metadata"]["name"] == "c"
          and int(e["object"]["metadata"]["resourceVersion"]) == last_service_rv + 1,
          "a Pod watch sees no Service event; the pod's version follows the Services' on one counter")

    # Slices of one Service, by label.
    records = stand.read(stand.slices)
    records[2]["endpoints"] = json.loads(json.dumps(records[0]["endpoints"]))  # db's: not seen
    stand.write(records, stand.slices)
    records[0]["endpoints"][0]["conditions"] = {"ready": False, "serving": True, "terminating": True}
    stand.write(records, stand.slices)
    e = web_slices.next()
    check(e["type"] == "MODIFIED" and e["object"]["kind"] == "EndpointSlice"
          and e["object"]["apiVersion"] == "discovery.k8s.io/v1"
          and e["object"]["endpoints"][0]["conditions"]["terminating"] is True,
          "a changed slice of the Service: MODIFIED (another Service's change: not sent)")
    records[1]["metadata"]["labels"]["kubernetes.io/service-name"] = "api"
    stand.write(records, stand.slices)
    e = web_slices.next()
    check(e["type"] == "DELETED" and e["object"]["metadata"]["name"] == "web-9dfzm"
          and e["object"]["metadata"]["labels"]["kubernetes.io/service-name"] == "api",
          "a slice relabelled to another Service: DELETED for the watcher, with its new labels")
    stand.write(records + [endpoint_slice("web-q7rtw", "web", ["10.1.1.3"])], stand.slices)
    e = web_slices.next()
    check(e["type"] == "ADDED" and e["object"]["metadata"]["name"] == "web-q7rtw", "a new slice: ADDED")
    records[0]["deleted"] = True
    stand.write(records + [endpoint_slice("web-q7rtw", "web", ["10.1.1.3"])], stand.slices)
    e = web_slices.next()
    check(e["type"] == "DELETED" and e["object"]["metadata"]["name"] == "web-4x7kq",
          'a slice marked "deleted": DELETED')
    slices_rv = int(e["object"]["metadata"]["resourceVersion"])

    # Resumes replay their own resource's history only.
    resumed = stand.watch(f"resourceVersion={start}", SERVICES)
    replay = [resumed.next() for _ in range(5)]
    check([(e["type"], e["object"]["kind"]) for e in replay]
          == [("MODIFIED", "Service"), ("ADDED", "Service"), ("DELETED", "Service"),
              ("DELETED", "Service"), ("ADDED", "Service")],
          "a Service watch resumed: the Services' kept events, none of the others'")
    resumed.close()
    streaming = stand.watch("sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
                            "&allowWatchBookmarks=true", SLICES)
    events = [streaming.next(skip_bookmarks=False) for _ in range(5)]
    check([(e["type"], e["object"]["kind"]) for e in events]
          == [("ADDED", "EndpointSlice")] * 4 + [("BOOKMARK", "EndpointSlice")]
          and events[-1]["object"]["apiVersion"] == "discovery.k8s.io/v1"
          and events[-1]["object"]["metadata"]["resourceVersion"] == str(slices_rv),
          "a slices streaming list: ADDED each slice, then an EndpointSlice BOOKMARK")
    streaming.close()
    e = services.next(skip_bookmarks=False, timeout=3)
    check(e["type"] == "BOOKMARK" and e["object"]["kind"] == "Service"
          and e["object"]["apiVersion"] == "v1"
          and int(e["object"]["metadata"]["resourceVersion"]) >= slices_rv,
          "an idle Service watch: a Service BOOKMARK at the current version")

    # A record that cannot be served is logged; the file's last good state serves.
    good = stand.read(stand.services)
    before = stand.get(SERVICES)[1]
    stand.write(good + [{"metadata": {"namespace": "shop", "name": "nouid"}, "spec": {}}],
                stand.services)
    after = stand.get(SERVICES)[1]
    with open(os.path.join(stand.dir, "stderr")) as f:
        logged = "Service 'nouid': metadata.uid is required" in f.read()
    check(after == before and logged, "a Service without its uid: logged, and nothing changes")
    stand.write(good, stand.services)

    # compact: a slices watch from an older version gets the 410 ERROR event.
    stand.control("compact")
    old = stand.watch(f"resourceVersion={start}", SLICES)
    e = old.next()
    check(e["type"] == "ERROR" and e["object"]["code"] == 410 and e["object"]["reason"] == "Expired"
          and e["object"]["message"].startswith(f"too old resource version: {start} (")
          and old.next() is None,
          "compact, then a slices watch from an old version: 410 ERROR, then the end")
    for w in (services, pods, web_slices):
        w.close()


if __name__ == "__main__":
    main()
