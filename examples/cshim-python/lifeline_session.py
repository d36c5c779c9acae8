"""Websocket sessions of liblifeline (lifeline.h, ABI 2) for the ctypes
binding in lifeline.py.

    from lifeline import Client
    from lifeline_session import Session
    with Client() as c, Session(c, "wss://api.example.test/ws") as s:
        s.wait_connected(timeout=10)
        s.send("subscribe")
        for ev in s:                 # blocks in short slices; Ctrl-C works
            if ev.kind == "message":
                print(ev.data)

A session reconnects by itself; events (connect, connected, message,
disconnected, state, closed) come in order. For asyncio, poll the event
descriptor: loop.add_reader(s.fileno(), drain) where drain calls
s.next_event(0) until it returns None.
"""

import ctypes
import json
import threading
import weakref

import lifeline
from lifeline import WAIT_SLICE_MS, LifelineCanceled, LifelineError, _check, _cstr, _Error, _Header, load

E_DISCONNECTED = 20

KINDS = {1: "connect", 2: "connected", 3: "message", 4: "disconnected", 5: "state", 6: "closed"}
STATES = {0: "connecting", 1: "connected", 2: "disconnected", 3: "closed"}
SEND_WHEN_CONNECTED = 1
SEND_ON_CONNECT = 2


class LifelineDisconnected(LifelineError):
    """A send found no connection (LIFELINE_E_DISCONNECTED)."""


class _Event(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_int32),
        ("state", ctypes.c_int32),
        ("message_type", ctypes.c_int32),
        ("reserved", ctypes.c_int32),
        ("connection", ctypes.c_uint64),
        ("data", ctypes.c_void_p),
        ("len", ctypes.c_int64),
        ("cause", _Error),
    ]


_sig_lock = threading.Lock()


def _lib():
    lib = load()
    with _sig_lock:
        if getattr(lib, "_sessions_ready", False):
            return lib
        E = ctypes.POINTER(_Error)
        u64, i64, i32 = ctypes.c_uint64, ctypes.c_int64, ctypes.c_int32
        EV = ctypes.POINTER(_Event)
        sigs = {
            "lifeline_event_free": ([EV], None),
            "lifeline_session_new": ([u64, ctypes.c_char_p, ctypes.POINTER(_Header), i64, ctypes.c_char_p,
                                      ctypes.POINTER(u64), E], i32),
            "lifeline_session_next_event": ([u64, i64, ctypes.POINTER(EV), E], i32),
            "lifeline_session_event_fd": ([u64, ctypes.POINTER(ctypes.c_int), E], i32),
            "lifeline_session_send": ([u64, i32, ctypes.c_char_p, i64, i64, ctypes.c_uint32, E], i32),
            "lifeline_session_wait_connected": ([u64, i64, E], i32),
            "lifeline_session_set_header": ([u64, ctypes.c_char_p, ctypes.c_char_p, E], i32),
            "lifeline_session_ready": ([u64, u64, E], i32),
            "lifeline_session_state": ([u64, ctypes.POINTER(i32), E], i32),
            "lifeline_session_close": ([u64, E], i32),
            "lifeline_session_free": ([u64, E], i32),
        }
        for name, (args, res) in sigs.items():
            fn = getattr(lib, name)
            fn.argtypes = args
            fn.restype = res
        lib._sessions_ready = True
        return lib


def _raise(lib, st, err):
    if st == E_DISCONNECTED:
        msg = ctypes.string_at(err.message).decode("utf-8", "replace") if err.message else ""
        e = LifelineDisconnected(st, err.phase.decode(), err.error_type.decode(), bool(err.timeout), msg)
        lib.lifeline_error_clear(ctypes.byref(err))
        raise e
    _check(lib, st, err)


class Event:
    """One event: kind ("connect", "connected", "message", "disconnected",
    "state", "closed"), state, connection number, data (str for text,
    bytes for binary messages, None otherwise) and cause (a LifelineError
    or None)."""

    def __init__(self, ev):
        self.kind = KINDS.get(ev.kind, str(ev.kind))
        self.state = STATES.get(ev.state, str(ev.state))
        self.connection = ev.connection
        self.data = None
        if ev.kind == 3:
            raw = ctypes.string_at(ev.data, ev.len)
            self.data = raw.decode() if ev.message_type == 1 else raw
        self.cause = None
        c = ev.cause
        if c.status:
            msg = ctypes.string_at(c.message).decode("utf-8", "replace") if c.message else ""
            self.cause = LifelineError(c.status, c.phase.decode(), c.error_type.decode(), bool(c.timeout), msg)

    def __repr__(self):
        return "Event(%s, connection=%d, state=%s)" % (self.kind, self.connection, self.state)


class Session:
    """A websocket session of a Client (see lifeline_session_new for the
    config keys). Free it with free() or a with block; close() from any
    thread ends it promptly, and the "closed" event comes last."""

    def __init__(self, client, url, headers=None, config=None):
        self._lib = _lib()
        hs = list((headers or {}).items())
        arr = (_Header * max(len(hs), 1))()
        for i, (k, v) in enumerate(hs):
            arr[i].name, arr[i].value = _cstr(k, "header name"), _cstr(v, "header value")
        doc = _cstr(json.dumps(config), "config") if config else None
        h, err = ctypes.c_uint64(), _Error()
        st = self._lib.lifeline_session_new(client.handle, _cstr(url, "url"), arr, len(hs), doc,
                                            ctypes.byref(h), ctypes.byref(err))
        _check(self._lib, st, err)
        self.handle = h.value
        self._freed = False
        # Dropped unfreed, a session is freed by the garbage collector (it
        # would redial for ever otherwise); it holds its client meanwhile.
        self._client = client
        self._finalizer = weakref.finalize(self, self._lib.lifeline_session_free, self.handle, None)

    def _call(self, fn, *args):
        err = _Error()
        st = fn(self.handle, *args, ctypes.byref(err))
        if st != 0:
            _raise(self._lib, st, err)

    def fileno(self):
        """The event descriptor: readable while an event waits (level-
        triggered). The library's: never close it."""
        fd = ctypes.c_int(-1)
        self._call(self._lib.lifeline_session_event_fd, ctypes.byref(fd))
        return fd.value

    def next_event(self, timeout=None):
        """The next event, waiting up to timeout seconds (None: until one
        comes, in short slices); None when none came in time. Raises
        LifelineCanceled after the "closed" event was taken."""
        remaining = None if timeout is None else int(timeout * 1000)
        while True:
            slice_ms = WAIT_SLICE_MS if remaining is None else min(WAIT_SLICE_MS, remaining)
            ev, err = ctypes.POINTER(_Event)(), _Error()
            st = self._lib.lifeline_session_next_event(self.handle, slice_ms, ctypes.byref(ev), ctypes.byref(err))
            if st == lifeline.OK:
                try:
                    return Event(ev.contents)
                finally:
                    self._lib.lifeline_event_free(ev)
            if st != lifeline.E_PENDING:
                _check(self._lib, st, err)
            if remaining is not None:
                remaining -= slice_ms
                if remaining <= 0:
                    return None

    def __iter__(self):
        """Every event until "closed" (included)."""
        while True:
            try:
                ev = self.next_event()
            except LifelineCanceled:
                return
            yield ev
            if ev.kind == "closed":
                return

    def send(self, data, timeout=0, when_connected=False, on_connect=False):
        """Sends str as a text message, bytes as binary. Fails at once with
        LifelineDisconnected while disconnected, unless when_connected
        (then waits up to timeout seconds; 0: the write timeout)."""
        typ = 1 if isinstance(data, str) else 2
        b = data.encode() if typ == 1 else bytes(data)
        flags = (SEND_WHEN_CONNECTED if when_connected else 0) | (SEND_ON_CONNECT if on_connect else 0)
        self._call(self._lib.lifeline_session_send, typ, b, len(b), int(timeout * 1000), flags)

    def wait_connected(self, timeout=None):
        """Waits until connected (in short slices, so Ctrl-C works); raises
        LifelineTimeout after timeout seconds, LifelineCanceled when closed."""
        remaining = None if timeout is None else int(timeout * 1000)
        while True:
            slice_ms = WAIT_SLICE_MS if remaining is None else min(WAIT_SLICE_MS, remaining)
            err = _Error()
            st = self._lib.lifeline_session_wait_connected(self.handle, slice_ms, ctypes.byref(err))
            if st == lifeline.OK:
                return
            if st != lifeline.E_TIMEOUT or (remaining is not None and remaining - slice_ms <= 0):
                _check(self._lib, st, err)
            self._lib.lifeline_error_clear(ctypes.byref(err))
            if remaining is not None:
                remaining -= slice_ms

    def set_header(self, name, value):
        """Sets (value None: removes) a handshake header of the next dials."""
        self._call(self._lib.lifeline_session_set_header, _cstr(name, "name"),
                   None if value is None else _cstr(value, "value"))

    def ready(self, connection):
        self._call(self._lib.lifeline_session_ready, connection)

    @property
    def state(self):
        v = ctypes.c_int32()
        self._call(self._lib.lifeline_session_state, ctypes.byref(v))
        return STATES.get(v.value, str(v.value))

    def close(self):
        self._call(self._lib.lifeline_session_close)

    def free(self):
        if not self._freed:
            self._freed = True
            self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()
