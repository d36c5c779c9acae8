package transport_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/transport"
)

// authHeader applies b to a fresh request made with ctx and returns the
// Authorization value or the error.
func authHeader(ctx context.Context, b *transport.BearerCredentials) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://api.example/", nil)
	err := b.Apply(req)
	return req.Header.Get("Authorization"), err
}

// TestBearerExpiry: a token is renewed ExpiryMargin before its expiry, and
// a token that lives less than twice the margin at half its life, not on
// every call (synctest: the clock is the bubble's).
func TestBearerExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int32
		life := 2 * time.Minute
		b := transport.NewBearerCredentials(func(context.Context) (string, time.Time, error) {
			n := fetches.Add(1)
			return fmt.Sprintf("t%d", n), time.Now().Add(life), nil
		})
		h, err := authHeader(t.Context(), b)
		require.NoError(t, err)
		assert.Equal(t, "Bearer t1", h)
		time.Sleep(life - transport.DefaultExpiryMargin - time.Second)
		h, _ = authHeader(t.Context(), b)
		assert.Equal(t, "Bearer t1", h, "before the margin: cached")
		life = 10 * time.Second // the next token is short-lived
		time.Sleep(2 * time.Second)
		h, _ = authHeader(t.Context(), b)
		assert.Equal(t, "Bearer t2", h, "within the margin: renewed")
		for range 4 {
			time.Sleep(time.Second)
			h, _ = authHeader(t.Context(), b)
			assert.Equal(t, "Bearer t2", h, "a 10s token is not renewed on every call")
		}
		time.Sleep(time.Second) // 5s: half its life
		h, _ = authHeader(t.Context(), b)
		assert.Equal(t, "Bearer t3", h)
		assert.EqualValues(t, 3, fetches.Load())
	})
}

// TestBearerSharedFetch: callers waiting for one fetch each leave at their
// own deadline without ending it for the others; once nobody waits, the
// fetch's context is cancelled, and the next caller starts a new fetch.
func TestBearerSharedFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int32
		release := make(chan struct{})
		var cancelled atomic.Int32
		b := transport.NewBearerCredentials(func(ctx context.Context) (string, time.Time, error) {
			n := fetches.Add(1)
			gate := release
			if n > 1 {
				gate = nil // later fetches hang until cancelled
			}
			select {
			case <-gate:
				return fmt.Sprintf("t%d", n), time.Time{}, nil
			case <-ctx.Done():
				cancelled.Add(1)
				return "", time.Time{}, ctx.Err()
			}
		})
		var wg sync.WaitGroup
		var shortErr error
		var long string
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			_, shortErr = authHeader(ctx, b)
		})
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			long, _ = authHeader(ctx, b)
		})
		time.Sleep(2 * time.Second)
		synctest.Wait()
		assert.Zero(t, cancelled.Load(), "one waiter left; the fetch goes on for the other")
		close(release)
		wg.Wait()
		assert.ErrorIs(t, shortErr, context.DeadlineExceeded)
		assert.Equal(t, "Bearer t1", long)
		assert.EqualValues(t, 1, fetches.Load())

		// A Refresh of a token already replaced fetches nothing.
		stale, _ := http.NewRequest(http.MethodGet, "http://api.example/", nil)
		stale.Header.Set("Authorization", "Bearer t0")
		require.NoError(t, b.Refresh(t.Context(), stale))
		assert.EqualValues(t, 1, fetches.Load())

		// Nobody waits any more: the fetch is cancelled.
		rejected, _ := http.NewRequest(http.MethodGet, "http://api.example/", nil)
		rejected.Header.Set("Authorization", "Bearer t1")
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		err := b.Refresh(ctx, rejected)
		cancel()
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		synctest.Wait()
		assert.EqualValues(t, 1, cancelled.Load(), "abandoned fetch cancelled")
		assert.EqualValues(t, 2, fetches.Load())
	})
}

// TestBearerFailedRenewalKeepsValidToken: a renewal that fails while the
// cached token has not expired leaves that token in use; once it has
// expired, the failure is the caller's error.
func TestBearerFailedRenewalKeepsValidToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errDown := errors.New("idp down")
		var fail atomic.Bool
		b := transport.NewBearerCredentials(func(context.Context) (string, time.Time, error) {
			if fail.Load() {
				return "", time.Time{}, errDown
			}
			return "t1", time.Now().Add(time.Minute), nil
		})
		_, err := authHeader(t.Context(), b)
		require.NoError(t, err)
		fail.Store(true)
		time.Sleep(45 * time.Second) // within the 30s margin
		h, err := authHeader(t.Context(), b)
		require.NoError(t, err)
		assert.Equal(t, "Bearer t1", h)
		time.Sleep(20 * time.Second) // expired
		_, err = authHeader(t.Context(), b)
		assert.ErrorIs(t, err, errDown)
	})
}
