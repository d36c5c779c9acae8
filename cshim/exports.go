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
void lifeline_shim_call(lifeline_callback cb, lifeline_op op, int32_t status, uintptr_t user_data);
int64_t lifeline_shim_live(void);
*/
import "C"

import (
	"context"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"
)

// The status codes of core.go must be those of lifeline.h: each line is a
// compile error (an out-of-range index) when they differ.
var _ = [1]struct{}{}[C.LIFELINE_OK-statusOK]
var _ = [1]struct{}{}[C.LIFELINE_E_INVALID_ARGUMENT-statusInvalidArgument]
var _ = [1]struct{}{}[C.LIFELINE_E_UNKNOWN_KEY-statusUnknownKey]
var _ = [1]struct{}{}[C.LIFELINE_E_BAD_VALUE-statusBadValue]
var _ = [1]struct{}{}[C.LIFELINE_E_INVALID_HANDLE-statusInvalidHandle]
var _ = [1]struct{}{}[C.LIFELINE_E_STATE-statusState]
var _ = [1]struct{}{}[C.LIFELINE_E_PENDING-statusPending]
var _ = [1]struct{}{}[C.LIFELINE_E_TIMEOUT-statusTimeout]
var _ = [1]struct{}{}[C.LIFELINE_E_CANCELED-statusCanceled]
var _ = [1]struct{}{}[C.LIFELINE_E_NETWORK-statusNetwork]
var _ = [1]struct{}{}[C.LIFELINE_E_TOO_LARGE-statusTooLarge]
var _ = [1]struct{}{}[C.LIFELINE_E_CLOSED-statusClosed]
var _ = [1]struct{}{}[C.LIFELINE_E_FORKED-statusForked]
var _ = [1]struct{}{}[C.LIFELINE_E_INTERNAL-statusInternal]
var _ = [1]struct{}{}[C.LIFELINE_E_NO_MEMORY-statusNoMemory]
var _ = [1]struct{}{}[C.LIFELINE_E_UNAVAILABLE-statusUnavailable]

func init() {
	liveAllocations = func() int64 { return int64(C.lifeline_shim_live()) }
}

// Limits on what a host can pass, so that a garbage count fails cleanly
// instead of reading gigabytes.
const (
	maxHeaders    = 10000
	maxStringLen  = 1 << 20 // per string argument, NUL excluded
	maxBodyLen    = 1 << 34
	maxDeadlineMS = math.MaxInt64 / int64(time.Millisecond)
)

// cstr is a string argument: NUL-terminated, UTF-8, bounded.
func cstr(p *C.char, name string) (string, *Error) {
	if p == nil {
		return "", argError("%s is NULL", name)
	}
	n := C.strnlen(p, maxStringLen+1)
	if n > maxStringLen {
		return "", argError("%s is longer than %d bytes", name, maxStringLen)
	}
	s := C.GoStringN(p, C.int(n))
	if !utf8.ValidString(s) {
		return "", argError("%s is not valid UTF-8", name)
	}
	return s, nil
}

// report fills the host's error record (when it gave one) and returns the
// status.
func report(cerr *C.lifeline_error, e *Error) C.int32_t {
	if e == nil {
		if cerr != nil {
			C.lifeline_shim_set_error(cerr, 0, 0, nil, 0, nil, 0, nil, 0)
		}
		return C.LIFELINE_OK
	}
	if cerr != nil {
		msg := strings.ToValidUTF8(strings.ReplaceAll(e.Msg, "\x00", " "), "\uFFFD")
		timeout := C.int32_t(0)
		if e.Timeout {
			timeout = 1
		}
		C.lifeline_shim_set_error(cerr, C.int32_t(e.Status), timeout,
			strData(e.Phase), C.size_t(len(e.Phase)), strData(e.Type), C.size_t(len(e.Type)),
			strData(msg), C.size_t(len(msg)))
	}
	return C.int32_t(e.Status)
}

// strData passes a Go string's bytes to C for the duration of a call
// (they hold no Go pointers, so cgo's rules allow it).
func strData(s string) *C.char {
	if s == "" {
		return nil
	}
	return (*C.char)(unsafe.Pointer(unsafe.StringData(s)))
}

// export runs f under the guard (panic recovery, poisoning) and reports.
func export(cerr *C.lifeline_error, f func() *Error) C.int32_t {
	return report(cerr, guarded(f))
}

func millis(v C.int64_t, name string) (time.Duration, *Error) {
	if int64(v) > maxDeadlineMS || int64(v) < -maxDeadlineMS {
		return 0, argError("%s %d is out of range", name, int64(v))
	}
	return time.Duration(v) * time.Millisecond, nil
}

//export lifelinego_client_new
func lifelinego_client_new(out *C.lifeline_client, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		if out == nil {
			return argError("out is NULL")
		}
		c := newClient()
		*out = C.lifeline_client(c.id)
		return nil
	})
}

func setKey(h C.lifeline_client, key *C.char, v value) func() *Error {
	return func() *Error {
		c, e := lookupClient(uint64(h))
		if e != nil {
			return e
		}
		k, e := cstr(key, "key")
		if e != nil {
			return e
		}
		return c.configure(func(cfg *config) *Error { return cfg.setKey(k, v) })
	}
}

//export lifelinego_client_set_int
func lifelinego_client_set_int(h C.lifeline_client, key *C.char, v C.int64_t, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		// The key's own kind decides: durations and counts are both ints.
		k, e := cstr(key, "key")
		if e != nil {
			return e
		}
		kind := kInt
		if spec, ok := keys[k]; ok && spec.kind == kDuration {
			kind = kDuration
		}
		return setKey(h, key, value{kind: kind, i: int64(v)})()
	})
}

//export lifelinego_client_set_double
func lifelinego_client_set_double(h C.lifeline_client, key *C.char, v C.double, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, setKey(h, key, value{kind: kFloat, f: float64(v)}))
}

//export lifelinego_client_set_bool
func lifelinego_client_set_bool(h C.lifeline_client, key *C.char, v C.int, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		if v != 0 && v != 1 {
			return argError("value %d: a boolean is 0 or 1", int(v))
		}
		return setKey(h, key, value{kind: kBool, b: v == 1})()
	})
}

//export lifelinego_client_set_string
func lifelinego_client_set_string(h C.lifeline_client, key *C.char, v *C.char, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		s, e := cstr(v, "value")
		if e != nil {
			return e
		}
		return setKey(h, key, value{kind: kString, s: s})()
	})
}

//export lifelinego_client_configure
func lifelinego_client_configure(h C.lifeline_client, doc *C.char, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		c, e := lookupClient(uint64(h))
		if e != nil {
			return e
		}
		if doc == nil {
			return argError("json is NULL")
		}
		n := C.strnlen(doc, maxStringLen+1)
		if n > maxStringLen {
			return argError("json is longer than %d bytes", maxStringLen)
		}
		data := C.GoBytes(unsafe.Pointer(doc), C.int(n))
		return c.configure(func(cfg *config) *Error {
			next, e := cfg.configureJSON(data)
			if e != nil {
				return e
			}
			*cfg = next
			return nil
		})
	})
}

// giveString copies s into library memory for the host.
func giveString(s []byte, out **C.char, n *C.size_t) *Error {
	p := C.lifeline_shim_alloc(C.size_t(len(s) + 1))
	if p == nil {
		return &Error{Status: statusNoMemory, Type: "no_memory", Msg: "lifeline: out of memory"}
	}
	buf := unsafe.Slice((*byte)(p), len(s)+1)
	copy(buf, s)
	buf[len(s)] = 0
	*out = (*C.char)(p)
	if n != nil {
		*n = C.size_t(len(s))
	}
	return nil
}

//export lifelinego_client_config_json
func lifelinego_client_config_json(h C.lifeline_client, out **C.char, n *C.size_t, cerr *C.lifeline_error) C.int32_t {
	return clientString(h, out, n, cerr, (*client).configJSON)
}

//export lifelinego_client_metrics_json
func lifelinego_client_metrics_json(h C.lifeline_client, out **C.char, n *C.size_t, cerr *C.lifeline_error) C.int32_t {
	return clientString(h, out, n, cerr, (*client).snapshot)
}

// clientString hands the host a string that get makes from a client: the
// shared body of the exports that return a client's JSON.
func clientString(h C.lifeline_client, out **C.char, n *C.size_t, cerr *C.lifeline_error,
	get func(*client) ([]byte, *Error)) C.int32_t {
	return export(cerr, func() *Error {
		if out == nil {
			return argError("out is NULL")
		}
		*out = nil
		c, e := lookupClient(uint64(h))
		if e != nil {
			return e
		}
		data, e := get(c)
		if e != nil {
			return e
		}
		return giveString(data, out, n)
	})
}

//export lifelinego_client_close
func lifelinego_client_close(h C.lifeline_client, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		c, e := lookupClient(uint64(h))
		if e != nil {
			return e
		}
		if !handles.remove(uint64(h)) {
			return handleError(uint64(h), kindClient, kindNone) // closed concurrently
		}
		c.close()
		return nil
	})
}

// isToken reports whether s is an HTTP token (RFC 9110 §5.6.2).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0:
		default:
			return false
		}
	}
	return true
}

// readRequest copies and checks a host's request.
func readRequest(r *C.lifeline_request) (*request, *Error) {
	if r == nil {
		return nil, argError("req is NULL")
	}
	out := &request{method: http.MethodGet}
	if r.method != nil {
		m, e := cstr(r.method, "req->method")
		if e != nil {
			return nil, e
		}
		if m != "" {
			if !isToken(m) {
				return nil, argError("req->method is not an HTTP token")
			}
			out.method = m
		}
	}
	u, e := cstr(r.url, "req->url")
	if e != nil {
		return nil, e
	}
	// Messages never echo the URL: its path and query may hold secrets.
	pu, err := url.Parse(u)
	switch {
	case err != nil:
		return nil, argError("req->url does not parse as a URL")
	case pu.Scheme != "http" && pu.Scheme != "https":
		return nil, argError("req->url: scheme %q is not http or https", pu.Scheme)
	case pu.Host == "":
		return nil, argError("req->url has no host")
	}
	out.url = u
	count := int64(r.header_count)
	switch {
	case count < 0:
		return nil, argError("req->header_count %d is negative", count)
	case count > maxHeaders:
		return nil, argError("req->header_count %d is above %d", count, maxHeaders)
	case count > 0 && r.headers == nil:
		return nil, argError("req->headers is NULL with header_count %d", count)
	}
	if count > 0 {
		hs := unsafe.Slice(r.headers, count)
		out.headers = make([][2]string, 0, count)
		for i := range hs {
			name, e := cstr(hs[i].name, "req->headers["+itoa(int64(i))+"].name")
			if e != nil {
				return nil, e
			}
			if !isToken(name) {
				return nil, argError("req->headers[%d].name is not an HTTP token", i)
			}
			val, e := cstr(hs[i].value, "req->headers["+itoa(int64(i))+"].value")
			if e != nil {
				return nil, e
			}
			if strings.ContainsAny(val, "\r\n") {
				return nil, argError("req->headers[%d].value contains CR or LF", i)
			}
			out.headers = append(out.headers, [2]string{name, val})
		}
	}
	n := int64(r.body_len)
	switch {
	case n < 0:
		return nil, argError("req->body_len %d is negative", n)
	case n > maxBodyLen:
		return nil, argError("req->body_len %d is above %d", n, int64(maxBodyLen))
	case n > 0 && r.body == nil:
		return nil, argError("req->body is NULL with body_len %d", n)
	}
	if n > 0 {
		out.body = make([]byte, n)
		copy(out.body, unsafe.Slice((*byte)(unsafe.Pointer(r.body)), n))
	}
	out.deadline, e = millis(r.deadline_ms, "req->deadline_ms")
	if e != nil {
		return nil, e
	}
	return out, nil
}

// callbackOf wraps the host's callback; user_data travels as an integer
// (it may not be a pointer at all, and Go must never scan it as one).
func callbackOf(cb C.lifeline_callback, ud C.uintptr_t) func(uint64, int32) {
	if cb == nil {
		return nil
	}
	return func(id uint64, status int32) {
		C.lifeline_shim_call(cb, C.lifeline_op(id), C.int32_t(status), ud)
	}
}

func startRequest(h C.lifeline_client, r *C.lifeline_request, cb func(uint64, int32), register bool) (*op, *Error) {
	c, e := lookupClient(uint64(h))
	if e != nil {
		return nil, e
	}
	req, e := readRequest(r)
	if e != nil {
		return nil, e
	}
	deadline := req.deadline
	if deadline < 0 {
		deadline = -1
	}
	return c.start(false, deadline, cb, register, func(ctx context.Context, b *built, o *op) *Error {
		return doRequest(ctx, b, o, req)
	})
}

//export lifelinego_request_do
func lifelinego_request_do(h C.lifeline_client, r *C.lifeline_request, out **C.lifeline_response, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		if out == nil {
			return argError("out is NULL")
		}
		*out = nil
		// No handle: nobody else can name this operation.
		o, e := startRequest(h, r, nil, false)
		if e != nil {
			return e
		}
		o.wait(-1)
		resp, e := o.takeResponse()
		o.free()
		if e != nil {
			return e
		}
		return giveResponse(resp, out)
	})
}

//export lifelinego_request_start
func lifelinego_request_start(h C.lifeline_client, r *C.lifeline_request, cb C.lifeline_callback, ud C.uintptr_t,
	opOut *C.lifeline_op, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		if opOut == nil {
			return argError("op is NULL")
		}
		*opOut = 0
		o, e := startRequest(h, r, callbackOf(cb, ud), true)
		if e != nil {
			return e
		}
		*opOut = C.lifeline_op(o.id)
		return nil
	})
}

// giveResponse lays a response out in one allocation: the struct, the
// header array, the header strings, the body and a NUL.
func giveResponse(r *response, out **C.lifeline_response) *Error {
	const align = 8
	head := (C.sizeof_lifeline_response + align - 1) / align * align
	hdrs := len(r.headers) * C.sizeof_lifeline_header
	strs := 0
	for _, h := range r.headers {
		strs += len(h[0]) + len(h[1]) + 2
	}
	total := head + hdrs + strs + len(r.body) + 1
	p := C.lifeline_shim_alloc(C.size_t(total))
	if p == nil {
		return &Error{Status: statusNoMemory, Type: "no_memory", Msg: "lifeline: out of memory for a response of " + itoa(int64(total)) + " bytes"}
	}
	mem := unsafe.Slice((*byte)(p), total)
	cr := (*C.lifeline_response)(p)
	*cr = C.lifeline_response{}
	cr.status = C.int32_t(r.status)
	cr.proto_major = C.int32_t(r.major)
	cr.proto_minor = C.int32_t(r.minor)
	cr.header_count = C.int64_t(len(r.headers))
	off := head + hdrs
	put := func(s string) *C.char {
		start := off
		copy(mem[off:], s)
		mem[off+len(s)] = 0
		off += len(s) + 1
		return (*C.char)(unsafe.Pointer(&mem[start]))
	}
	if len(r.headers) > 0 {
		cr.headers = (*C.lifeline_header)(unsafe.Pointer(&mem[head]))
		hs := unsafe.Slice(cr.headers, len(r.headers))
		for i, h := range r.headers {
			hs[i].name = put(h[0])
			hs[i].value = put(h[1])
		}
	}
	cr.body = (*C.uint8_t)(unsafe.Pointer(&mem[off]))
	cr.body_len = C.int64_t(len(r.body))
	copy(mem[off:], r.body)
	mem[off+len(r.body)] = 0
	*out = cr
	return nil
}

func startDial(h C.lifeline_client, network, address *C.char, deadline C.int64_t, cb func(uint64, int32), register bool) (*op, *Error) {
	c, e := lookupClient(uint64(h))
	if e != nil {
		return nil, e
	}
	nw, e := cstr(network, "network")
	if e != nil {
		return nil, e
	}
	addr, e := cstr(address, "address")
	if e != nil {
		return nil, e
	}
	if e := checkDial(nw, addr); e != nil {
		return nil, e
	}
	d, e := millis(deadline, "deadline_ms")
	if e != nil {
		return nil, e
	}
	spec := dialSpec{network: nw, address: addr, deadline: d}
	return c.start(true, max(d, 0), cb, register, func(ctx context.Context, b *built, o *op) *Error {
		return doDial(ctx, b, o, spec)
	})
}

//export lifelinego_dial
func lifelinego_dial(h C.lifeline_client, network, address *C.char, deadline C.int64_t, fd *C.int, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		if fd == nil {
			return argError("fd is NULL")
		}
		*fd = -1
		o, e := startDial(h, network, address, deadline, nil, false)
		if e != nil {
			return e
		}
		o.wait(-1)
		n, e := o.takeFD()
		o.free()
		if e != nil {
			return e
		}
		*fd = C.int(n)
		return nil
	})
}

//export lifelinego_dial_start
func lifelinego_dial_start(h C.lifeline_client, network, address *C.char, deadline C.int64_t,
	cb C.lifeline_callback, ud C.uintptr_t, opOut *C.lifeline_op, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		if opOut == nil {
			return argError("op is NULL")
		}
		*opOut = 0
		o, e := startDial(h, network, address, deadline, callbackOf(cb, ud), true)
		if e != nil {
			return e
		}
		*opOut = C.lifeline_op(o.id)
		return nil
	})
}

//export lifelinego_op_wait
func lifelinego_op_wait(h C.lifeline_op, timeout C.int64_t, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		o, e := lookupOp(uint64(h))
		if e != nil {
			return e
		}
		d := time.Duration(-1)
		if int64(timeout) >= 0 {
			d = time.Duration(min(int64(timeout), maxDeadlineMS)) * time.Millisecond
		}
		if !o.wait(d) {
			return &Error{Status: statusPending, Msg: "lifeline: operation still running"}
		}
		return nil
	})
}

//export lifelinego_op_cancel
func lifelinego_op_cancel(h C.lifeline_op, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		o, e := lookupOp(uint64(h))
		if e != nil {
			return e
		}
		o.cancelByHost()
		return nil
	})
}

//export lifelinego_op_response
func lifelinego_op_response(h C.lifeline_op, out **C.lifeline_response, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		if out == nil {
			return argError("out is NULL")
		}
		*out = nil
		o, e := lookupOp(uint64(h))
		if e != nil {
			return e
		}
		resp, e := o.takeResponse()
		if e != nil {
			return e
		}
		return giveResponse(resp, out)
	})
}

//export lifelinego_op_fd
func lifelinego_op_fd(h C.lifeline_op, fd *C.int, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		if fd == nil {
			return argError("fd is NULL")
		}
		*fd = -1
		o, e := lookupOp(uint64(h))
		if e != nil {
			return e
		}
		n, e := o.takeFD()
		if e != nil {
			return e
		}
		*fd = C.int(n)
		return nil
	})
}

//export lifelinego_op_free
func lifelinego_op_free(h C.lifeline_op, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		o, e := lookupOp(uint64(h))
		if e != nil {
			return e
		}
		if !handles.remove(uint64(h)) {
			return handleError(uint64(h), kindOp, kindNone) // freed concurrently
		}
		o.free()
		return nil
	})
}
