package pool_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/pool"
)

// notRetryable reports whether err says, through the interface retry
// classifies errors by, that retrying cannot help.
func notRetryable(err error) bool {
	var r interface{ Retryable() bool }
	return errors.As(err, &r) && !r.Retryable()
}

// ErrClosed says it is not retryable (retry.Do must not spin on a closed
// pool), both to a caller arriving after Close and to one that was waiting
// when Close ran; errors.Is still matches it.
func TestErrClosedIsNotRetryable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 1})
		require.NoError(t, err)
		c, err := p.Acquire(t.Context())
		require.NoError(t, err)
		waited := make(chan error, 1)
		go func() { _, err := p.Acquire(t.Context()); waited <- err }()
		synctest.Wait()
		require.NoError(t, p.Close())
		c.Release()

		_, after := p.Acquire(t.Context())
		for name, err := range map[string]error{"waiting": <-waited, "after": after} {
			assert.ErrorIs(t, err, pool.ErrClosed, name)
			assert.True(t, notRetryable(err), "%s: %v says it is retryable", name, err)
			assert.EqualError(t, err, "pool: closed", name)
		}
		assert.True(t, notRetryable(pool.ErrClosed))
	})
}

// Misuse (a nil context, a Pool not made by New) is not retryable either.
func TestMisuseIsNotRetryable(t *testing.T) {
	var d pipeDialer
	p := newPool(t, pool.Config{Dial: d.Dial})
	var nilCtx context.Context // the bad input under test
	_, err := p.Acquire(nilCtx)
	assert.True(t, notRetryable(err), "nil ctx: %v", err)
	var zero pool.Pool
	_, err = zero.Acquire(t.Context())
	assert.True(t, notRetryable(err), "zero Pool: %v", err)
}
