"""asyncio over the binding (lifeline_aio): sessions and streamed bodies
awaited through their descriptors, with no thread held and the loop free
meanwhile. asyncio.run inside each test: no plugin needed."""

import asyncio

import pytest

from lifeline import Client, LifelineReadTimeout, LifelineTimeout
from lifeline_aio import AsyncSession, AsyncStream
from lifeline_session import Session


async def _ticker(ticks, stop):
    while not stop.is_set():
        ticks.append(1)
        await asyncio.sleep(0.01)


def test_aio_session_in_order_and_ends(ws_url):
    async def main():
        with Client() as c:
            async with AsyncSession(Session(c, ws_url + "/echo")) as s:
                ev = await s.next_event(5)
                while ev.kind != "connected":
                    ev = await s.next_event(5)
                assert await s.next_event(0.05) is None  # nothing waits: a timeout, not a hang
                for i in range(200):
                    s.session.send(str(i))
                got = []
                async for ev in s:
                    if ev.kind == "message":
                        got.append(ev.data)
                        if len(got) == 200:
                            s.session.close()
                    last = ev.kind
                assert got == [str(i) for i in range(200)]
                assert last == "closed"

    asyncio.run(main())


def test_aio_two_streams_and_a_ticker(stream_url):
    """Two event streams read together in one loop while a ticker runs: the
    awaits hold no thread and never block the loop."""
    async def read_all(st):
        body = b""
        async for b in st:
            body += b
        return body

    async def main():
        ticks, stop = [], asyncio.Event()
        with Client() as c:
            t = asyncio.ensure_future(_ticker(ticks, stop))
            async with AsyncStream(c.stream("GET", stream_url + "/sse")) as a, \
                    AsyncStream(c.stream("GET", stream_url + "/trickle")) as b:
                resp = await a.response(5)
                assert resp.status == 200
                ba, bb = await asyncio.gather(read_all(a), read_all(b))
            stop.set()
            await t
        assert ba == b"".join(b"data: event %d\n\n" % i for i in range(5))
        assert len(bb) == 40 * 200
        assert len(ticks) > 50, "the loop ticked %d times in ~2s: blocked" % len(ticks)

    asyncio.run(main())


def test_aio_stream_timeout_and_stall(stream_url):
    async def main():
        with Client({"transport.stall_timeout_ms": 300, "retry.max_attempts": 1}) as c:
            async with AsyncStream(c.stream("GET", stream_url + "/stall")) as st:
                assert await st.read(timeout=5) == b"partial"
                with pytest.raises(LifelineReadTimeout):
                    await st.read(timeout=0.05)  # nothing yet: read again later
                with pytest.raises(LifelineTimeout) as e:
                    await st.read()  # the stall limit ends it
                assert e.value.phase == "stall"

    asyncio.run(main())


def test_aio_cancel_ends_an_await(stream_url):
    async def main():
        with Client({"transport.stall_timeout_ms": -1}) as c:
            async with AsyncStream(c.stream("GET", stream_url + "/stall")) as st:
                assert await st.read(timeout=5) == b"partial"
                asyncio.get_running_loop().call_later(0.1, st.cancel)
                t0 = asyncio.get_running_loop().time()
                with pytest.raises(Exception) as e:
                    await st.read()
                assert asyncio.get_running_loop().time() - t0 < 2
                assert type(e.value).__name__ == "LifelineCanceled"

    asyncio.run(main())
