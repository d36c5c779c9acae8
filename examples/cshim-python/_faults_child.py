"""The vanished-peer checks of test_faults.py, run in a network namespace
of their own (`unshare --net`, started by the test): servers and client
both live in it, and nftables there drops the servers' traffic. Prints
"ok <name> ..." per check; exits non-zero on the first failure."""

import http.server
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import _StreamHandler  # noqa: E402
from lifeline import Client, LifelineTimeout  # noqa: E402
from lifeline_session import Session  # noqa: E402
from test_session import _WSServer  # noqa: E402

TABLE = "table inet lifeline {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t}\n}\n"


def nft(rules):
    subprocess.run(["nft", "-f", "-"], input=rules.encode(), check=True)


def vanish(*ports):
    nft(TABLE + "".join("add rule inet lifeline input tcp dport %d drop\n"
                        "add rule inet lifeline input tcp sport %d drop\n" % (p, p) for p in ports))


def flow():
    nft("table inet lifeline {}\ndelete table inet lifeline\n")


def event_of(s, kind, timeout=10):
    end = time.monotonic() + timeout
    while True:
        ev = s.next_event(max(0.0, end - time.monotonic()))
        assert ev is not None, "no %s event within %ss" % (kind, timeout)
        assert ev.kind != "closed", "closed while waiting for %s" % kind
        if ev.kind == kind:
            return ev


def session_vanish(ws):
    port = int(ws.url.rsplit(":", 1)[1])
    cfg = {"dial.connect_timeout_ms": 300, "dial.timeout_ms": 600,
           "retry.initial_interval_ms": 20, "retry.max_interval_ms": 200}
    with Client(cfg) as c, Session(c, ws.url + "/echo", config={
            "ping_interval_ms": 200, "pong_timeout_ms": 400, "handshake_timeout_ms": 600}) as s:
        assert event_of(s, "connected").connection == 1
        s.send("before")
        assert event_of(s, "message").data == "before"
        vanish(port)
        t0 = time.monotonic()
        ev = event_of(s, "disconnected")
        took = time.monotonic() - t0
        cause = ev.cause
        assert cause is not None and cause.phase == "websocket" and cause.error_type == "pong_timeout" \
            and cause.timeout, vars(cause) if cause else None
        assert took < 0.2 + 0.4 + 2.0, "vanished peer reported after %.3fs (ping 0.2 + pong 0.4)" % took
        # While dropped, each redial fails, and its state event says why.
        while True:
            ev = s.next_event(10)
            assert ev is not None and ev.kind != "connected", ev
            if ev.kind == "state" and ev.state == "disconnected":
                assert ev.cause is not None and ev.cause.timeout and ev.cause.error_type \
                    and "*" not in ev.cause.error_type, vars(ev.cause) if ev.cause else None
                redial = "%s/%s" % (ev.cause.phase, ev.cause.error_type)
                break
        flow()
        assert event_of(s, "connected").connection == 2
        s.send("after")
        assert event_of(s, "message").data == "after"
    print("ok session_vanish detected_s=%.3f redial=%s" % (took, redial))


def stream_vanish(url):
    port = int(url.rsplit(":", 1)[1])
    with Client({"transport.stall_timeout_ms": 500, "retry.max_attempts": 1}) as c:
        with c.stream("GET", url + "/forever") as st:
            got = b""
            while len(got) < 30:
                got += st.read(timeout=5)
            vanish(port)
            t0 = time.monotonic()
            try:
                while st.read():
                    pass
                raise AssertionError("the body ended without an error after its peer vanished")
            except LifelineTimeout as e:
                took = time.monotonic() - t0
                assert e.phase == "stall" and e.error_type == "stall_timeout", vars(e)
            assert took < 0.5 + 3.0, "stall after %.3fs, limit 0.5s" % took
    flow()
    print("ok stream_vanish stall_s=%.3f" % took)


def main():
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    ws = _WSServer()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StreamHandler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        session_vanish(ws)
        stream_vanish("http://127.0.0.1:%d" % srv.server_address[1])
    finally:
        _StreamHandler.stop.set()
        srv.shutdown()
        ws.close()


if __name__ == "__main__":
    main()
