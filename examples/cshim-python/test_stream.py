"""pytest suite of streamed bodies through the ctypes binding: a body read
in pieces as it trickles, a body that stalls, a blocked read ended from
another thread, an upload in pieces and one whose peer reads nothing."""

import threading
import time

import pytest

import lifeline
from lifeline import Client, LifelineCanceled, LifelineError, LifelineReadTimeout, LifelineTimeout


def _live(c):
    return c.metrics()["process"]["live_allocations"]


def test_sse_trickle(stream_url):
    """Events 50 ms apart: reads with a 10 ms timeout raise
    LifelineReadTimeout between them and the stream stays readable; every
    event arrives, then the end (b""), every time after it too."""
    with Client() as c, c.stream("GET", stream_url + "/sse") as s:
        assert s.status == 200 and s.response().header("Content-Type") == "text/event-stream"
        got, timeouts = b"", 0
        while True:
            try:
                b = s.read(timeout=0.01)
            except LifelineReadTimeout as e:
                assert e.phase == "read" and e.error_type == "read_timeout"
                timeouts += 1
                continue
            if not b:
                break
            got += b
        assert got == b"".join(b"data: event %d\n\n" % i for i in range(5))
        assert timeouts > 0
        assert s.read(timeout=0) == b"" and s.read() == b""
        assert s.available() == (0, True)


def test_iterate(stream_url):
    with Client() as c, c.stream("GET", stream_url + "/sse") as s:
        assert b"".join(s).count(b"data: ") == 5


def test_stalling_body(stream_url):
    """A body that stops mid-way fails at the client's stall limit with
    phase "stall" (a final LifelineTimeout, not a read timeout), after the
    bytes that came."""
    with Client({"transport.stall_timeout_ms": 300, "retry.max_attempts": 1}) as c:
        with c.stream("GET", stream_url + "/stall") as s:
            assert s.read() == b"partial"
            t0 = time.monotonic()
            with pytest.raises(LifelineTimeout) as ei:
                s.read()
            el = time.monotonic() - t0
            assert not isinstance(ei.value, LifelineReadTimeout)
            assert ei.value.phase == "stall" and ei.value.error_type == "stall_timeout"
            assert 0.2 <= el < 3.0, el
            with pytest.raises(LifelineTimeout):
                s.read(timeout=0)


def test_per_call_stall_limit(stream_url):
    """A stall limit for one call, on a client that has none."""
    with Client({"transport.stall_timeout_ms": -1, "retry.max_attempts": 1}) as c:
        with c.stream("GET", stream_url + "/stall", stall_timeout_ms=300) as s:
            assert s.read() == b"partial"
            with pytest.raises(LifelineTimeout) as ei:
                s.read(timeout=5)
            assert ei.value.phase == "stall"
        with pytest.raises(LifelineError) as ei:
            c.stream("GET", stream_url + "/stall", max_attempts=-1)
        assert ei.value.status == lifeline.E_INVALID_ARGUMENT


@pytest.mark.parametrize("how", ["cancel", "close_client"])
def test_cancel_blocked_read_from_another_thread(stream_url, how):
    """A read blocked without a timeout on a body that never ends returns
    when another thread cancels the stream or closes the client."""
    c = Client({"transport.stall_timeout_ms": -1})
    s = c.stream("GET", stream_url + "/stall")
    try:
        assert s.read() == b"partial"
        errors, ended = [], []

        def reader():
            try:
                s.read()
            except lifeline.LifelineError as e:
                errors.append(e)
            ended.append(time.monotonic())

        t = threading.Thread(target=reader)
        t.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        if how == "cancel":
            s.cancel()
        else:
            c.close()
        t.join(5)
        assert not t.is_alive() and ended[0] - t0 < 1.0
        assert len(errors) == 1 and isinstance(errors[0], LifelineCanceled)
        want = lifeline.E_CANCELED if how == "cancel" else lifeline.E_CLOSED
        assert errors[0].status == want
    finally:
        s.close()
        c.close()


def test_upload_in_pieces(stream_url):
    with Client() as c:
        before = _live(c)
        with c.stream("POST", stream_url + "/echo", body=b"head:", upload=True) as s:
            pieces = [bytes([65 + i % 26]) * 10000 for i in range(30)]
            for p in pieces:
                assert s.write(p, timeout=5) == len(p)
            s.close_write()
            assert s.response(timeout=5).status == 200
            assert b"".join(s) == b"head:" + b"".join(pieces)
        assert _live(c) == before


def test_upload_to_a_peer_that_reads_nothing(hang_addr):
    """The peer takes no byte: a write with a timeout returns short (the
    stream stays usable), and the upload then fails with phase
    "upload_stall" at the client's stall limit."""
    with Client({"transport.stall_timeout_ms": 300, "retry.max_attempts": 1}) as c:
        with c.stream("PUT", "http://%s/up" % hang_addr, upload=True) as s:
            piece = b"x" * (1 << 20)
            t0 = time.monotonic()
            while s.write(piece, timeout=0.05) == len(piece):
                assert time.monotonic() - t0 < 10
            with pytest.raises(LifelineTimeout) as ei:
                while True:
                    s.write(piece)
            assert ei.value.phase == "upload_stall"
            assert time.monotonic() - t0 < 10


def test_streams_leak_nothing(stream_url):
    with Client() as c:
        before = _live(c)
        for i in range(100):
            with c.stream("GET", stream_url + "/sse" if i % 10 == 0 else stream_url + "/stall") as s:
                assert s.read(timeout=5)
        assert _live(c) == before
        time.sleep(0.3)
        assert c.metrics()["client"]["in_flight"] == 0


def test_event_loop_reads_by_readiness(stream_url):
    """asyncio drives the stream from its own loop: add_reader on fileno(),
    read(timeout=0) when it fires, which never times out."""
    import asyncio

    async def main(s):
        loop = asyncio.get_running_loop()
        got, wakeups = b"", 0
        done = loop.create_future()

        def on_ready():
            nonlocal got, wakeups
            wakeups += 1
            b = s.read(timeout=0)
            if b:
                got += b
            elif not done.done():
                loop.remove_reader(s.fileno())
                done.set_result(None)

        loop.add_reader(s.fileno(), on_ready)
        await asyncio.wait_for(done, 10)
        return got, wakeups

    with Client() as c, c.stream("GET", stream_url + "/sse") as s:
        got, wakeups = asyncio.run(main(s))
    assert got == b"".join(b"data: event %d\n\n" % i for i in range(5))
    assert 2 <= wakeups <= 20
