"""The incidents, replayed from Python through faultproxy (examples/faultproxy):
the lifeline binding's requests stay bounded and counted, while a plain
urllib control in the same test shows what happens without lifeline. The
control has no timeout of its own; the harness runs each of its requests
in a thread and stops waiting after CONTROL_CAP seconds, so that it ends.
Everything listens on 127.0.0.1."""

import json
import os
import queue
import shutil
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

import lifeline
from lifeline import Client

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
CONTROL_CAP = 2.0  # seconds the harness waits on one control request


@pytest.fixture(scope="session")
def faultproxy_bin(tmp_path_factory):
    """go build the proxy once, as the harness builds the library."""
    go = os.environ.get("GO", "go")
    if shutil.which(go) is None:
        if os.environ.get("CI"):
            pytest.fail("faultproxy: %r not found (CI needs Go to build examples/faultproxy)" % go)
        pytest.skip("faultproxy: needs the Go toolchain (%r not found)" % go)
    out = str(tmp_path_factory.mktemp("faultproxy") / "faultproxy")
    subprocess.run([go, "build", "-o", out, "./examples/faultproxy"], cwd=ROOT, check=True, timeout=900)
    return out


class Proxy:
    """A running faultproxy: its addresses, its per-connection lines, its API."""

    def __init__(self, binary, *args):
        self.proc = subprocess.Popen([binary, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        ready = queue.Queue()
        self.reader = threading.Thread(target=self._read, args=(ready,), daemon=True)
        self.reader.start()
        try:
            self.addr, self.api, self.ca = ready.get(timeout=30)
        except queue.Empty:
            self.close()
            raise AssertionError("faultproxy did not start: %s" % "".join(self.lines))

    def _read(self, ready):
        addr = api = ca = None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("faultproxy: proxy "):
                addr = line.split()[2]
            elif line.startswith("faultproxy: ca "):
                ca = line.split(None, 2)[2].strip()
            elif line.startswith("faultproxy: api "):
                api = line.split()[2]
                ready.put((addr, api, ca))

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stats(self):
        status, st = self.call("GET", "/stats")
        assert status == 200, st
        return st

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: the proxy closes every connection and exits
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=10)


@pytest.fixture
def start_proxy(faultproxy_bin):
    proxies = []

    def start(*args):
        p = Proxy(faultproxy_bin, *args)
        proxies.append(p)
        return p

    yield start
    for p in proxies:
        p.close()


def control(urls, context=None):
    """urllib with no timeout, each request in a thread the harness waits on
    for CONTROL_CAP seconds. Returns (ok, errors, still_waiting, threads)."""
    ok, errors, waiting, threads = 0, [], 0, []
    for url in urls:
        box = {}

        def fetch(url=url, box=box):
            try:
                with urllib.request.urlopen(url, context=context) as r:
                    box["body"] = r.read()
            except Exception as e:  # the control's own failures are data here
                box["error"] = e

        t = threading.Thread(target=fetch, daemon=True)
        t.start()
        t.join(CONTROL_CAP)
        threads.append(t)
        if t.is_alive():
            waiting += 1
        elif "error" in box:
            errors.append(box["error"])
        else:
            ok += 1
    return ok, errors, waiting, threads


def lifeline_run(client, url, n):
    """n GETs through the binding; returns (ok, failures, slowest seconds)."""
    ok, failures, slowest = 0, [], 0.0
    for _ in range(n):
        t0 = time.monotonic()
        try:
            r = client.request("GET", url, deadline_ms=10000)
            ok += r.status == 200 and r.body == b"hello"
        except lifeline.LifelineError as e:
            failures.append(e)
        slowest = max(slowest, time.monotonic() - t0)
    return ok, failures, slowest


def peer_health(client, addr):
    return next((p for p in client.metrics()["health"] if p["peer"] == addr), None)


def test_incident01_hang_after_accept(start_proxy, http_url):
    """Every 12th connection is accepted and never answered."""
    upstream = http_url.split("//")[1]
    n = 24
    # Without lifeline: the two requests on hung connections are still
    # waiting when the harness stops looking.
    p = start_proxy("-upstream", upstream, "-preset", "incident01")
    ok, errors, waiting, threads = control(["http://%s/hello" % p.addr] * n)
    assert (ok, errors, waiting) == (n - 2, [], 2), (ok, errors, waiting)
    p.close()  # closes the held connections: the control's threads end
    for t in threads:
        t.join(10)
        assert not t.is_alive()

    # With lifeline: every request succeeds, bounded near the hedge delay,
    # and the hung connections were given up on (closed by the client).
    p = start_proxy("-upstream", upstream, "-preset", "incident01")
    cfg = {"transport.hedge_delay_ms": 250, "transport.max_idle_conns_per_host": -1}
    with Client(cfg) as c:
        ok, failures, slowest = lifeline_run(c, "http://%s/hello" % p.addr, n)
        assert ok == n and not failures, failures
        assert slowest < 3.0, slowest  # a hung connection alone would wait first_byte_timeout (15 s)
        m = c.metrics()
        assert m["client"]["requests_ok"] == n
    st = p.stats()
    assert st["faulted"] == 2, st
    deadline = time.monotonic() + 10
    while p.stats()["closed_by_peer"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.stats()["closed_by_peer"] == 2, p.stats()
    assert any("ProxySilence (lb-hang-after-accept): held until the client closed" in l for l in p.lines), p.lines


def test_incident02_tls_handshake_hangs(start_proxy, http_url, tmp_path):
    """Every 12th TLS handshake gets its ClientHello read and then nothing;
    the proxy terminates TLS with a CA it writes for the clients."""
    upstream = http_url.split("//")[1]
    n = 12
    p = start_proxy("-upstream", upstream, "-preset", "incident02", "-tls", "terminate",
                    "-tls-dir", str(tmp_path / "tls"), "-quiet")
    assert p.ca and os.path.exists(p.ca)
    ctx = ssl.create_default_context(cafile=p.ca)
    ok, errors, waiting, threads = control(["https://%s/hello" % p.addr] * n, context=ctx)
    assert (ok, errors, waiting) == (n - 1, [], 1), (ok, errors, waiting)
    p.close()
    for t in threads:
        t.join(10)

    p = start_proxy("-upstream", upstream, "-preset", "incident02", "-tls", "terminate",
                    "-tls-dir", str(tmp_path / "tls2"), "-quiet")
    cfg = {"transport.hedge_delay_ms": 250, "transport.max_idle_conns_per_host": -1, "tls.ca_file": p.ca}
    with Client(cfg) as c:
        ok, failures, slowest = lifeline_run(c, "https://%s/hello" % p.addr, n)
        assert ok == n and not failures, failures
        assert slowest < 3.0, slowest  # the TLS handshake alone is bounded at 5 s
    assert p.stats()["faulted"] == 1


def test_incident05_resets_switched_at_run_time(start_proxy, http_url):
    """The preset is switched on over the API: every 10th connection is
    reset at once. urllib returns the resets; lifeline retries them, and
    its health counts them for the proxy's address."""
    upstream = http_url.split("//")[1]
    n = 40
    p = start_proxy("-upstream", upstream, "-quiet")
    status, body = p.call("POST", "/preset", {"name": "incident05"})
    assert status == 200 and body["preset"] == "incident05", body
    status, body = p.call("POST", "/rules", {"name": "x", "fault": "explode"})
    assert status == 400 and "unknown proxy fault" in body["error"], body

    ok, errors, waiting, _ = control(["http://%s/hello" % p.addr] * n)
    assert waiting == 0 and ok == n - 4 and len(errors) == 4, (ok, errors, waiting)
    assert all(isinstance(e, (ConnectionError, urllib.error.URLError)) for e in errors), errors

    status, _ = p.call("POST", "/preset", {"name": "incident05"})  # restart the ordinal
    assert status == 200
    before = p.stats()["accepted"]
    with Client({"transport.max_idle_conns_per_host": -1}) as c:
        ok, failures, slowest = lifeline_run(c, "http://%s/hello" % p.addr, n)
        assert ok == n and not failures, failures
        h = peer_health(c, p.addr)
        assert h is not None and h["resets"] + h["other_failures"] >= 1, c.metrics()["health"]
    conns = p.stats()["accepted"] - before
    assert conns <= n + n // 5, conns  # retried, not stormed: about one extra connection per reset


def test_terminate_ca_strict_and_cleaned_up(start_proxy, http_url):
    """The CA the terminating proxy writes passes OpenSSL's strict X.509
    checks (Python 3.13's default context sets VERIFY_X509_STRICT), its key
    is private, and the directory it made for them is gone after SIGTERM."""
    upstream = http_url.split("//")[1]
    p = start_proxy("-upstream", upstream, "-tls", "terminate", "-quiet")
    tls_dir = os.path.dirname(p.ca)
    assert os.stat(tls_dir).st_mode & 0o777 == 0o700
    assert os.stat(os.path.join(tls_dir, "key.pem")).st_mode & 0o777 == 0o600
    ctx = ssl.create_default_context(cafile=p.ca)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    for host in ("127.0.0.1", "localhost"):
        with urllib.request.urlopen("https://%s:%s/hello" % (host, p.addr.rsplit(":", 1)[1]), context=ctx, timeout=10) as r:
            assert r.read() == b"hello"
    p.close()
    assert p.proc.returncode == 0, p.lines
    assert not os.path.exists(tls_dir), os.listdir(tls_dir)
