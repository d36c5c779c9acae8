"""A small ctypes binding of liblifeline (lifeline's C ABI, cshim/lifeline.h).

    from lifeline import Client
    with Client({"transport.first_byte_timeout_ms": 2000}) as c:
        resp = c.request("GET", "https://example.test/items", deadline_ms=5000)
        print(resp.status, resp.body)

Every call is bounded: a request ends by its deadline at the latest. Blocking
methods wait in short slices (WAIT_SLICE_MS), so Ctrl-C (KeyboardInterrupt)
interrupts them: the operation is then cancelled and freed before the
exception propagates. ctypes releases the GIL during each call, so other
Python threads keep running; completion callbacks arrive on library threads
and ctypes takes the GIL for them.

The library path comes from $LIFELINE_LIB, else ../../cshim/liblifeline.so
(make cshim-shared builds it).
"""

import ctypes
import itertools
import json
import os
import socket
import threading
import weakref

WAIT_SLICE_MS = 50

# Status codes (lifeline.h, enum lifeline_status).
OK = 0
E_INVALID_ARGUMENT = 1
E_UNKNOWN_KEY = 2
E_BAD_VALUE = 3
E_INVALID_HANDLE = 4
E_STATE = 5
E_PENDING = 6
E_TIMEOUT = 7
E_CANCELED = 8
E_NETWORK = 9
E_TOO_LARGE = 10
E_CLOSED = 11
E_FORKED = 12
E_INTERNAL = 13
E_NO_MEMORY = 14
E_UNAVAILABLE = 15

ABI_VERSION = 3

# Flags of lifeline_request_start_stream (and, for CALL_WAIT_FOR_READY, of
# lifeline_request_start_opts).
STREAM_UPLOAD = 1
CALL_WAIT_FOR_READY = 2


class _Error(ctypes.Structure):
    _fields_ = [
        ("status", ctypes.c_int32),
        ("timeout", ctypes.c_int32),
        ("phase", ctypes.c_char * 16),
        ("error_type", ctypes.c_char * 32),
        ("message", ctypes.c_void_p),  # char *, freed by lifeline_error_clear
    ]


class _Header(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_char_p)]


class _Request(ctypes.Structure):
    _fields_ = [
        ("method", ctypes.c_char_p),
        ("url", ctypes.c_char_p),
        ("headers", ctypes.POINTER(_Header)),
        ("header_count", ctypes.c_int64),
        ("body", ctypes.c_void_p),
        ("body_len", ctypes.c_int64),
        ("deadline_ms", ctypes.c_int64),
    ]


class _CallOptions(ctypes.Structure):
    _fields_ = [
        ("first_byte_timeout_ms", ctypes.c_int64),
        ("stall_timeout_ms", ctypes.c_int64),
        ("max_attempts", ctypes.c_int64),
    ]


class _Response(ctypes.Structure):
    _fields_ = [
        ("status", ctypes.c_int32),
        ("proto_major", ctypes.c_int32),
        ("proto_minor", ctypes.c_int32),
        ("reserved", ctypes.c_int32),
        ("headers", ctypes.POINTER(_Header)),
        ("header_count", ctypes.c_int64),
        ("body", ctypes.c_void_p),
        ("body_len", ctypes.c_int64),
    ]


_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_uint64, ctypes.c_int32, ctypes.c_void_p)


class LifelineError(Exception):
    """A failed call: status code, phase ("dns", "connect", "tls",
    "first_byte", "stall", "deadline", "canceled", ...), whether a time
    limit caused it, a short class and a message."""

    def __init__(self, status, phase="", error_type="", timeout=False, message=""):
        super().__init__(message or "lifeline status %d" % status)
        self.status = status
        self.phase = phase
        self.error_type = error_type
        self.timeout = timeout
        self.message = message


class LifelineTimeout(LifelineError, TimeoutError):
    """A time limit ended the operation (LIFELINE_E_TIMEOUT)."""


class LifelineReadTimeout(LifelineTimeout):
    """A Stream.read or Stream.write whose own timeout passed (phase "read"
    or "write"): not a failure, the stream stays usable."""


class LifelineCanceled(LifelineError):
    """The operation was cancelled (LIFELINE_E_CANCELED or E_CLOSED)."""


class LifelineUnavailable(LifelineError):
    """The request was not attempted (LIFELINE_E_UNAVAILABLE, phase
    "upstream"): its upstream is known down (error_type "unavailable"; the
    message carries the last real failure) or the client shed it to let a
    drowning upstream recover (error_type "shed"). It comes at once, while
    the library probes the upstream about once a second; the first success
    re-opens it. Pass wait_for_ready=True to wait for the upstream instead."""

    @property
    def shed(self):
        """True when the client shed the call (a drowning upstream), False
        when the upstream is known down."""
        return self.error_type == "shed"


def _error_class(status, phase=""):
    if status == E_TIMEOUT and phase in ("read", "write"):
        return LifelineReadTimeout
    if status == E_TIMEOUT:
        return LifelineTimeout
    if status in (E_CANCELED, E_CLOSED):
        return LifelineCanceled
    if status == E_UNAVAILABLE:
        return LifelineUnavailable
    return LifelineError


def _default_path():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "..", "cshim", "liblifeline.so")


_lib = None
_lib_lock = threading.Lock()


def load(path=None):
    """Loads the library once per process (a Go runtime cannot be loaded
    twice, nor unloaded) and checks its ABI version."""
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        path = path or os.environ.get("LIFELINE_LIB") or _default_path()
        lib = ctypes.CDLL(path)
        E = ctypes.POINTER(_Error)
        u64, i64, i32 = ctypes.c_uint64, ctypes.c_int64, ctypes.c_int32
        sigs = {
            "lifeline_abi_version": ([], ctypes.c_uint32),
            "lifeline_version": ([], ctypes.c_char_p),
            "lifeline_status_string": ([i32], ctypes.c_char_p),
            "lifeline_error_clear": ([E], None),
            "lifeline_free": ([ctypes.c_void_p], None),
            "lifeline_response_free": ([ctypes.POINTER(_Response)], None),
            "lifeline_client_new": ([ctypes.POINTER(u64), E], i32),
            "lifeline_client_configure": ([u64, ctypes.c_char_p, E], i32),
            "lifeline_client_config_json": ([u64, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t), E], i32),
            "lifeline_client_metrics_json": ([u64, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t), E], i32),
            "lifeline_client_close": ([u64, E], i32),
            "lifeline_request_start": ([u64, ctypes.POINTER(_Request), _CALLBACK, ctypes.c_void_p, ctypes.POINTER(u64), E], i32),
            "lifeline_dial_start": ([u64, ctypes.c_char_p, ctypes.c_char_p, i64, _CALLBACK, ctypes.c_void_p, ctypes.POINTER(u64), E], i32),
            "lifeline_op_wait": ([u64, i64, E], i32),
            "lifeline_op_poll": ([u64, E], i32),
            "lifeline_op_cancel": ([u64, E], i32),
            "lifeline_op_response": ([u64, ctypes.POINTER(ctypes.POINTER(_Response)), E], i32),
            "lifeline_op_fd": ([u64, ctypes.POINTER(ctypes.c_int), E], i32),
            "lifeline_op_free": ([u64, E], i32),
            "lifeline_request_start_stream": ([u64, ctypes.POINTER(_Request), ctypes.c_uint32, ctypes.POINTER(_CallOptions), _CALLBACK, ctypes.c_void_p, ctypes.POINTER(u64), E], i32),
            "lifeline_body_read": ([u64, ctypes.c_void_p, ctypes.c_size_t, i64, ctypes.POINTER(ctypes.c_size_t), E], i32),
            "lifeline_body_available": ([u64, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_int), E], i32),
            "lifeline_body_write": ([u64, ctypes.c_void_p, ctypes.c_size_t, i64, ctypes.POINTER(ctypes.c_size_t), E], i32),
            "lifeline_body_close_write": ([u64, E], i32),
            "lifeline_body_fd": ([u64, ctypes.POINTER(ctypes.c_int), E], i32),
            "lifeline_request_start_opts": ([u64, ctypes.POINTER(_Request), ctypes.c_uint32, ctypes.POINTER(_CallOptions), _CALLBACK, ctypes.c_void_p, ctypes.POINTER(u64), E], i32),
        }
        for name, (args, res) in sigs.items():
            fn = getattr(lib, name)
            fn.argtypes = args
            fn.restype = res
        if lib.lifeline_abi_version() < ABI_VERSION:
            raise LifelineError(E_STATE, message="liblifeline ABI %d, binding wants %d or newer"
                                % (lib.lifeline_abi_version(), ABI_VERSION))
        _lib = lib
        return lib


def version():
    return load().lifeline_version().decode()


def _cstr(s, what):
    """s encoded for a char * argument. C reads it up to the first NUL, so a
    Python string with one would arrive cut — a different URL, header or
    address than the caller wrote: refused instead."""
    b = s.encode() if isinstance(s, str) else bytes(s)
    if b"\0" in b:
        raise ValueError("lifeline: %s contains a NUL character at index %d" % (what, b.index(b"\0")))
    return b


def _check(lib, status, err):
    """Raises the error in err (and clears it) when status is not OK."""
    if status == OK:
        return
    msg = ctypes.string_at(err.message).decode("utf-8", "replace") if err.message else ""
    phase = err.phase.decode()
    e = _error_class(status, phase)(status, phase, err.error_type.decode(), bool(err.timeout), msg)
    lib.lifeline_error_clear(ctypes.byref(err))
    raise e


# One callback thunk for the whole process, never freed: a ctypes thunk
# that is garbage-collected while the library may still call it would
# crash the host. Per-operation handlers are found by the user_data key.
_handlers = {}
_handlers_lock = threading.Lock()
_keys = itertools.count(1)


@_CALLBACK
def _dispatch(op, status, user_data):
    with _handlers_lock:
        fn = _handlers.pop(user_data or 0, None)
    if fn is not None:
        try:
            fn(op, status)
        except Exception:  # never let an exception cross into the library
            import traceback
            traceback.print_exc()


class Response:
    def __init__(self, status, headers, body, proto):
        self.status = status
        self.headers = headers  # list of (name, value), names canonical
        self.body = body
        self.proto = proto

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


class Operation:
    """A running request or dial. Wait for it, poll it, cancel it (from any
    thread), take its result; free it (or use it as a context manager)."""

    def __init__(self, lib, handle, is_dial, client=None):
        self._lib = lib
        self.handle = handle
        self._is_dial = is_dial
        self._freed = False
        # The client lives while its operations do (a Client() dropped at
        # once must not close under them); an operation dropped unfreed is
        # freed by the garbage collector.
        self._client = client
        self._finalizer = weakref.finalize(self, lib.lifeline_op_free, handle, None)

    def wait(self, timeout=None):
        """Waits until the operation finished, at most timeout seconds
        (None: until it does, which it does by its deadline), in short
        slices so that KeyboardInterrupt gets through. True when finished."""
        lib, err = self._lib, _Error()
        remaining = None if timeout is None else max(0, int(timeout * 1000))
        while True:
            slice_ms = WAIT_SLICE_MS if remaining is None else min(WAIT_SLICE_MS, remaining)
            st = lib.lifeline_op_wait(self.handle, slice_ms, ctypes.byref(err))
            if st == OK:
                return True
            if st != E_PENDING:
                _check(lib, st, err)
            # E_PENDING fills the record too: its message is the library's
            # to free (one allocation per slice otherwise).
            lib.lifeline_error_clear(ctypes.byref(err))
            if remaining is not None:
                remaining -= slice_ms
                if remaining <= 0:
                    return False

    def poll(self):
        err = _Error()
        st = self._lib.lifeline_op_poll(self.handle, ctypes.byref(err))
        if st == E_PENDING:
            self._lib.lifeline_error_clear(ctypes.byref(err))
            return False
        _check(self._lib, st, err)
        return True

    def cancel(self):
        err = _Error()
        _check(self._lib, self._lib.lifeline_op_cancel(self.handle, ctypes.byref(err)), err)

    def result(self):
        """The Response of a finished request, or raises its error."""
        lib, err = self._lib, _Error()
        out = ctypes.POINTER(_Response)()
        _check(lib, lib.lifeline_op_response(self.handle, ctypes.byref(out), ctypes.byref(err)), err)
        try:
            r = out.contents
            headers = [(r.headers[i].name.decode(), r.headers[i].value.decode("latin-1"))
                       for i in range(r.header_count)]
            body = ctypes.string_at(r.body, r.body_len)
            return Response(r.status, headers, body, (r.proto_major, r.proto_minor))
        finally:
            lib.lifeline_response_free(out)

    def socket(self):
        """The connected socket of a finished dial, or raises its error."""
        lib, err = self._lib, _Error()
        fd = ctypes.c_int(-1)
        _check(lib, lib.lifeline_op_fd(self.handle, ctypes.byref(fd), ctypes.byref(err)), err)
        try:
            return socket.socket(fileno=fd.value)
        except OSError:
            os.close(fd.value)
            raise

    def free(self):
        if not self._freed:
            self._freed = True
            self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()


def _request(method, url, headers, body, deadline_ms):
    """A lifeline_request and the Python objects its pointers point into
    (kept alive by the caller until the start call returned)."""
    hs = list((headers or {}).items()) if isinstance(headers, dict) else list(headers or [])
    arr = (_Header * max(1, len(hs)))()
    keep = []
    method_b = _cstr(method, "method") if method else None
    url_b = _cstr(url, "url")
    for i, (k, v) in enumerate(hs):
        kb, vb = _cstr(k, "header name %r" % k), _cstr(v, "value of header %r" % k)
        keep += [kb, vb]
        arr[i] = _Header(kb, vb)
    body = bytes(body or b"")
    buf = ctypes.create_string_buffer(body, len(body)) if body else None
    keep += [arr, method_b, url_b, buf]
    req = _Request(method_b, url_b, arr, len(hs),
                   ctypes.cast(buf, ctypes.c_void_p) if buf is not None else None, len(body), deadline_ms)
    return req, keep


class Stream:
    """A streamed request (Client.stream). Its body is read in pieces with
    read() (or by iterating), its headers come with response(); with
    upload=True, write() and close_write() send the request body. Every
    wait is bounded: by the timeout you pass (LifelineReadTimeout, after
    which the stream stays usable), by the client's stall limit, by
    cancel() from any thread. Waits run in short slices, so Ctrl-C
    (KeyboardInterrupt) gets through. Close it (or use it as a context
    manager): that ends the request and frees its handle."""

    def __init__(self, op):
        self._op = op
        self._lib = op._lib
        self._response = None

    @property
    def handle(self):
        return self._op.handle

    def response(self, timeout=None):
        """The status and headers (a Response with body b""), waiting for
        them at most timeout seconds (None: as long as the request may
        take). Raises the request's error, or LifelineReadTimeout."""
        if self._response is None:
            if not self._op.wait(timeout):
                raise LifelineReadTimeout(E_TIMEOUT, "read", "read_timeout", True,
                                          "lifeline: no response headers within %ss" % timeout)
            self._response = self._op.result()
        return self._response

    @property
    def status(self):
        return self.response().status

    @property
    def headers(self):
        return self.response().headers

    def read(self, size=65536, timeout=None):
        """The next bytes of the body (1..size of them), b"" at its end.
        Waits at most timeout seconds (None: until a byte, the end or a
        failure), then raises LifelineReadTimeout (read again later).
        Raises LifelineTimeout (phase "stall", a final failure),
        LifelineCanceled, LifelineError."""
        lib, err = self._lib, _Error()
        buf = ctypes.create_string_buffer(max(1, size))
        n = ctypes.c_size_t()
        remaining = None if timeout is None else max(0, int(timeout * 1000))
        while True:
            slice_ms = WAIT_SLICE_MS if remaining is None else min(WAIT_SLICE_MS, remaining)
            st = lib.lifeline_body_read(self._op.handle, buf, len(buf), slice_ms, ctypes.byref(n), ctypes.byref(err))
            if st == OK:
                return buf.raw[:n.value]
            if st == E_TIMEOUT and err.phase == b"read" and (remaining is None or remaining > slice_ms):
                lib.lifeline_error_clear(ctypes.byref(err))
                if remaining is not None:
                    remaining -= slice_ms
                continue
            _check(lib, st, err)

    def __iter__(self):
        """The body's pieces as they arrive, until its end."""
        while True:
            b = self.read()
            if not b:
                return
            yield b

    def available(self):
        """(bytes buffered, ended): what a read(timeout=0) would find."""
        lib, err = self._lib, _Error()
        n, ended = ctypes.c_size_t(), ctypes.c_int()
        _check(lib, lib.lifeline_body_available(self._op.handle, ctypes.byref(n), ctypes.byref(ended),
                                                ctypes.byref(err)), err)
        return n.value, bool(ended.value)

    def fileno(self):
        """A descriptor readable exactly while read(timeout=0) would return
        at once (bytes, the end, or a failure): for selectors, select and
        asyncio's loop.add_reader. The library's: never read or close it;
        it is closed with the stream (unregister it first)."""
        lib, err = self._lib, _Error()
        fd = ctypes.c_int(-1)
        _check(lib, lib.lifeline_body_fd(self._op.handle, ctypes.byref(fd), ctypes.byref(err)), err)
        return fd.value

    def write(self, data, timeout=None):
        """Writes data to the request body (upload=True), waiting while the
        library's 64 KiB buffer is full, at most timeout seconds (None: as
        long as the request lives). Returns the number of bytes taken:
        len(data), or fewer when timeout passed first. Raises the request's
        failure (e.g. phase "upload_stall"), LifelineCanceled."""
        lib, err = self._lib, _Error()
        data = bytes(data)
        buf = ctypes.create_string_buffer(data, len(data)) if data else None
        taken = 0
        remaining = None if timeout is None else max(0, int(timeout * 1000))
        n = ctypes.c_size_t()
        while True:
            slice_ms = WAIT_SLICE_MS if remaining is None else min(WAIT_SLICE_MS, remaining)
            ptr = ctypes.cast(ctypes.addressof(buf) + taken, ctypes.c_void_p) if buf is not None else None
            st = lib.lifeline_body_write(self._op.handle, ptr, len(data) - taken, slice_ms, ctypes.byref(n),
                                         ctypes.byref(err))
            taken += n.value
            if st == OK:
                return taken
            if st == E_TIMEOUT and err.phase == b"write":
                lib.lifeline_error_clear(ctypes.byref(err))
                if remaining is not None:
                    remaining -= slice_ms
                    if remaining <= 0:
                        return taken
                continue
            _check(lib, st, err)

    def close_write(self):
        """Ends the request body: the server sees its end."""
        err = _Error()
        _check(self._lib, self._lib.lifeline_body_close_write(self._op.handle, ctypes.byref(err)), err)

    def cancel(self):
        """Ends the request from any thread: a blocked read or write raises
        LifelineCanceled within 100 ms."""
        self._op.cancel()

    def close(self):
        self._op.free()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Client:
    """A lifeline client: a connection pool with finite limits everywhere.
    config is a dict of keys (lifeline.h lists them), dotted or nested."""

    def __init__(self, config=None, lib=None):
        self._lib = load(lib)
        err = _Error()
        h = ctypes.c_uint64()
        _check(self._lib, self._lib.lifeline_client_new(ctypes.byref(h), ctypes.byref(err)), err)
        self.handle = h.value
        # A client dropped unclosed is closed by the garbage collector
        # (its operations and sessions hold it while they live).
        self._finalizer = weakref.finalize(self, self._lib.lifeline_client_close, h.value, None)
        if config:
            try:
                self.configure(config)
            except BaseException:
                self.close()
                raise

    def configure(self, config):
        err = _Error()
        doc = json.dumps(config).encode()
        _check(self._lib, self._lib.lifeline_client_configure(self.handle, doc, ctypes.byref(err)), err)

    def _json(self, fn):
        err = _Error()
        out = ctypes.c_void_p()
        n = ctypes.c_size_t()
        _check(self._lib, fn(self.handle, ctypes.byref(out), ctypes.byref(n), ctypes.byref(err)), err)
        try:
            return json.loads(ctypes.string_at(out, n.value))
        finally:
            self._lib.lifeline_free(out)

    def config(self):
        return self._json(self._lib.lifeline_client_config_json)

    def metrics(self):
        return self._json(self._lib.lifeline_client_metrics_json)

    def start(self, method, url, headers=None, body=b"", deadline_ms=0, callback=None,
              wait_for_ready=False, first_byte_timeout_ms=0, stall_timeout_ms=0, max_attempts=0):
        """Starts a request; callback(op_handle, status), if given, runs once
        on a library thread when it finishes. wait_for_ready=True makes it
        wait, within its deadline, for an upstream known down instead of
        failing at once with LifelineUnavailable. first_byte_timeout_ms,
        stall_timeout_ms and max_attempts change the client's limits for
        this call only, as in stream()."""
        req, keep = _request(method, url, headers, body, deadline_ms)
        if not (wait_for_ready or first_byte_timeout_ms or stall_timeout_ms or max_attempts):
            return self._start(lambda cb, ud, op, err: self._lib.lifeline_request_start(
                self.handle, ctypes.byref(req), cb, ud, op, err), callback, False)
        flags = CALL_WAIT_FOR_READY if wait_for_ready else 0
        opts = _CallOptions(first_byte_timeout_ms, stall_timeout_ms, max_attempts)
        return self._start(lambda cb, ud, op, err: self._lib.lifeline_request_start_opts(
            self.handle, ctypes.byref(req), flags, ctypes.byref(opts), cb, ud, op, err), callback, False)

    def stream(self, method, url, headers=None, body=b"", deadline_ms=-1, upload=False,
               first_byte_timeout_ms=0, stall_timeout_ms=0, max_attempts=0, wait_for_ready=False):
        """Starts a streamed request and returns its Stream at once: read the
        response body in pieces as it arrives (a download, server-sent
        events, a long poll), and with upload=True write the request body in
        pieces (body, if given, is sent first). deadline_ms bounds the whole
        stream, body included (-1, the default here: no total deadline; the
        client's transport.stall_timeout_ms still fails a body that stops,
        and 0 means the client's request_timeout_ms). The client's
        max_response_bytes does not apply. first_byte_timeout_ms,
        stall_timeout_ms and max_attempts change the client's limits for
        this call only (0: the client's; a negative limit: off, e.g.
        first_byte_timeout_ms=-1 for a long poll; max_attempts=1: no
        retry). wait_for_ready=True: as in start()."""
        req, keep = _request(method, url, headers, body, deadline_ms)
        flags = (STREAM_UPLOAD if upload else 0) | (CALL_WAIT_FOR_READY if wait_for_ready else 0)
        opts = _CallOptions(first_byte_timeout_ms, stall_timeout_ms, max_attempts)
        op = self._start(lambda cb, ud, o, err: self._lib.lifeline_request_start_stream(
            self.handle, ctypes.byref(req), flags, ctypes.byref(opts), cb, ud, o, err), None, False)
        return Stream(op)

    def _start(self, call, callback, is_dial):
        key = 0
        if callback is not None:
            key = next(_keys)
            with _handlers_lock:
                _handlers[key] = callback
        err = _Error()
        op = ctypes.c_uint64()
        st = call(_dispatch, ctypes.c_void_p(key), ctypes.byref(op), ctypes.byref(err))
        if st != OK:
            with _handlers_lock:
                _handlers.pop(key, None)
        _check(self._lib, st, err)
        return Operation(self._lib, op.value, is_dial, self)

    def request(self, method, url, headers=None, body=b"", deadline_ms=0, **options):
        """Performs a request and returns its Response; raises LifelineError
        (LifelineTimeout, LifelineCanceled, LifelineUnavailable) on failure.
        Ctrl-C cancels it. options: those of start() (wait_for_ready,
        first_byte_timeout_ms, stall_timeout_ms, max_attempts)."""
        op = self.start(method, url, headers, body, deadline_ms, **options)
        try:
            op.wait()
            return op.result()
        except BaseException:
            op.cancel()
            raise
        finally:
            # After a cancel, the wait is short (cancel takes effect within
            # 100 ms) and keeps free from racing the completion.
            try:
                op.wait(timeout=1)
            finally:
                op.free()

    def dial(self, network, address, deadline_ms=0):
        """Dials "tcp" or "tls" and returns a connected socket.socket
        (for "tls", a Unix socket carrying plaintext, relayed by the library)."""
        network_b, address_b = _cstr(network, "network"), _cstr(address, "address")
        op = self._start(lambda cb, ud, o, err: self._lib.lifeline_dial_start(
            self.handle, network_b, address_b, deadline_ms, cb, ud, o, err), None, network)
        try:
            op.wait()
            return op.socket()
        except BaseException:
            op.cancel()
            raise
        finally:
            try:
                op.wait(timeout=1)
            finally:
                op.free()

    def close(self):
        if self.handle:
            self.handle = 0
            self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
