#!/usr/bin/python3
"""A quick check of kubeapi.py's list+watch protocol, by hand: starts it on a free port with
a temporary PODS_JSON and drives it over TLS as a client would (list pages, watch, edits of
the file, bookmarks, compaction, dropped watches, a pause). Exits nonzero on failure.

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


class Stand:
    def __init__(self, tmp):
        self.dir = tmp
        self.pods = os.path.join(tmp, "pods.json")
        self.write([pod("a", "sa-a", "10.1.1.2"), pod("b", "sa-b", "10.1.1.3"),
                    pod("c", "sa-c", ns="bank", node="n2"),
                    pod("host", "mon", "10.0.0.1", ns="kube-system", hostNetwork=True)])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "kubeapi.py"), tmp, str(self.port), TOKEN, self.pods],
            stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "stderr"), "w"), text=True)
        assert self.proc.stdout.readline().strip() == "listening"
        self.ctx = ssl.create_default_context(cafile=os.path.join(tmp, "ca.crt"))

    def write(self, records):
        with open(self.pods, "w") as f:
            json.dump(records, f)

    def read(self):
        with open(self.pods) as f:
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

    def watch(self, query):
        return Watch(self, query)


class Watch:
    """A watch stream read on a thread: its events in a queue, None at a clean end, "cut" when
    the connection ended without the terminating chunk."""

    def __init__(self, stand, query):
        self.conn = stand.connection(timeout=30)
        self.conn.request("GET", "/api/v1/pods?watch=true&" + query,
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


if __name__ == "__main__":
    main()
