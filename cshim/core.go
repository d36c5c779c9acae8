package main

import (
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
)

// Version is the library's version (lifeline_version in shim.c says the
// same; a test compares them).
const Version = "0.1.0"

// Status codes, as in lifeline.h (exports.go checks at compile time that
// they agree).
const (
	statusOK              int32 = 0
	statusInvalidArgument int32 = 1
	statusUnknownKey      int32 = 2
	statusBadValue        int32 = 3
	statusInvalidHandle   int32 = 4
	statusState           int32 = 5
	statusPending         int32 = 6
	statusTimeout         int32 = 7
	statusCanceled        int32 = 8
	statusNetwork         int32 = 9
	statusTooLarge        int32 = 10
	statusClosed          int32 = 11
	statusForked          int32 = 12
	statusInternal        int32 = 13
	statusNoMemory        int32 = 14
	statusUnavailable     int32 = 15
)

// Error is what a call reports through the C error record.
type Error struct {
	Status  int32
	Phase   string // "dns", "connect", ..., "" when none
	Type    string // short class, e.g. "connect_refused"
	Timeout bool
	Msg     string
}

func (e *Error) Error() string { return e.Msg }

// argError rejects an argument; the message names it.
func argError(format string, args ...any) *Error {
	return &Error{Status: statusInvalidArgument, Phase: "argument", Type: "invalid_argument",
		Msg: "lifeline: " + fmt.Sprintf(format, args...)}
}

func stateError(format string, args ...any) *Error {
	return &Error{Status: statusState, Type: "state", Msg: "lifeline: " + fmt.Sprintf(format, args...)}
}

func handleError(h uint64, want kind, got kind) *Error {
	var msg string
	switch {
	case h == 0:
		msg = fmt.Sprintf("%s handle 0 is never valid", want)
	case got != kindNone:
		msg = fmt.Sprintf("handle %d is a %s, not a %s", h, got, want)
	default:
		msg = fmt.Sprintf("unknown %s handle %d (never issued, or already freed)", want, h)
	}
	return &Error{Status: statusInvalidHandle, Phase: "argument", Type: "invalid_handle", Msg: "lifeline: " + msg}
}

// kind tells the objects of the handle table apart.
type kind uint8

const (
	kindNone kind = iota
	kindClient
	kindOp
)

func (k kind) String() string {
	switch k {
	case kindClient:
		return "client"
	case kindOp:
		return "operation"
	}
	return "nothing"
}

// Handles are seq<<21 | 21 random bits, below 2^53 so that hosts whose
// numbers are doubles (JavaScript, Lua) carry them exactly. The sequence
// number never repeats (2^32 handles), so a freed handle can never name a
// newer object; the random bits make a forged handle miss (about one guess
// in two million even with a live sequence number).
const (
	handleRandBits = 21
	handleSeqMax   = 1 << 32
)

// registry is the table of live handles.
type registry struct {
	mu   sync.RWMutex // guards live and seq
	live map[uint64]any
	seq  uint64
}

var handles = registry{live: map[uint64]any{}}

func (r *registry) add(obj any) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	if r.seq >= handleSeqMax {
		// Four billion handles in one process: start over, skipping live
		// ones below (a stale handle from the first round could now match
		// with the odds of a forged one).
		r.seq = 1
	}
	for {
		h := r.seq<<handleRandBits | rand.Uint64N(1<<handleRandBits)
		if _, ok := r.live[h]; !ok {
			r.live[h] = obj
			return h
		}
		r.seq++
	}
}

func kindOf(obj any) kind {
	switch obj.(type) {
	case *client:
		return kindClient
	case *op:
		return kindOp
	}
	return kindNone
}

func (r *registry) get(h uint64) any {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.live[h]
}

// remove takes h out of the table; it reports whether h was live.
func (r *registry) remove(h uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.live[h]; !ok {
		return false
	}
	delete(r.live, h)
	return true
}

func lookupClient(h uint64) (*client, *Error) {
	obj := handles.get(h)
	if c, ok := obj.(*client); ok {
		return c, nil
	}
	return nil, handleError(h, kindClient, kindOf(obj))
}

func lookupOp(h uint64) (*op, *Error) {
	obj := handles.get(h)
	if o, ok := obj.(*op); ok {
		return o, nil
	}
	return nil, handleError(h, kindOp, kindOf(obj))
}

// poisoned holds the message of the first recovered panic; once set,
// every call returns statusInternal (ADBC's rule: a library that panicked
// is in an unknown state, and refusing is safer than running on).
var poisoned atomic.Pointer[string]

// poison records a recovered panic and returns the error of the call that
// panicked.
func poison(r any) *Error {
	msg := fmt.Sprintf("lifeline: internal error (panic: %v); the library refuses further calls", r)
	stack := string(debug.Stack())
	if i := strings.Index(stack, "panic("); i >= 0 {
		stack = stack[i:]
	}
	if len(stack) > 2048 {
		stack = stack[:2048]
	}
	full := msg + "\n" + stack
	poisoned.CompareAndSwap(nil, &full)
	return &Error{Status: statusInternal, Phase: "internal", Type: "internal", Msg: full}
}

// poisonedError is the error of every call after a panic, or nil.
func poisonedError() *Error {
	p := poisoned.Load()
	if p == nil {
		return nil
	}
	return &Error{Status: statusInternal, Phase: "internal", Type: "internal",
		Msg: "lifeline: library disabled after an internal error: " + *p}
}

// guarded runs f, turning a panic into a poisoned library and an internal
// error, and refusing to run f at all once poisoned. Every export goes
// through it.
func guarded(f func() *Error) (e *Error) {
	defer func() {
		if r := recover(); r != nil {
			e = poison(r)
		}
	}()
	if pe := poisonedError(); pe != nil {
		return pe
	}
	hookPanic("export")
	return f()
}
