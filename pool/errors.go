package pool

import (
	"context"
	"errors"
	"fmt"
)

// ErrClosed is returned by [Pool.Acquire] once [Pool.Close] has been called,
// including to callers that were waiting when it was. It is not retryable:
// it has a Retryable method reporting false, which retry.Do honours, so a
// retry loop around Acquire on a closed pool ends at once. Match it with
// errors.Is.
var ErrClosed error = permanentError("pool: closed")

// errNotNew is returned by Acquire on a nil *Pool or a zero Pool that did
// not come from New.
var errNotNew error = permanentError("pool: Acquire on a nil or zero Pool; create pools with pool.New")

// errNilContext is returned by Acquire when ctx is nil.
var errNilContext error = permanentError("pool: Acquire with a nil Context")

// errDialTimeout is the cause of a pool dial's own deadline (Config.DialTimeout).
var errDialTimeout = fmt.Errorf("pool: dial timeout: %w", context.DeadlineExceeded)

// errNilConn reports a Config.Dial that returned neither a conn nor an error.
var errNilConn = errors.New("pool: Config.Dial returned a nil net.Conn and a nil error")

// permanentError is an error that no retry can cure: a closed pool, a
// misuse of the API. Its Retryable method is how the retry package (which
// does not import pool) and other classifiers see that. Values compare by
// message, so errors.Is(err, ErrClosed) matches only ErrClosed.
type permanentError string

func (e permanentError) Error() string { return string(e) }

// Retryable reports false: retrying cannot help.
func (permanentError) Retryable() bool { return false }
