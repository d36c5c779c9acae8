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
Any number of coroutines may await the same session or stream (each
event or piece goes to one of them), and any number of sessions and
streams may be awaited together (asyncio.gather, asyncio.wait). A
coroutine that takes events or pieces as fast as a server sends them
still yields to the loop every few, so a flood never starves the loop.
Free a session or close a stream through these classes (free(), close(),
or leaving the async with block): awaits pending on it then raise
LifelineCanceled. Freed any other way (from another thread, say), a
pending await ends with the call's error within a second.
"""

import asyncio
import weakref

from lifeline import E_CLOSED, LifelineCanceled, LifelineReadTimeout

# The coroutines waiting on each descriptor, per loop: one reader callback
# wakes them all (a second add_reader on a descriptor replaces the first's
# callback, which would leave the first coroutine waiting for ever).
_waiting = weakref.WeakKeyDictionary()  # loop -> {fd: set of futures}

# The longest one wait on a descriptor lasts before the call is tried
# again: a descriptor closed under a wait (its handle freed behind this
# module's back) ends the await with the call's error, not never.
_SLICE = 1.0

# Events or pieces taken in a row without a wait before the coroutine
# yields to the loop once.
_RUN = 16


def _wake(waiters):
    for f in waiters:
        if not f.done():
            f.set_result(None)


async def _readable(fd, timeout):
    """Waits until fd is readable, at most timeout seconds (None: no
    limit) and at most _SLICE."""
    loop = asyncio.get_running_loop()
    fds = _waiting.setdefault(loop, {})
    waiters = fds.setdefault(fd, set())
    fut = loop.create_future()
    waiters.add(fut)
    # Registered anew at each wait: a registration that outlived its
    # descriptor (closed, its number reused) would never wake anyone.
    loop.remove_reader(fd)
    loop.add_reader(fd, _wake, waiters)
    try:
        await asyncio.wait_for(fut, _SLICE if timeout is None else min(timeout, _SLICE))
    except asyncio.TimeoutError:
        pass
    finally:
        waiters.discard(fut)
        if not waiters and fds.get(fd) is waiters:
            del fds[fd]
            loop.remove_reader(fd)


def _release(fd):
    """Wakes every coroutine waiting on fd and unregisters it: before the
    library closes it (a freed session, a closed stream). From any thread:
    another loop's waiters are released on that loop's thread."""
    try:
        here = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    for loop in list(_waiting.keys()):
        if loop is here:
            _drop(loop, fd)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(_drop, loop, fd)


def _drop(loop, fd):
    waiters = _waiting.get(loop, {}).pop(fd, None)
    if waiters is not None:
        loop.remove_reader(fd)
        _wake(waiters)


def _closed(what):
    return LifelineCanceled(E_CLOSED, "canceled", "closed", False, "lifeline: %s freed while awaited" % what)


def _left(loop, deadline):
    return None if deadline is None else max(0.0, deadline - loop.time())


class AsyncSession:
    """An asyncio view of a lifeline_session.Session: await next_event(),
    or iterate with async for. Sending stays the Session's (a plain send
    never waits for a connection: it fails at once while disconnected, and
    each write is bounded by write_timeout_ms). free(), or leaving an
    async with block, frees the session; dropped without either, the
    session stays the host's to free."""

    def __init__(self, session):
        self.session = session
        self._fd = session.fileno()
        self._ended = False
        self._freed = False
        self._run = 0

    async def next_event(self, timeout=None):
        """The next event, waiting at most timeout seconds (None: until
        one comes); None when none came in time. Raises LifelineCanceled
        once the "closed" event was taken, or after free()."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._run >= _RUN:
                # Before taking, not after: a cancel here loses no event.
                self._run = 0
                await asyncio.sleep(0)
            if self._freed:
                raise _closed("session")
            ev = self.session.next_event(0)
            if ev is not None:
                self._run += 1
                if ev.kind == "closed":
                    self._ended = True
                return ev
            self._run = 0
            left = _left(loop, deadline)
            if left == 0:
                return None
            await _readable(self._fd, left)

    def free(self):
        """Frees the session (Session.free); awaits pending on it raise
        LifelineCanceled. Idempotent."""
        if not self._freed:
            self._freed = True
            _release(self._fd)
            self.session.free()

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
        self.free()


class AsyncStream:
    """An asyncio view of a lifeline.Stream: await read(), or iterate the
    body's pieces with async for. close(), or leaving an async with block,
    closes the stream (ends the request, frees its handle)."""

    def __init__(self, stream):
        self.stream = stream
        self._fd = stream.fileno()
        self._closed = False
        self._run = 0

    async def read(self, size=65536, timeout=None):
        """The next bytes of the body (1..size of them), b"" at its end.
        Waits at most timeout seconds (None: until a byte, the end or a
        failure), then raises LifelineReadTimeout (read again later). The
        stream's failures are raised as by Stream.read: LifelineTimeout
        with phase "stall" when the peer stopped sending, LifelineCanceled
        after cancel() or close(), the request's own error when it got no
        headers."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._run >= _RUN:
                self._run = 0
                await asyncio.sleep(0)
            if self._closed:
                raise _closed("stream")
            try:
                b = self.stream.read(size, timeout=0)
                self._run += 1
                return b
            except LifelineReadTimeout:
                self._run = 0
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
        while True:
            if self._closed:
                raise _closed("stream")
            if self.stream._op.poll():
                return self.stream.response(0)
            left = _left(loop, deadline)
            if left == 0:
                return self.stream.response(0)  # raises LifelineReadTimeout
            await _readable(self._fd, 0.02 if left is None else min(left, 0.02))

    def cancel(self):
        self.stream.cancel()

    def close(self):
        """Closes the stream (Stream.close); awaits pending on it raise
        LifelineCanceled. Idempotent."""
        if not self._closed:
            self._closed = True
            _release(self._fd)
            self.stream.close()

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
        self.close()
