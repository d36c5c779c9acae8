package pool

import (
	"context"
	"errors"
	"fmt"
)

// ErrClosed is returned by [Pool.Acquire] once [Pool.Close] has been called,
// including to callers that were waiting when it was.
var ErrClosed = errors.New("pool: closed")

// errNotNew is returned by Acquire on a nil *Pool or a zero Pool that did
// not come from New.
var errNotNew = errors.New("pool: Acquire on a nil or zero Pool; create pools with pool.New")

// errNilContext is returned by Acquire when ctx is nil.
var errNilContext = errors.New("pool: Acquire with a nil Context")

// errDialTimeout is the cause of a pool dial's own deadline (Config.DialTimeout).
var errDialTimeout = fmt.Errorf("pool: dial timeout: %w", context.DeadlineExceeded)

// errNilConn reports a Config.Dial that returned neither a conn nor an error.
var errNilConn = errors.New("pool: Config.Dial returned a nil net.Conn and a nil error")
