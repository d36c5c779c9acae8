"""pytest suite of websocket sessions through the binding, against a small
RFC 6455 server on loopback: echo, reconnect in order after the server
drops each connection, a stalled handshake, close from another thread, and
an asyncio loop driven by the event descriptor."""

import asyncio
import base64
import ctypes
import hashlib
import socket
import struct
import threading
import time

import pytest

import lifeline
from lifeline import Client, LifelineCanceled, LifelineTimeout
from lifeline_session import LifelineDisconnected, Session

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _recv_exact(c, n):
    b = b""
    while len(b) < n:
        chunk = c.recv(n - len(b))
        if not chunk:
            raise EOFError
        b += chunk
    return b


def _read_frame(c):
    h = _recv_exact(c, 2)
    op, n = h[0] & 0x0F, h[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", _recv_exact(c, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", _recv_exact(c, 8))[0]
    mask = _recv_exact(c, 4) if h[1] & 0x80 else b"\0\0\0\0"
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(_recv_exact(c, n)))
    return op, data


def _frame(op, data):
    n = len(data)
    if n < 126:
        head = struct.pack("!BB", 0x80 | op, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | op, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | op, 127, n)
    return head + data


class _WSServer:
    """/echo: sends every data message back (and answers pings); /drop:
    sends "N:0".."N:9" on its Nth connection, then a close frame 1001;
    /flood: 500 numbered binary messages of 1000 bytes, then /echo;
    /count: on "go", 10,000 numbered text messages, then /echo."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.drops = 0
        self.lock = threading.Lock()
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "ws://127.0.0.1:%d" % self.sock.getsockname()[1]

    def _run(self):
        self.sock.settimeout(0.1)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        with c:
            try:
                req = b""
                while b"\r\n\r\n" not in req:
                    chunk = c.recv(4096)
                    if not chunk:
                        return
                    req += chunk
                lines = req.decode().split("\r\n")
                path = lines[0].split()[1]
                key = [l.split(":", 1)[1].strip() for l in lines if l.lower().startswith("sec-websocket-key:")][0]
                accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
                c.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
                if path == "/count":
                    # On "go": 10,000 numbered text messages, then echo.
                    while True:
                        op, data = _read_frame(c)
                        if op == 1 and data == b"go":
                            c.sendall(b"".join(_frame(1, b"%d" % i) for i in range(10000)))
                            break
                        if op == 8:
                            return
                    path = "/echo"
                if path == "/flood":
                    # 500 numbered binary messages of 1000 bytes, then echo.
                    for i in range(500):
                        c.sendall(_frame(2, b"%04d" % i + b"x" * 996))
                    path = "/echo"
                if path == "/drop":
                    with self.lock:
                        self.drops += 1
                        n = self.drops
                    for i in range(10):
                        c.sendall(_frame(1, ("%d:%d" % (n, i)).encode()))
                    c.sendall(_frame(8, struct.pack("!H", 1001)))
                    return
                while True:
                    op, data = _read_frame(c)
                    if op == 8:
                        c.sendall(_frame(8, data[:2]))
                        return
                    if op == 9:
                        c.sendall(_frame(10, data))
                    elif op in (1, 2):
                        c.sendall(_frame(op, data))
            except (EOFError, OSError, IndexError):
                return

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def test_session_echo(ws_url):
    with Client() as c, Session(c, ws_url + "/echo", headers={"X-Test": "yes"}) as s:
        s.wait_connected(timeout=5)
        assert s.state == "connected"
        s.send("hello")
        s.send(b"\x00\x01\xff")
        got = []
        while len(got) < 2:
            ev = s.next_event(5)
            assert ev is not None
            if ev.kind == "message":
                got.append(ev)
        assert got[0].data == "hello" and got[1].data == b"\x00\x01\xff"
        s.close()
        kinds = [ev.kind for ev in s]
        assert kinds[-1] == "closed"
        with pytest.raises(LifelineCanceled):
            s.send("after close")


def test_session_reconnects_in_order(ws_url):
    cfg = {"retry.initial_interval_ms": 10, "retry.max_interval_ms": 50}
    with Client(cfg) as c, Session(c, ws_url + "/drop") as s:
        seen = {}
        causes = []
        for ev in s:
            if ev.kind == "message":
                n, i = map(int, ev.data.split(":"))
                seen.setdefault(ev.connection, []).append((n, i))
            elif ev.kind == "disconnected":
                causes.append(ev.cause.error_type)
                if len(causes) == 3:
                    s.close()
        assert sorted(seen) == [1, 2, 3]
        for conn, msgs in seen.items():
            assert [i for _, i in msgs] == list(range(10))
            assert len({n for n, _ in msgs}) == 1
        assert causes == ["close_1001"] * 3


def test_session_handshake_stall_and_close_from_thread(hang_addr):
    with Client() as c, Session(c, "ws://%s/" % hang_addr, config={"handshake_timeout_ms": 200}) as s:
        with pytest.raises(LifelineTimeout):
            s.wait_connected(timeout=0.5)
        with pytest.raises(LifelineDisconnected):
            s.send("nobody there")
        result = {}

        def waiter():
            t0 = time.monotonic()
            try:
                s.send("x", timeout=-1, when_connected=True)  # no limit to the wait
            except LifelineCanceled:
                result["closed_after"] = time.monotonic() - t0

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.1)
        t0 = time.monotonic()
        s.close()
        t.join(5)
        assert not t.is_alive() and "closed_after" in result
        assert time.monotonic() - t0 < 1.0


def test_session_asyncio_event_fd(ws_url):
    async def main():
        loop = asyncio.get_running_loop()
        with Client() as c, Session(c, ws_url + "/echo") as s:
            q = asyncio.Queue()

            def drain():
                while True:
                    ev = s.next_event(0)
                    if ev is None:
                        return
                    q.put_nowait(ev)

            loop.add_reader(s.fileno(), drain)
            try:
                while (await asyncio.wait_for(q.get(), 5)).kind != "connected":
                    pass
                for i in range(100):
                    s.send(str(i))
                got = []
                while len(got) < 100:
                    ev = await asyncio.wait_for(q.get(), 5)
                    if ev.kind == "message":
                        got.append(ev.data)
                assert got == [str(i) for i in range(100)]
            finally:
                loop.remove_reader(s.fileno())

    asyncio.run(main())


def test_dropped_handles_are_freed(ws_url, stream_url):
    """Handles dropped without free()/close() are freed by the garbage
    collector: a session (which would redial for ever), a stream, an
    operation; a client is kept alive by its operations and closed once
    the last of them is gone."""
    import gc

    with Client() as c:
        live0 = c.metrics()["process"]["live_allocations"]

        def drop():
            s = Session(c, ws_url + "/count")
            s.wait_connected(5)
            st = c.stream("GET", stream_url + "/sse")
            st.response(timeout=5)
            c.start("GET", stream_url + "/sse", deadline_ms=5000)

        drop()
        gc.collect()
        deadline = time.monotonic() + 5
        while c.metrics()["process"]["live_allocations"] != live0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.metrics()["process"]["live_allocations"] == live0

    # An operation outlives the Client() it came from, dropped at once.
    op = Client().start("GET", stream_url + "/sse", deadline_ms=5000)
    assert op.wait(5)
    resp = op.result()
    assert resp.status == 200 and b"event 4" in resp.body
    h = op._client.handle
    assert h
    del op
    gc.collect()
    probe = Client()
    try:
        # The dropped client's handle is closed: using it fails.
        err = lifeline._Error()
        st = probe._lib.lifeline_client_configure(h, b"{}", ctypes.byref(err))
        assert st != lifeline.OK
    finally:
        probe.close()
