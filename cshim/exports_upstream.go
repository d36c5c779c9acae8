package main

/*
#include <stdint.h>
#include <stdlib.h>
#include "lifeline.h"
*/
import "C"

import "context"

// The exports of ABI 3 (lifeline.h, "When the upstream is down or
// drowning"): a buffered request with the call's own options and flags.

// requestFlags are the flags lifeline_request_start_opts knows.
const requestFlags = C.LIFELINE_CALL_WAIT_FOR_READY

//export lifelinego_request_start_opts
func lifelinego_request_start_opts(h C.lifeline_client, r *C.lifeline_request, flags C.uint32_t,
	opts *C.lifeline_call_options, cb C.lifeline_callback, ud C.uintptr_t, opOut *C.lifeline_op, cerr *C.lifeline_error) C.int32_t {
	return export(cerr, func() *Error {
		if opOut == nil {
			return argError("op is NULL")
		}
		*opOut = 0
		if flags&^requestFlags != 0 {
			return argError("flags 0x%x: unknown bits 0x%x", uint32(flags), uint32(flags&^requestFlags))
		}
		c, e := lookupClient(uint64(h))
		if e != nil {
			return e
		}
		req, e := readRequest(r)
		if e != nil {
			return e
		}
		if req.opts, e = readCallOptions(opts); e != nil {
			return e
		}
		req.opts.waitForReady = flags&C.LIFELINE_CALL_WAIT_FOR_READY != 0
		deadline := req.deadline
		if deadline < 0 {
			deadline = -1
		}
		o, e := c.start(false, deadline, callbackOf(cb, ud), true, func(ctx context.Context, b *built, o *op) *Error {
			return doRequest(ctx, b, o, req)
		})
		if e != nil {
			return e
		}
		*opOut = C.lifeline_op(o.id)
		return nil
	})
}
