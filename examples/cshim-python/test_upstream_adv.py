"""Adversarial tests of ABI 3 (issue 23) from the host's side, through the
raw C calls: NULL and garbage options and flags of
lifeline_request_start_opts, a wait for ready without a deadline, the text
of an E_UNAVAILABLE error, ill-typed and unknown configuration keys, and
the status -> Python type mapping. Loopback only."""

import ctypes
import socket
import time

import pytest

import lifeline
from lifeline import (Client, LifelineCanceled, LifelineError, LifelineTimeout,
                      LifelineUnavailable, _CallOptions, _Error, _request)


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _start_opts(c, url, flags, opts, deadline_ms=5000):
    """lifeline_request_start_opts as a host would call it: returns
    (status, op handle, error record)."""
    req, keep = _request("GET", url, None, b"", deadline_ms)
    err = _Error()
    op = ctypes.c_uint64(12345)  # garbage: must be overwritten
    st = c._lib.lifeline_request_start_opts(c.handle, ctypes.byref(req), flags, opts, lifeline._CALLBACK(0),
                                             None, ctypes.byref(op), ctypes.byref(err))
    del keep
    return st, op.value, err


def _msg(err):
    return ctypes.string_at(err.message).decode() if err.message else ""


def _down(c, url):
    for _ in range(5):
        with pytest.raises(LifelineError) as ei:
            c.request("GET", url)
        assert ei.value.error_type == "connect_refused", ei.value


@pytest.mark.parametrize("flags", [1, 4, 8, 0x80000000, 0xFFFFFFFF, 3])
def test_unknown_flag_bits_refused(flags):
    """Every bit but WAIT_FOR_READY (STREAM_UPLOAD included) is refused with
    E_INVALID_ARGUMENT naming the bits; *op is 0 and nothing runs."""
    with Client({"retry.max_attempts": 1}) as c:
        st, op, err = _start_opts(c, "http://127.0.0.1:%d/" % _closed_port(), flags, None)
        assert st == lifeline.E_INVALID_ARGUMENT, st
        assert op == 0
        assert "unknown bits" in _msg(err)
        c._lib.lifeline_error_clear(ctypes.byref(err))


def test_null_opts_with_wait_for_ready_and_garbage_opts():
    """NULL opts keeps the client's limits (WAIT_FOR_READY still applies);
    options out of range are E_INVALID_ARGUMENT naming the field."""
    port = _closed_port()
    url = "http://127.0.0.1:%d/" % port
    with Client({"retry.max_attempts": 1}) as c:
        _down(c, url)
        st, op, err = _start_opts(c, url, lifeline.CALL_WAIT_FOR_READY, None, deadline_ms=700)
        assert st == lifeline.OK, _msg(err)
        o = lifeline.Operation(c._lib, op, False)
        try:
            t0 = time.monotonic()
            assert o.wait(timeout=10)
            took = time.monotonic() - t0
            with pytest.raises(LifelineTimeout) as ei:
                o.result()
            assert 0.5 < took < 5, "waited for ready within its deadline: %.3fs" % took
            assert not isinstance(ei.value, LifelineUnavailable)
        finally:
            o.free()
        for bad, field in [(_CallOptions(0, 0, -1), "max_attempts"), (_CallOptions(0, 0, 101), "max_attempts"),
                           (_CallOptions(-(2 ** 63), 0, 0), None), (_CallOptions(2 ** 63 - 1, 0, 0), None),
                           (_CallOptions(0, 2 ** 63 - 1, 0), None)]:
            st, op, err = _start_opts(c, url, 0, ctypes.byref(bad))
            if field is not None:
                assert st == lifeline.E_INVALID_ARGUMENT and field in _msg(err), (st, _msg(err))
                assert op == 0
            elif st == lifeline.OK:
                # Accepted: a huge limit is no limit beyond the deadline.
                o = lifeline.Operation(c._lib, op, False)
                try:
                    assert o.wait(timeout=10)
                    with pytest.raises(LifelineError):
                        o.result()
                finally:
                    o.free()
            else:
                assert st == lifeline.E_INVALID_ARGUMENT, (st, _msg(err))
            c._lib.lifeline_error_clear(ctypes.byref(err))


def test_null_op_pointer():
    with Client() as c:
        req, keep = _request("GET", "http://127.0.0.1:1/", None, b"", 1000)
        err = _Error()
        st = c._lib.lifeline_request_start_opts(c.handle, ctypes.byref(req), 0, None, lifeline._CALLBACK(0),
                                                 None, None, ctypes.byref(err))
        assert st == lifeline.E_INVALID_ARGUMENT and "op" in _msg(err)
        c._lib.lifeline_error_clear(ctypes.byref(err))


def test_wait_for_ready_without_deadline_ends_by_cancel_and_close():
    """WAIT_FOR_READY with deadline_ms < 0 (none) waits for the upstream;
    cancel ends it at once with E_CANCELED, and so does closing the client
    (E_CLOSED): no wait outlives its host's word."""
    port = _closed_port()
    url = "http://127.0.0.1:%d/" % port
    c = Client({"retry.max_attempts": 1})
    try:
        _down(c, url)
        st, op, err = _start_opts(c, url, lifeline.CALL_WAIT_FOR_READY, None, deadline_ms=-1)
        assert st == lifeline.OK, _msg(err)
        o = lifeline.Operation(c._lib, op, False)
        assert not o.wait(timeout=1.5), "waits for ready"
        t0 = time.monotonic()
        o.cancel()
        assert o.wait(timeout=2), "cancel ends the wait"
        assert time.monotonic() - t0 < 1
        with pytest.raises(LifelineCanceled) as ei:
            o.result()
        assert ei.value.status == lifeline.E_CANCELED
        o.free()

        st, op, err = _start_opts(c, url, lifeline.CALL_WAIT_FOR_READY, None, deadline_ms=-1)
        assert st == lifeline.OK
        o = lifeline.Operation(c._lib, op, False)
        assert not o.wait(timeout=0.3)
    finally:
        t0 = time.monotonic()
        c.close()
    assert time.monotonic() - t0 < 2, "close ends a wait for ready"
    assert o.wait(timeout=2)
    with pytest.raises(LifelineCanceled) as ei:
        o.result()
    assert ei.value.status == lifeline.E_CLOSED
    o.free()


def test_unavailable_text_has_no_secret():
    """The E_UNAVAILABLE of a URL with userinfo, a query and a fragment names
    the host:port and the last failure, never the secrets."""
    port = _closed_port()
    url = "http://alice:s3cr3tpw@127.0.0.1:%d/p/x?token=t0k3nv4l&sig=abc#frag9" % port
    with Client({"retry.max_attempts": 1}) as c:
        msgs = []
        for _ in range(5):
            with pytest.raises(LifelineError) as ei:
                c.request("GET", url, headers={"Authorization": "Bearer hdrs3cr3t"})
            msgs.append(ei.value.message)
        with pytest.raises(LifelineUnavailable) as ei:
            c.request("GET", url, headers={"Authorization": "Bearer hdrs3cr3t"})
        e = ei.value
        msgs.append(e.message)
        assert e.status == lifeline.E_UNAVAILABLE and e.error_type == "unavailable" and e.phase == "upstream"
        assert "127.0.0.1:%d" % port in e.message
        for m in msgs:
            for secret in ("s3cr3tpw", "alice", "t0k3nv4l", "sig=", "frag9", "hdrs3cr3t", "/p/x"):
                assert secret not in m, (secret, m)


@pytest.mark.parametrize("doc,status", [
    ({"transport.disable_fail_fast": "yes"}, lifeline.E_BAD_VALUE),
    ({"transport.disable_fail_fast": 1}, lifeline.E_BAD_VALUE),
    ({"transport.disable_fail_fast": None}, lifeline.E_BAD_VALUE),
    ({"transport": {"disable_load_shedding": [True]}}, lifeline.E_BAD_VALUE),
    ({"transport.disable_failfast": True}, lifeline.E_UNKNOWN_KEY),
    ({"transport": {"disable_fail_fast": {"x": 1}}}, None),
    ({"transport.wait_for_ready": True}, lifeline.E_UNKNOWN_KEY),
])
def test_ill_typed_and_unknown_keys(doc, status):
    """Ill-typed values and unknown keys are refused, naming the key, and
    leave the client's configuration as it was."""
    with Client() as c:
        with pytest.raises(LifelineError) as ei:
            c.configure(doc)
        if status is not None:
            assert ei.value.status == status, ei.value
        else:
            assert ei.value.status in (lifeline.E_BAD_VALUE, lifeline.E_UNKNOWN_KEY), ei.value
        assert "disable_" in ei.value.message or "wait_for_ready" in ei.value.message, ei.value.message
        cfg = c.config()
        assert cfg["transport.disable_fail_fast"] is False and cfg["transport.disable_load_shedding"] is False


def test_every_status_has_its_type():
    """Every status code of lifeline.h reaches a documented type:
    E_UNAVAILABLE only LifelineUnavailable, which no other code reaches."""
    expect = {lifeline.E_TIMEOUT: LifelineTimeout, lifeline.E_CANCELED: LifelineCanceled,
              lifeline.E_CLOSED: LifelineCanceled, lifeline.E_UNAVAILABLE: LifelineUnavailable}
    for code in range(1, 21):
        cls = lifeline._error_class(code)
        assert issubclass(cls, LifelineError)
        assert cls is expect.get(code, LifelineError), (code, cls)
    lib = lifeline.load()
    lib.lifeline_status_string.restype = ctypes.c_char_p
    lib.lifeline_status_string.argtypes = [ctypes.c_int32]
    assert lib.lifeline_status_string(lifeline.E_UNAVAILABLE).startswith(b"LIFELINE_E_UNAVAILABLE")
