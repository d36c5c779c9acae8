"""asyncio over the lifeline binding, with nothing but the standard library.

Sessions and streamed bodies already expose a descriptor that is readable
exactly while a call would return at once (lifeline_session_event_fd,
lifeline_body_fd). This module waits on it with loop.add_reader, so a
coroutine that awaits an event or a piece of a body holds no thread and
never blocks the loop; the calls it then makes return at once (timeout 0).

    async with AsyncSession(Session(client, url)) as s:
        async for ev in s:                 # every event, "closed" last
            ...

    stream = AsyncStream(client.stream("GET", url))
    async for chunk in stream:             # the body as it arrives
        ...

Every wait is bounded the library's way (the stall limit, the handshake
limit, close from any thread) and, when you pass one, by your timeout.
One coroutine at a time may wait on a given session or stream (the
descriptor has one reader callback per loop); any number of sessions and
streams may be awaited together (asyncio.gather, asyncio.wait).
"""

import asyncio

from lifeline import LifelineCanceled, LifelineReadTimeout


async def _readable(fd, timeout):
    """Waits until fd is readable, at most timeout seconds (None: no
    limit); returns False when the time ran out."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def ready():
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await asyncio.wait_for(fut, timeout)
        return True
    except asyncio.TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


def _left(loop, deadline):
    return None if deadline is None else max(0.0, deadline - loop.time())


class AsyncSession:
    """An asyncio view of a lifeline_session.Session: await next_event(),
    or iterate with async for. Sending stays the Session's (a plain send
    never waits for a connection: it fails at once while disconnected, and
    each write is bounded by write_timeout_ms). Leaving an async with
    block frees the session."""

    def __init__(self, session):
        self.session = session
        self._fd = session.fileno()
        self._ended = False

    async def next_event(self, timeout=None):
        """The next event, waiting at most timeout seconds (None: until
        one comes); None when none came in time. Raises LifelineCanceled
        once the "closed" event was taken."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            ev = self.session.next_event(0)
            if ev is not None:
                if ev.kind == "closed":
                    self._ended = True
                return ev
            left = _left(loop, deadline)
            if left == 0:
                return None
            await _readable(self._fd, left)

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._ended:
            raise StopAsyncIteration
        try:
            return await self.next_event()
        except LifelineCanceled:
            raise StopAsyncIteration from None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.session.free()


class AsyncStream:
    """An asyncio view of a lifeline.Stream: await read(), or iterate the
    body's pieces with async for. Leaving an async with block closes the
    stream (ends the request, frees its handle)."""

    def __init__(self, stream):
        self.stream = stream
        self._fd = stream.fileno()

    async def read(self, size=65536, timeout=None):
        """The next bytes of the body (1..size of them), b"" at its end.
        Waits at most timeout seconds (None: until a byte, the end or a
        failure), then raises LifelineReadTimeout (read again later). The
        stream's failures are raised as by Stream.read: LifelineTimeout
        with phase "stall" when the peer stopped sending, LifelineCanceled
        after cancel(), the request's own error when it got no headers."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            try:
                return self.stream.read(size, timeout=0)
            except LifelineReadTimeout:
                left = _left(loop, deadline)
                if left == 0:
                    raise
            await _readable(self._fd, left)

    async def response(self, timeout=None):
        """The status and headers (Stream.response) once they arrived, at
        most timeout seconds (then LifelineReadTimeout). The descriptor
        tells bytes, not headers: while none arrive this checks every
        20 ms."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self.stream._op.poll():
            left = _left(loop, deadline)
            if left == 0:
                return self.stream.response(0)  # raises LifelineReadTimeout
            await _readable(self._fd, 0.02 if left is None else min(left, 0.02))
        return self.stream.response(0)

    def cancel(self):
        self.stream.cancel()

    def __aiter__(self):
        return self

    async def __anext__(self):
        b = await self.read()
        if not b:
            raise StopAsyncIteration
        return b

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.stream.close()
