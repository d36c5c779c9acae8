"""Faults through the binding: a vanished peer (a network namespace the
test makes, nftables dropping the servers' traffic) and hosts that read
slowly (a session's bounded queue; a trickling body)."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from lifeline import Client, LifelineError, LifelineTimeout
from lifeline_session import Session

HERE = os.path.dirname(os.path.abspath(__file__))


def _netns_missing():
    if os.geteuid() != 0:
        return "not root: a network namespace and nftables need CAP_SYS_ADMIN and CAP_NET_ADMIN"
    for tool in ("unshare", "ip", "nft"):
        if shutil.which(tool) is None:
            return "%s not found (util-linux, iproute2, nftables)" % tool
    return None


def test_vanished_peer():
    """Session: DISCONNECTED with pong_timeout within ping + pong, failed
    redials that say why, a reconnect once the traffic flows; streamed
    body: the stall limit ends the read. Servers and client run in a child
    in its own network namespace (the library is loaded there, not
    forked)."""
    why = _netns_missing()
    if why:
        pytest.skip("vanished peer needs a network namespace: " + why)
    r = subprocess.run(["unshare", "--net", "--", sys.executable, os.path.join(HERE, "_faults_child.py")],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    print(r.stdout)
    assert r.returncode == 0, "child failed:\n%s\n%s" % (r.stdout, r.stderr[-4000:])
    assert "ok session_vanish" in r.stdout and "ok stream_vanish" in r.stdout, r.stdout


def test_session_slow_reader_keeps_connection(ws_url):
    """A host that takes no event for many ping intervals: the session
    stops reading at its queue's bound (it does not grow, nothing is
    dropped), still answers pings, so the connection survives; every
    message then arrives, in order, on connection 1."""
    with Client() as c, Session(c, ws_url + "/flood", config={
            "queue_max_events": 16, "ping_interval_ms": 100, "pong_timeout_ms": 200}) as s:
        time.sleep(1.5)
        got = 0
        while got < 500:
            ev = s.next_event(5)
            assert ev is not None, "no event within 5s after %d messages" % got
            assert ev.kind not in ("disconnected", "closed"), (ev, ev.cause and vars(ev.cause))
            if ev.kind == "message":
                assert ev.data[:4] == b"%04d" % got and ev.connection == 1
                got += 1


def test_stream_slow_reader_while_bytes_arrive(stream_url):
    """A body that trickles (a line every 50 ms, under the 300 ms stall
    limit) read by a host that sleeps a second between reads is not cut:
    the stall limit times the peer, not the host."""
    with Client({"transport.stall_timeout_ms": 300, "retry.max_attempts": 1}) as c:
        with c.stream("GET", stream_url + "/trickle") as st:
            body = b""
            for i in range(3):
                time.sleep(1)
                body += st.read(timeout=5)
            for b in st:
                body += b
    assert len(body) == 40 * 200
    assert body.split(b"\n")[39][:4] == b"039:"


def test_session_ten_thousand_messages_leak_nothing(ws_url):
    """10,000 messages through a session, in order, three sessions in a
    row: the library's live allocations come back to their start and the
    goroutines do not grow."""
    with Client() as c:
        def proc():
            return c.metrics()["process"]

        live0 = proc()["live_allocations"]
        g = []
        for round in range(3):
            with Session(c, ws_url + "/count") as s:
                s.send("go", timeout=5, when_connected=True)
                n = 0
                while n < 10000:
                    ev = s.next_event(5)
                    assert ev is not None, "no event within 5s at message %d" % n
                    if ev.kind == "message":
                        assert ev.data == str(n)
                        n += 1
            assert proc()["live_allocations"] == live0
            time.sleep(0.2)
            g.append(proc()["goroutines"])
        assert g[2] <= g[0] + 2, "goroutines after each session: %s" % g


def test_stream_headers_never_come(hang_addr):
    """A streamed request to a server that accepts and never answers: the
    first-byte limit ends it (phase "first_byte"), for a read too."""
    with Client({"transport.first_byte_timeout_ms": 300, "retry.max_attempts": 1}) as c:
        with c.stream("GET", "http://%s/" % hang_addr) as st:
            t0 = time.monotonic()
            with pytest.raises(LifelineTimeout) as e:
                st.read()
            assert e.value.phase == "first_byte" and e.value.timeout
            assert 0.25 <= time.monotonic() - t0 < 5


def test_stream_server_goes_away_then_next_works(stream_url):
    """A body whose server goes away mid-way fails at once (not at the 10 s
    stall limit) with a class that names it; the next stream works."""
    with Client({"transport.stall_timeout_ms": 10000, "retry.max_attempts": 1}) as c:
        with c.stream("GET", stream_url + "/cut") as st:
            got = b""
            t0 = time.monotonic()
            with pytest.raises(LifelineError) as e:
                while True:
                    b = st.read(timeout=5)
                    if not b:
                        break
                    got += b
            assert got == b"hello" and time.monotonic() - t0 < 3
            assert e.value.error_type and "*" not in e.value.error_type and "." not in e.value.error_type
        with c.stream("GET", stream_url + "/sse") as st:
            assert b"".join(st).startswith(b"data: event 0")
