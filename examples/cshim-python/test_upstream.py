"""Fail fast through the binding: an upstream known down raises
LifelineUnavailable at once; wait_for_ready waits for it to come back;
transport.disable_fail_fast keeps today's behaviour."""

import http.server
import socket
import threading
import time

import pytest

import lifeline
from lifeline import Client, LifelineError, LifelineUnavailable


def _closed_addr():
    """A loopback address nothing listens on (connects are refused) whose
    port the test may listen on later."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class _Back(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"back")


def _serve_on(port):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Back)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _down(c, url):
    """Five refused requests: the upstream is then known down."""
    for _ in range(5):
        with pytest.raises(LifelineError) as ei:
            c.request("GET", url)
        assert type(ei.value) is LifelineError and ei.value.error_type == "connect_refused"


def test_unavailable_fails_fast():
    port = _closed_addr()
    url = "http://127.0.0.1:%d/" % port
    with Client({"retry.max_attempts": 1}) as c:
        _down(c, url)
        worst = 0
        for _ in range(50):
            t0 = time.monotonic()
            with pytest.raises(LifelineUnavailable) as ei:
                c.request("GET", url)
            worst = max(worst, time.monotonic() - t0)
            e = ei.value
            assert e.status == lifeline.E_UNAVAILABLE
            assert e.error_type == "unavailable" and e.phase == "upstream" and not e.timeout and not e.shed
            assert "refused" in e.message
        assert worst < 0.1, "a fail fast took %.3fs" % worst
        names = {m["name"] for m in c.metrics()["metrics"]}
        assert {"lifeline.throttled", "lifeline.upstream.down"} <= names


def test_wait_for_ready_served_when_the_upstream_comes_back():
    port = _closed_addr()
    url = "http://127.0.0.1:%d/" % port
    with Client({"retry.max_attempts": 1}) as c:
        _down(c, url)
        op = c.start("GET", url, deadline_ms=20000, wait_for_ready=True, max_attempts=10)
        try:
            assert not op.wait(timeout=0.3), "a request that waits for ready waits"
            srv = _serve_on(port)
            try:
                t0 = time.monotonic()
                assert op.wait(timeout=15)
                r = op.result()
                assert r.status == 200 and r.body == b"back"
                assert time.monotonic() - t0 < 10
                # Open again for every request.
                assert c.request("GET", url).body == b"back"
            finally:
                srv.shutdown()
                srv.server_close()
        finally:
            op.wait(timeout=1)
            op.free()


def test_wait_for_ready_request_and_stream():
    port = _closed_addr()
    url = "http://127.0.0.1:%d/" % port
    with Client({"retry.max_attempts": 1}) as c:
        _down(c, url)
        got = {}

        def call():
            try:
                got["resp"] = c.request("GET", url, deadline_ms=20000, wait_for_ready=True, max_attempts=10)
            except Exception as e:  # reported below
                got["err"] = e

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.3)
        assert t.is_alive(), "waits for ready: %r" % got
        srv = _serve_on(port)
        try:
            t.join(15)
            assert not t.is_alive() and got.get("resp") is not None, got
            assert got["resp"].status == 200
            with c.stream("GET", url, wait_for_ready=True) as s:
                assert b"".join(s) == b"back"
        finally:
            srv.shutdown()
            srv.server_close()


def test_disable_fail_fast():
    port = _closed_addr()
    url = "http://127.0.0.1:%d/" % port
    with Client({"retry.max_attempts": 1, "transport": {"disable_fail_fast": True,
                                                         "disable_load_shedding": True}}) as c:
        cfg = c.config()
        assert cfg["transport.disable_fail_fast"] is True and cfg["transport.disable_load_shedding"] is True
        for _ in range(10):
            with pytest.raises(LifelineError) as ei:
                c.request("GET", url)
            assert not isinstance(ei.value, LifelineUnavailable) and ei.value.error_type == "connect_refused"
    with Client() as c:
        cfg = c.config()
        assert cfg["transport.disable_fail_fast"] is False and cfg["transport.disable_load_shedding"] is False
