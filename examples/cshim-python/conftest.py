"""Loopback servers for the binding's tests (127.0.0.1 only)."""

import http.server
import os
import socket
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _reply(self, status, body, extra=()):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/hello":
            self._reply(200, b"hello", [("X-Test", "yes")])
        else:
            self._reply(404, b"not found")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        self._reply(200, body, [("X-Echo-Back", self.headers.get("X-Echo", ""))])


class _Hang:
    """Accepts connections and never answers (incident 01's load balancer)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.conns = []
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.sock.getsockname()[1]

    def _run(self):
        self.sock.settimeout(0.1)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)
            except socket.timeout:
                continue
            except OSError:
                return

    def close(self):
        self.stop = True
        self.thread.join()
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture(scope="session")
def http_url():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="session")
def hang_addr():
    h = _Hang()
    yield h.addr
    h.close()


@pytest.fixture(scope="session")
def refused_addr():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    addr = "127.0.0.1:%d" % s.getsockname()[1]
    s.close()  # nothing listens there now
    return addr


@pytest.fixture(scope="session")
def echo_addr():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    stop = threading.Event()

    def serve(c):
        with c:
            while True:
                b = c.recv(4096)
                if not b:
                    return
                c.sendall(b)

    def run():
        s.settimeout(0.1)
        while not stop.is_set():
            try:
                c, _ = s.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    yield "127.0.0.1:%d" % s.getsockname()[1]
    stop.set()
    t.join()
    s.close()


class _StreamHandler(http.server.BaseHTTPRequestHandler):
    """Streamed bodies: server-sent events that trickle, a body that stalls
    mid-way, and an echo of a chunked upload."""

    protocol_version = "HTTP/1.1"
    stop = threading.Event()

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/sse":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            for i in range(5):
                self.wfile.write(b"data: event %d\n\n" % i)
                self.wfile.flush()
                time.sleep(0.05)
            self.close_connection = True
        elif self.path == "/cut":
            # A server that goes away mid-body: 5 of 100 bytes, then the
            # connection closes.
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"hello")
            self.wfile.flush()
            time.sleep(0.1)
            self.close_connection = True
        elif self.path in ("/trickle", "/forever"):
            # /trickle: 40 lines of 200 bytes, 50 ms apart; /forever: a
            # line every 50 ms until the client goes.
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            i = 0
            while (self.path == "/forever" or i < 40) and not self.stop.is_set():
                try:
                    self.wfile.write(b"%03d:" % (i % 1000) + b"x" * 195 + b"\n")
                    self.wfile.flush()
                except OSError:
                    break
                i += 1
                time.sleep(0.05)
            self.close_connection = True
        elif self.path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"partial")
            self.wfile.flush()
            # Hold until the client goes (or the fixture ends).
            self.connection.settimeout(0.1)
            while not self.stop.is_set():
                try:
                    if not self.connection.recv(1):
                        break
                except socket.timeout:
                    continue
                except OSError:
                    break
            self.close_connection = True
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def do_POST(self):
        body = b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="session")
def stream_url():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StreamHandler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % srv.server_address[1]
    _StreamHandler.stop.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="session")
def ws_url():
    """The websocket server of test_session.py (echo, drop, flood)."""
    from test_session import _WSServer

    s = _WSServer()
    yield s.url
    s.close()
