"""Adversary tests of lifeline_aio: a hostile host (two tasks on one
session, close and free under a pending await, descriptors reused after a
free, cancellation, a closed loop) and a hostile server (an endless flood
of messages). Each test bounds itself: a hang fails it, it never hangs the
run."""

import asyncio
import base64
import gc
import hashlib
import os
import socket
import threading
import time

import pytest

from lifeline import Client, LifelineCanceled, LifelineError, LifelineReadTimeout
from lifeline_aio import AsyncSession, AsyncStream
from lifeline_session import Session
from test_session import _GUID, _frame  # the RFC 6455 helpers


class _Flood:
    """A websocket server that, after the upgrade, sends text messages as
    fast as the socket takes them until the client goes or stop()."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "ws://127.0.0.1:%d/flood" % self.sock.getsockname()[1]

    def _run(self):
        self.sock.settimeout(0.1)
        while not self.stopped.is_set():
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
                key = [l.split(":", 1)[1].strip() for l in lines if l.lower().startswith("sec-websocket-key:")][0]
                accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
                c.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
                burst = b"".join(_frame(1, b"m%d" % i) for i in range(2000))
                while not self.stopped.is_set():
                    c.sendall(burst)
            except OSError:
                return

    def stop(self):
        self.stopped.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def flood_url():
    f = _Flood()
    yield f.url
    f.stop()


def _bounded(main, limit, unstick=None):
    """Runs asyncio.run(main()) on a thread; fails when it has not ended
    after limit seconds (then calls unstick(), if given, so that the
    thread can end, and joins it)."""
    out = {}

    def run():
        try:
            out["result"] = asyncio.run(main())
        except BaseException as e:  # handed to the test's thread
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit)
    hung = t.is_alive()
    if hung and unstick is not None:
        unstick()
        t.join(10)
    if hung:
        pytest.fail("the event loop was still busy after %ss: a hang" % limit)
    if "error" in out:
        raise out["error"]
    return out.get("result")


async def _connected(s, limit=5):
    ev = await s.next_event(limit)
    while ev is not None and ev.kind != "connected":
        ev = await s.next_event(limit)
    assert ev is not None, "not connected"


def test_aio_adv_two_tasks_await_one_session(ws_url):
    """Two tasks await the same session; two messages come: each task gets
    one. (The second add_reader used to replace the first task's callback:
    that task then waited for ever.)"""
    async def main():
        with Client() as c:
            async with AsyncSession(Session(c, ws_url + "/echo")) as s:
                await _connected(s)
                a = asyncio.ensure_future(s.next_event())
                b = asyncio.ensure_future(s.next_event())
                await asyncio.sleep(0.2)  # both wait on the descriptor
                s.session.send("one")
                s.session.send("two")
                got = await asyncio.wait_for(asyncio.gather(a, b), 5)
                assert sorted(ev.data for ev in got) == ["one", "two"]

    _bounded(main, 30)


def test_aio_adv_exit_frees_under_pending_session_await(ws_url):
    """Leaving the async with block while another task awaits next_event:
    the waiter ends at once with LifelineCanceled (the descriptor is gone:
    it used to wait for ever)."""
    async def main():
        with Client() as c:
            async with AsyncSession(Session(c, ws_url + "/echo")) as s:
                await _connected(s)
                t = asyncio.ensure_future(s.next_event())
                await asyncio.sleep(0.1)
            t0 = time.monotonic()
            with pytest.raises(LifelineCanceled):
                await asyncio.wait_for(t, 5)
            assert time.monotonic() - t0 < 2
            with pytest.raises(LifelineCanceled):  # and again: no touch of a freed handle
                await s.next_event(1)

    _bounded(main, 30)


def test_aio_adv_exit_closes_under_pending_read(stream_url):
    """Leaving the async with block of a stream while another task awaits
    read(): the read ends at once with LifelineCanceled."""
    async def main():
        with Client({"transport.stall_timeout_ms": -1}) as c:
            async with AsyncStream(c.stream("GET", stream_url + "/stall")) as st:
                assert await st.read(timeout=5) == b"partial"
                t = asyncio.ensure_future(st.read())
                await asyncio.sleep(0.1)
            with pytest.raises(LifelineCanceled):
                await asyncio.wait_for(t, 5)

    _bounded(main, 30)


def test_aio_adv_free_from_another_thread(ws_url):
    """The session freed from another thread (the ABI allows any thread)
    under an await: the await ends with an error, promptly, instead of
    waiting for ever on a descriptor that was closed under it."""
    async def main():
        with Client() as c:
            sess = Session(c, ws_url + "/echo")
            s = AsyncSession(sess)
            await _connected(s)
            threading.Timer(0.2, sess.free).start()
            t0 = time.monotonic()
            with pytest.raises(LifelineError):
                await asyncio.wait_for(s.next_event(), 5)
            assert time.monotonic() - t0 < 4

    _bounded(main, 30)


def test_aio_adv_reused_descriptor_after_free(stream_url):
    """A stream closed directly (Stream.close) under a pending await, and a
    new stream that gets the same descriptor number: the new stream's reads
    are woken by its bytes (a stale registration of the number used to
    swallow them: the read timed out although the body had arrived)."""
    async def main():
        with Client({"transport.stall_timeout_ms": -1}) as c:
            a = AsyncStream(c.stream("GET", stream_url + "/stall"))
            assert await a.read(timeout=5) == b"partial"
            fd_a = a._fd
            pending = asyncio.ensure_future(a.read())
            await asyncio.sleep(0.1)
            a.stream.close()  # behind the AsyncStream's back
            async with AsyncStream(c.stream("GET", stream_url + "/sse")) as b:
                if b._fd != fd_a:
                    pytest.skip("the descriptor number was not reused (%d, %d)" % (fd_a, b._fd))
                body = b""
                t0 = time.monotonic()
                while b"event 4" not in body:
                    body += await b.read(timeout=3)
                assert time.monotonic() - t0 < 2, "the second stream's bytes waited %.1fs" % (time.monotonic() - t0)
            with pytest.raises(LifelineError):
                await asyncio.wait_for(pending, 5)

    _bounded(main, 30)


class _PipeStream:
    """A stand-in for lifeline.Stream over a pipe, for what the module does
    with descriptors alone (the library's own descriptors are pipes too)."""

    def __init__(self):
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        self.closed = False

    def fileno(self):
        return self.r

    def read(self, size=65536, timeout=None):
        if self.closed:
            raise LifelineError(4, "argument", "invalid_handle", False, "lifeline: stream closed")
        try:
            return os.read(self.r, size)
        except BlockingIOError:
            raise LifelineReadTimeout(7, "read", "read_timeout", True, "") from None

    def close(self):
        if not self.closed:
            self.closed = True
            os.close(self.r)
            os.close(self.w)


def test_aio_adv_reused_descriptor_number():
    """The same as test_aio_adv_reused_descriptor_after_free, with the
    descriptor number's reuse made certain (dup2): a wait registered on a
    number whose descriptor was closed and replaced must still be woken by
    the new one's bytes."""
    async def main():
        a = AsyncStream(_PipeStream())
        pending = asyncio.ensure_future(a.read())
        await asyncio.sleep(0.1)
        fd = a._fd
        a.stream.close()  # behind the AsyncStream's back
        p = _PipeStream()
        if p.r != fd:
            os.dup2(p.r, fd)
            os.close(p.r)
            p.r = fd
        b = AsyncStream(p)
        asyncio.get_running_loop().call_later(0.1, os.write, p.w, b"hello")
        t0 = time.monotonic()
        assert await b.read(timeout=3) == b"hello"
        assert time.monotonic() - t0 < 1, "the new descriptor's bytes waited %.1fs" % (time.monotonic() - t0)
        with pytest.raises(LifelineError):
            await asyncio.wait_for(pending, 5)
        b.close()

    _bounded(main, 30)


def test_aio_adv_cancel_mid_await_then_again(ws_url):
    """A task cancelled while it awaits next_event: the reader is gone
    (nothing left registered), the session still works, a second await
    gets the next event."""
    async def main():
        with Client() as c:
            async with AsyncSession(Session(c, ws_url + "/echo")) as s:
                await _connected(s)
                for _ in range(50):
                    t = asyncio.ensure_future(s.next_event())
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
                    t.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await t
                loop = asyncio.get_running_loop()
                assert loop._selector.get_map().get(s._fd) is None, "a cancelled await left its reader"
                s.session.send("after")
                ev = await s.next_event(5)
                assert ev is not None and ev.data == "after"

    _bounded(main, 30)


def test_aio_adv_loop_closed_with_a_pending_await(ws_url):
    """asyncio.run ends while a task awaits next_event (it is cancelled);
    the session, driven by a second loop, still delivers in order."""
    with Client() as c, Session(c, ws_url + "/echo") as sess:
        s = AsyncSession(sess)

        async def first():
            await _connected(s)
            asyncio.ensure_future(s.next_event())  # left pending
            await asyncio.sleep(0.05)

        async def second():
            sess.send("a")
            sess.send("b")
            got = [(await s.next_event(5)).data, (await s.next_event(5)).data]
            assert got == ["a", "b"]

        _bounded(first, 30)
        _bounded(second, 30)


def test_aio_adv_endless_flood_leaves_the_loop_free(flood_url):
    """A server that floods messages for ever: async for over the session
    must still let other tasks run (a wait_for's timeout, a ticker). It
    used to take event after event without ever yielding: the loop was
    stuck for as long as the server kept sending."""
    holder = {}

    async def main():
        with Client() as c:
            sess = Session(c, flood_url)
            holder["s"] = sess
            ticks = []

            async def tick():
                while True:
                    ticks.append(time.monotonic())
                    await asyncio.sleep(0.01)

            async def consume(s):
                n = 0
                async for ev in s:
                    if ev.kind == "message":
                        n += 1
                return n

            async with AsyncSession(sess) as s:
                await _connected(s)
                tk = asyncio.ensure_future(tick())
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(consume(s), 1.0)
                tk.cancel()
            gaps = [b - a for a, b in zip(ticks, ticks[1:])]
            assert len(ticks) > 20 and max(gaps) < 0.5, "ticks %d, longest gap %.2fs" % (len(ticks), max(gaps or [0]))

    _bounded(main, 20, unstick=lambda: holder["s"].close())


def test_aio_adv_burst_of_ten_thousand(ws_url):
    """10,000 events in one burst: all come, in order, and the loop ticks
    meanwhile."""
    async def main():
        with Client() as c:
            async with AsyncSession(Session(c, ws_url + "/count")) as s:
                await _connected(s)
                ticks = []

                async def tick():
                    while True:
                        ticks.append(1)
                        await asyncio.sleep(0)

                tk = asyncio.ensure_future(tick())
                s.session.send("go")
                got = []
                while len(got) < 10000:
                    ev = await s.next_event(10)
                    assert ev is not None, "the burst stopped at %d" % len(got)
                    if ev.kind == "message":
                        got.append(ev.data)
                tk.cancel()
                assert got == [str(i) for i in range(10000)]
                assert len(ticks) > 100, "the loop ran %d other steps during 10,000 events" % len(ticks)

    _bounded(main, 60)


def test_aio_adv_unclosed_session_collected(ws_url):
    """An AsyncSession dropped without closing, its loop gone: collecting
    it neither crashes nor leaves a reader; the Session it wraps is the
    host's to free, and freeing it still works."""
    with Client() as c:
        sess = Session(c, ws_url + "/echo")

        async def main():
            s = AsyncSession(sess)
            await _connected(s)
            assert await s.next_event(0.05) is None

        _bounded(main, 30)
        gc.collect()
        sess.send("still")
        sess.free()
        assert os.getpid() > 0


def test_aio_adv_async_free_from_another_thread(ws_url, monkeypatch):
    """AsyncSession.free() called from a plain thread while a coroutine
    awaits on the loop: the await ends with LifelineCanceled at once, not
    when its wait slice runs out (the wake must reach the loop's thread;
    the slice is made 5 s here so that the difference shows)."""
    import lifeline_aio

    monkeypatch.setattr(lifeline_aio, "_SLICE", 5.0)

    async def main():
        with Client() as c:
            s = AsyncSession(Session(c, ws_url + "/echo"))
            await _connected(s)
            threading.Timer(0.2, s.free).start()
            t0 = time.monotonic()
            with pytest.raises(LifelineCanceled):
                await asyncio.wait_for(s.next_event(), 10)
            assert time.monotonic() - t0 < 3, "woken after %.1fs" % (time.monotonic() - t0)

    _bounded(main, 30)
