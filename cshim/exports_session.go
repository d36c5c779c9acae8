package main

/*
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "lifeline.h"

// Helpers in shim.c.
void *lifeline_shim_alloc(size_t n);
void lifeline_shim_set_error(lifeline_error *err, int32_t status, int32_t timeout,
	const char *phase, size_t phase_len, const char *type, size_t type_len,
	const char *msg, size_t msg_len);
// In session_shim.c.
void lifeline_shim_session_call(lifeline_session_callback cb, lifeline_session s, lifeline_event *ev,
	uintptr_t user_data);
*/
import "C"

import (
	"net/http"
	"net/url"
	"strings"
	"time"
	"unsafe"

	"github.com/lifeline-go/lifeline/transport"
)

// The constants of session.go must be those of lifeline.h (a compile
// error otherwise).
var _ = [1]struct{}{}[C.LIFELINE_E_DISCONNECTED-statusDisconnected]
var _ = [1]struct{}{}[C.LIFELINE_EVENT_CONNECT-eventConnect]
var _ = [1]struct{}{}[C.LIFELINE_EVENT_CONNECTED-eventConnected]
var _ = [1]struct{}{}[C.LIFELINE_EVENT_MESSAGE-eventMessage]
var _ = [1]struct{}{}[C.LIFELINE_EVENT_DISCONNECTED-eventDisconnected]
var _ = [1]struct{}{}[C.LIFELINE_EVENT_STATE-eventState]
var _ = [1]struct{}{}[C.LIFELINE_EVENT_CLOSED-eventClosed]
var _ = [1]struct{}{}[C.LIFELINE_SEND_WHEN_CONNECTED-sendWhenConnected]
var _ = [1]struct{}{}[C.LIFELINE_SEND_ON_CONNECT-sendOnConnect]
var _ = [1]struct{}{}[C.LIFELINE_SESSION_CONNECTING-int32(transport.WebSocketConnecting)]
var _ = [1]struct{}{}[C.LIFELINE_SESSION_CONNECTED-int32(transport.WebSocketConnected)]
var _ = [1]struct{}{}[C.LIFELINE_SESSION_DISCONNECTED-int32(transport.WebSocketDisconnected)]
var _ = [1]struct{}{}[C.LIFELINE_SESSION_CLOSED-int32(transport.WebSocketClosed)]

// maxMessageLen bounds one send's length argument.
const maxMessageLen = 1 << 31

func lookupSession(h uint64) (*session, *Error) {
	obj := handles.get(h)
	if s, ok := obj.(*session); ok {
		return s, nil
	}
	k := kindOf(obj)
	msg := "lifeline: unknown session handle " + itoa(int64(h)) + " (never issued, or already freed)"
	switch {
	case h == 0:
		msg = "lifeline: session handle 0 is never valid"
	case k != kindNone:
		msg = "lifeline: handle " + itoa(int64(h)) + " is a " + k.String() + ", not a session"
	}
	return nil, &Error{Status: statusInvalidHandle, Phase: "argument", Type: "invalid_handle", Msg: msg}
}

// readHeaders copies and checks a host's header array.
func readHeaders(hs *C.lifeline_header, count C.int64_t) (http.Header, *Error) {
	n := int64(count)
	switch {
	case n < 0:
		return nil, argError("header_count %d is negative", n)
	case n > maxHeaders:
		return nil, argError("header_count %d is above %d", n, maxHeaders)
	case n > 0 && hs == nil:
		return nil, argError("headers is NULL with header_count %d", n)
	}
	out := http.Header{}
	if n == 0 {
		return out, nil
	}
	for i, h := range unsafe.Slice(hs, n) {
		name, value, e := readHeader(h.name, h.value, "headers["+itoa(int64(i))+"]")
		if e != nil {
			return nil, e
		}
		out.Add(name, value)
	}
	return out, nil
}

func readHeader(cname, cvalue *C.char, at string) (string, string, *Error) {
	name, e := cstr(cname, at+".name")
	if e != nil {
		return "", "", e
	}
	if !isToken(name) {
		return "", "", argError("%s.name is not an HTTP token", at)
	}
	if e := checkSessionHeader(name, at+".name"); e != nil {
		return "", "", e
	}
	value, e := cstr(cvalue, at+".value")
	if e != nil {
		return "", "", e
	}
	if strings.ContainsAny(value, "\r\n") {
		return "", "", argError("%s.value contains CR or LF", at)
	}
	return name, value, nil
}

//export lifelinego_session_new
func lifelinego_session_new(h C.lifeline_client, curl *C.char, hs *C.lifeline_header, count C.int64_t,
	config *C.char, out *C.lifeline_session, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		if out == nil {
			return argError("out is NULL")
		}
		*out = 0
		c, e := lookupClient(uint64(h))
		if e != nil {
			return e
		}
		u, e := cstr(curl, "url")
		if e != nil {
			return e
		}
		// Messages never echo the URL: its path and query may hold secrets.
		pu, err := url.Parse(u)
		switch {
		case err != nil:
			return argError("url does not parse as a URL")
		case pu.Scheme != "ws" && pu.Scheme != "wss":
			return argError("url: scheme %q is not ws or wss", pu.Scheme)
		case pu.Host == "":
			return argError("url has no host")
		}
		hdr, e := readHeaders(hs, count)
		if e != nil {
			return e
		}
		var doc []byte
		if config != nil {
			cfg, e := cstr(config, "config")
			if e != nil {
				return e
			}
			doc = []byte(cfg)
		}
		sc, e := parseSessionConfig(doc)
		if e != nil {
			return e
		}
		s, e := newSession(c, u, hdr, sc)
		if e != nil {
			return e
		}
		*out = C.lifeline_session(s.id)
		return nil
	})
}

//export lifelinego_session_next_event
func lifelinego_session_next_event(h C.lifeline_session, timeout C.int64_t, out **C.lifeline_event,
	cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		if out == nil {
			return argError("event is NULL")
		}
		*out = nil
		s, e := lookupSession(uint64(h))
		if e != nil {
			return e
		}
		d := time.Duration(-1)
		if int64(timeout) >= 0 {
			d = time.Duration(min(int64(timeout), maxDeadlineMS)) * time.Millisecond
		}
		ev, e := s.next(d)
		if e != nil {
			return e
		}
		return giveEvent(ev, out)
	})
}

// giveEvent lays an event out in one allocation: the struct, then the
// message bytes and a NUL. The cause's message is the record's own
// allocation (lifeline_event_free clears it).
func giveEvent(ev sessEvent, out **C.lifeline_event) *Error {
	const align = 8
	head := (C.sizeof_lifeline_event + align - 1) / align * align
	total := head + len(ev.data) + 1
	p := C.lifeline_shim_alloc(C.size_t(total))
	if p == nil {
		return &Error{Status: statusNoMemory, Type: "no_memory",
			Msg: "lifeline: out of memory for an event of " + itoa(int64(total)) + " bytes; the event is lost"}
	}
	mem := unsafe.Slice((*byte)(p), total)
	ce := (*C.lifeline_event)(p)
	*ce = C.lifeline_event{}
	ce.kind = C.int32_t(ev.kind)
	ce.state = C.int32_t(ev.state)
	ce.message_type = C.int32_t(ev.msgType)
	ce.connection = C.uint64_t(ev.conn)
	copy(mem[head:], ev.data)
	mem[head+len(ev.data)] = 0
	ce.data = (*C.uint8_t)(unsafe.Pointer(&mem[head]))
	ce.len = C.int64_t(len(ev.data))
	if ev.cause != nil {
		report(&ce.cause, ev.cause)
	}
	*out = ce
	return nil
}

//export lifelinego_session_event_fd
func lifelinego_session_event_fd(h C.lifeline_session, fd *C.int, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		if fd == nil {
			return argError("fd is NULL")
		}
		*fd = -1
		s, e := lookupSession(uint64(h))
		if e != nil {
			return e
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.freed || s.rfd < 0 {
			return lookupSessionGone(uint64(h))
		}
		*fd = C.int(s.rfd)
		return nil
	})
}

func lookupSessionGone(h uint64) *Error {
	return &Error{Status: statusInvalidHandle, Phase: "argument", Type: "invalid_handle",
		Msg: "lifeline: unknown session handle " + itoa(int64(h)) + " (never issued, or already freed)"}
}

//export lifelinego_session_send
func lifelinego_session_send(h C.lifeline_session, typ C.int32_t, buf *C.uint8_t, n C.int64_t, timeout C.int64_t,
	flags C.uint32_t, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		s, e := lookupSession(uint64(h))
		if e != nil {
			return e
		}
		switch {
		case n < 0:
			return argError("len %d is negative", int64(n))
		case int64(n) > maxMessageLen:
			return argError("len %d is above %d", int64(n), int64(maxMessageLen))
		case n > 0 && buf == nil:
			return argError("buf is NULL with len %d", int64(n))
		}
		d, e := millis(timeout, "timeout_ms")
		if e != nil {
			return e
		}
		data := make([]byte, n)
		if n > 0 {
			copy(data, unsafe.Slice((*byte)(unsafe.Pointer(buf)), n))
		}
		return s.send(int(typ), data, d, int(flags))
	})
}

//export lifelinego_session_wait_connected
func lifelinego_session_wait_connected(h C.lifeline_session, timeout C.int64_t, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		s, e := lookupSession(uint64(h))
		if e != nil {
			return e
		}
		d := time.Duration(-1)
		if int64(timeout) >= 0 {
			d = time.Duration(min(int64(timeout), maxDeadlineMS)) * time.Millisecond
		}
		return s.waitConnected(d)
	})
}

//export lifelinego_session_set_header
func lifelinego_session_set_header(h C.lifeline_session, name, value *C.char, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		s, e := lookupSession(uint64(h))
		if e != nil {
			return e
		}
		if value == nil {
			n, e := cstr(name, "name")
			if e != nil {
				return e
			}
			if !isToken(n) {
				return argError("name is not an HTTP token")
			}
			if e := checkSessionHeader(n, "name"); e != nil {
				return e
			}
			s.setHeader(n, nil)
			return nil
		}
		n, v, e := readHeader(name, value, "header")
		if e != nil {
			return e
		}
		s.setHeader(n, &v)
		return nil
	})
}

//export lifelinego_session_ready
func lifelinego_session_ready(h C.lifeline_session, conn C.uint64_t, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		s, e := lookupSession(uint64(h))
		if e != nil {
			return e
		}
		return s.ready(uint64(conn))
	})
}

//export lifelinego_session_state
func lifelinego_session_state(h C.lifeline_session, state *C.int32_t, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		if state == nil {
			return argError("state is NULL")
		}
		s, e := lookupSession(uint64(h))
		if e != nil {
			return e
		}
		*state = C.int32_t(s.ws.State())
		return nil
	})
}

//export lifelinego_session_close
func lifelinego_session_close(h C.lifeline_session, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		s, e := lookupSession(uint64(h))
		if e != nil {
			return e
		}
		s.close()
		return nil
	})
}

//export lifelinego_session_free
func lifelinego_session_free(h C.lifeline_session, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		s, e := lookupSession(uint64(h))
		if e != nil {
			return e
		}
		if !handles.remove(uint64(h)) {
			return lookupSessionGone(uint64(h)) // freed concurrently
		}
		s.free()
		return nil
	})
}

//export lifelinego_session_set_callback
func lifelinego_session_set_callback(h C.lifeline_session, cb C.lifeline_session_callback, ud C.uintptr_t,
	cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		if cb == nil {
			return argError("callback is NULL")
		}
		s, e := lookupSession(uint64(h))
		if e != nil {
			return e
		}
		id := s.id
		return s.startDelivery(func(ev sessEvent) {
			var out *C.lifeline_event
			if e := giveEvent(ev, &out); e != nil {
				return // out of C memory: the event is lost (lifeline.h)
			}
			C.lifeline_shim_session_call(cb, C.lifeline_session(id), out, ud)
		})
	})
}
