package main

/*
#include <stdint.h>
#include <stdlib.h>
#include "lifeline.h"
*/
import "C"

import (
	"context"
	"time"
	"unsafe"
)

// The exports of streamed bodies (lifeline.h, "Streamed bodies"); the
// machinery is in stream.go.

// streamFlags are the flags lifeline_request_start_stream knows.
const streamFlags = C.LIFELINE_STREAM_UPLOAD | C.LIFELINE_CALL_WAIT_FOR_READY

// maxIO caps one read or write: a garbage length fails cleanly instead of
// making a slice over gigabytes the host does not have.
const maxIO = 1 << 30

// waitMillis is a read or write timeout: < 0 none, capped.
func waitMillis(v C.int64_t) time.Duration {
	if int64(v) < 0 {
		return -1
	}
	return time.Duration(min(int64(v), maxDeadlineMS)) * time.Millisecond
}

//export lifelinego_request_start_stream
func lifelinego_request_start_stream(h C.lifeline_client, r *C.lifeline_request, flags C.uint32_t,
	opts *C.lifeline_call_options, cb C.lifeline_callback, ud C.uintptr_t, opOut *C.lifeline_op, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		if opOut == nil {
			return argError("op is NULL")
		}
		*opOut = 0
		if flags&^streamFlags != 0 {
			return argError("flags 0x%x: unknown bits 0x%x", uint32(flags), uint32(flags&^streamFlags))
		}
		c, e := lookupClient(uint64(h))
		if e != nil {
			return e
		}
		req, e := readRequest(r)
		if e != nil {
			return e
		}
		co, e := readCallOptions(opts)
		if e != nil {
			return e
		}
		co.waitForReady = flags&C.LIFELINE_CALL_WAIT_FOR_READY != 0
		deadline := req.deadline
		if deadline < 0 {
			deadline = -1
		}
		s := newStream(c, flags&C.LIFELINE_STREAM_UPLOAD != 0)
		o, e := c.startOp(false, deadline, callbackOf(cb, ud), true, s,
			func(ctx context.Context, b *built, o *op) *Error {
				return doStream(ctx, b, o, req, co, s)
			})
		if e != nil {
			s.done(errStreamDone)
			return e
		}
		*opOut = C.lifeline_op(o.id)
		return nil
	})
}

// readCallOptions copies and checks a host's lifeline_call_options (NULL:
// none).
func readCallOptions(p *C.lifeline_call_options) (callOptions, *Error) {
	var co callOptions
	if p == nil {
		return co, nil
	}
	var e *Error
	if co.firstByte, e = millis(p.first_byte_timeout_ms, "opts->first_byte_timeout_ms"); e != nil {
		return co, e
	}
	if co.stall, e = millis(p.stall_timeout_ms, "opts->stall_timeout_ms"); e != nil {
		return co, e
	}
	switch n := int64(p.max_attempts); {
	case n < 0:
		return co, argError("opts->max_attempts %d is negative (0: the client's, 1: no retry)", n)
	case n > 100:
		return co, argError("opts->max_attempts %d is above 100", n)
	default:
		co.maxAttempts = int(n)
	}
	return co, nil
}

//export lifelinego_body_read
func lifelinego_body_read(h C.lifeline_op, buf *C.uint8_t, capacity C.size_t, timeout C.int64_t, n *C.size_t,
	cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		if n == nil {
			return argError("n is NULL")
		}
		*n = 0
		switch {
		case buf == nil:
			return argError("buf is NULL")
		case capacity == 0:
			return argError("cap is 0: a read needs room for one byte")
		}
		o, e := lookupOp(uint64(h))
		if e != nil {
			return e
		}
		s, e := o.streamOf()
		if e != nil {
			return e
		}
		d := waitMillis(timeout)
		t := newTimer(d)
		defer t.stop()
		if e := o.waitHeaders(t); e != nil {
			return e
		}
		// The bytes go straight into the host's buffer (no Go pointer in
		// it, valid for the call).
		p := unsafe.Slice((*byte)(unsafe.Pointer(buf)), min(uint64(capacity), maxIO))
		got, e := s.read(p, d, t)
		*n = C.size_t(got)
		return e
	})
}

//export lifelinego_body_available
func lifelinego_body_available(h C.lifeline_op, n *C.size_t, ended *C.int, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		if n == nil {
			return argError("n is NULL")
		}
		*n = 0
		if ended != nil {
			*ended = 0
		}
		o, e := lookupOp(uint64(h))
		if e != nil {
			return e
		}
		s, e := o.streamOf()
		if e != nil {
			return e
		}
		if !o.done() {
			return nil
		}
		got, end := s.available()
		*n = C.size_t(got)
		if end && ended != nil {
			*ended = 1
		}
		return nil
	})
}

func uploadOf(h C.lifeline_op) (*upload, *Error) {
	o, e := lookupOp(uint64(h))
	if e != nil {
		return nil, e
	}
	s, e := o.streamOf()
	if e != nil {
		return nil, e
	}
	if s.up == nil {
		return nil, stateError("operation %d was started without LIFELINE_STREAM_UPLOAD: its body was given whole", o.id)
	}
	return s.up, nil
}

//export lifelinego_body_write
func lifelinego_body_write(h C.lifeline_op, data *C.uint8_t, length C.size_t, timeout C.int64_t, n *C.size_t,
	cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		if n != nil {
			*n = 0
		}
		if data == nil && length > 0 {
			return argError("data is NULL with len %d", uint64(length))
		}
		if uint64(length) > maxIO {
			return argError("len %d is above %d", uint64(length), maxIO)
		}
		u, e := uploadOf(h)
		if e != nil {
			return e
		}
		var p []byte
		if length > 0 {
			p = unsafe.Slice((*byte)(unsafe.Pointer(data)), int(length))
		}
		t := newTimer(waitMillis(timeout))
		defer t.stop()
		got, e := u.write(p, t)
		if n != nil {
			*n = C.size_t(got)
		}
		return e
	})
}

//export lifelinego_body_close_write
func lifelinego_body_close_write(h C.lifeline_op, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		u, e := uploadOf(h)
		if e != nil {
			return e
		}
		return u.closeWrite()
	})
}

//export lifelinego_body_fd
func lifelinego_body_fd(h C.lifeline_op, fd *C.int, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		if fd == nil {
			return argError("fd is NULL")
		}
		*fd = -1
		o, e := lookupOp(uint64(h))
		if e != nil {
			return e
		}
		s, e := o.streamOf()
		if e != nil {
			return e
		}
		n, e := s.readyFD()
		if e != nil {
			return e
		}
		*fd = C.int(n)
		return nil
	})
}
