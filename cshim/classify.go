package main

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/internal/otelx"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// errText is an error's text as the host may see it: with no query,
// fragment or userinfo of any URL in it (a host logs what it is given).
func errText(err error) string { return otelx.Redact(err.Error()) }

// errOpDone ends an operation's context once its result is stored.
var errOpDone = errors.New("lifeline: operation done")

// classify turns the error of an operation into what the host sees: a
// status, the phase, whether a time limit caused it, a class and a
// message. The operation's context decides first: the host's cancel, the
// client's close and the total deadline are the host's own doing and say
// so whatever error they surfaced as; otherwise the typed errors of
// transport and dial name the phase.
func classify(ctx context.Context, err error) *Error {
	return classifyIn(ctx, err, "deadline")
}

// classifyIn is classify for an error of the phase named at (its name for
// a total deadline whose error chain names no phase): "stall" while the
// body is read, "deadline" outside any phase.
func classifyIn(ctx context.Context, err error, at string) *Error {
	msg := "lifeline: " + errText(err)
	if e := endedByHost(ctx, err); e != nil {
		return e
	}
	if ctx.Err() != nil {
		switch context.Cause(ctx) {
		case errDeadline:
			// The type says the total deadline ended it; the phase says
			// where, when the error chain knows (a dial.Error, a
			// transport.TimeoutError), as every other failure does.
			phase := deadlinePhase(err)
			if phase == "" {
				phase = at
			}
			return &Error{Status: statusTimeout, Phase: phase, Type: "deadline", Timeout: true,
				Msg: "lifeline: operation deadline exceeded (phase " + phase + "): " + errText(err)}
		}
	}
	if e := notAttempted(err, msg); e != nil {
		return e
	}
	var te *transport.TimeoutError
	if errors.As(err, &te) {
		return &Error{Status: statusTimeout, Phase: te.Phase, Type: te.ErrorType(), Timeout: true, Msg: msg}
	}
	var de *dial.Error
	if errors.As(err, &de) {
		e := &Error{Status: statusNetwork, Phase: de.Phase.String(), Type: de.ErrorType(), Timeout: de.Timeout(), Msg: msg}
		if e.Timeout {
			e.Status = statusTimeout
		}
		return e
	}
	if errors.Is(err, transport.ErrBadRequest) {
		return &Error{Status: statusInvalidArgument, Phase: "argument", Type: "invalid_argument", Msg: msg}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Status: statusTimeout, Phase: "response", Type: "timeout", Timeout: true, Msg: msg}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &Error{Status: statusTimeout, Phase: "response", Type: "timeout", Timeout: true, Msg: msg}
	}
	return &Error{Status: statusNetwork, Phase: "response", Type: "response", Msg: msg}
}

// deadlinePhase is the phase in which the total deadline struck, as err's
// chain names it (a transport.TimeoutError, a dial.Error that timed out),
// or "": the deadline struck outside any phase (a retry's wait after a
// refusal, say), or the chain does not say.
func deadlinePhase(err error) string {
	var te *transport.TimeoutError
	if errors.As(err, &te) {
		return te.Phase
	}
	var de *dial.Error
	if errors.As(err, &de) && de.Timeout() {
		return de.Phase.String()
	}
	return ""
}

// endedByHost is the error of an operation whose host ended it — its
// cancel, its free, its client's close — or nil when ctx was not ended by
// the host. err, when not nil, is what the work surfaced; an operation
// that ended with a result anyway (a Transport that returns a held retry
// answer when its context ends) gets the same error: lifeline.h promises
// LIFELINE_E_CANCELED (LIFELINE_E_CLOSED) to a host that ended it before
// its result was stored.
func endedByHost(ctx context.Context, err error) *Error {
	if ctx.Err() == nil {
		return nil
	}
	detail := ""
	if err != nil {
		detail = ": " + errText(err)
	}
	switch cause := context.Cause(ctx); cause {
	case errCanceledByHost, errOpFreed:
		if err == nil {
			detail = ": " + cause.Error()
		}
		return &Error{Status: statusCanceled, Phase: "canceled", Type: "canceled", Msg: "lifeline: canceled" + detail}
	case errClientClosed:
		return &Error{Status: statusClosed, Phase: "canceled", Type: "closed", Msg: "lifeline: client closed" + detail}
	}
	return nil
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// sortHeaders orders headers by name, keeping the order of a name's
// values (Go's header map has none of its own).
func sortHeaders(h [][2]string) {
	slices.SortStableFunc(h, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
}

// notAttempted is the error of a call the Transport did not attempt: its
// upstream known down (error_type "unavailable"; the message carries the
// last real failure) or the call shed by client-side throttling ("shed"),
// phase "upstream". A retry refused because the upstream sheds load is
// not one: its attempts' failure is the call's (the chain has a
// retry.ExhaustedError with attempts made). Nil for any other error.
func notAttempted(err error, msg string) *Error {
	var ue *transport.UnavailableError
	if !errors.As(err, &ue) {
		return nil
	}
	var ex *retry.ExhaustedError
	if errors.As(err, &ex) && ex.Attempts > 0 {
		return nil
	}
	return &Error{Status: statusUnavailable, Phase: "upstream", Type: ue.ErrorType(), Msg: msg}
}
