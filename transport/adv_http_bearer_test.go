package transport_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/transport"
)

// TestAdvBearerOneFetchAtATime: a fetch slower than its callers' deadlines
// that does not honour its context (an identity provider client with no
// context plumbing) still runs one at a time: callers that come one after
// another, each giving up before it ends, do not start a fetch each (a
// goroutine and a token request per call, piling up), and the token it
// finally returns is the next caller's (synctest).
func TestAdvBearerOneFetchAtATime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var running, most, fetches atomic.Int32
		b := transport.NewBearerCredentials(func(context.Context) (string, time.Time, error) {
			n := running.Add(1)
			defer running.Add(-1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			fetches.Add(1)
			time.Sleep(time.Second) // ignores its context
			return "slow-token", time.Time{}, nil
		})
		for range 8 {
			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
			_, err := authHeader(ctx, b)
			cancel()
			assert.ErrorIs(t, err, context.DeadlineExceeded)
		}
		assert.EqualValues(t, 1, most.Load(), "one fetch at a time")
		time.Sleep(time.Second)
		synctest.Wait()
		h, err := authHeader(t.Context(), b)
		require.NoError(t, err)
		assert.Equal(t, "Bearer slow-token", h)
		assert.LessOrEqual(t, fetches.Load(), int32(2))
	})
}

// TestAdvBearerExpiredRenewalErrorRedacted: once the cached token has
// expired, a renewal whose error quotes it fails Apply without saying it
// (synctest).
func TestAdvBearerExpiredRenewalErrorRedacted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int32
		b := transport.NewBearerCredentials(func(context.Context) (string, time.Time, error) {
			if n.Add(1) == 1 {
				return "expiring-secret-token", time.Now().Add(time.Minute), nil
			}
			return "", time.Time{}, errors.New("token expiring-secret-token cannot be renewed")
		})
		h, err := authHeader(t.Context(), b)
		require.NoError(t, err)
		require.Equal(t, "Bearer expiring-secret-token", h)
		time.Sleep(2 * time.Minute)
		_, err = authHeader(t.Context(), b)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "cannot be renewed")
		assert.NotContains(t, err.Error(), "expiring-secret-token")
	})
}

// TestAdvBearerFetchPanics: a fetch function that panics runs in
// BearerCredentials' own goroutine, where no caller could recover it: the
// caller gets an error saying so, and the next caller fetches again.
func TestAdvBearerFetchPanics(t *testing.T) {
	var n atomic.Int32
	b := transport.NewBearerCredentials(func(context.Context) (string, time.Time, error) {
		if n.Add(1) == 1 {
			panic("a bug in the caller's token code")
		}
		return "after-panic", time.Time{}, nil
	})
	_, err := authHeader(t.Context(), b)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "panic")
	h, err := authHeader(t.Context(), b)
	require.NoError(t, err)
	assert.Equal(t, "Bearer after-panic", h)
}

// TestAdvBearerExpiryInThePast: a token whose expiry has already passed
// when it arrives (the identity provider's clock is ahead, or it sends
// an absolute time in another zone by mistake) is used until the server
// rejects it, not fetched again on every call (synctest).
func TestAdvBearerExpiryInThePast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int32
		b := transport.NewBearerCredentials(func(context.Context) (string, time.Time, error) {
			fetches.Add(1)
			return "skewed-token", time.Now().Add(-time.Hour), nil
		})
		for range 10 {
			h, err := authHeader(t.Context(), b)
			require.NoError(t, err)
			assert.Equal(t, "Bearer skewed-token", h)
			time.Sleep(time.Second)
		}
		assert.EqualValues(t, 1, fetches.Load(), "one fetch, not one per call")
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://api.example/", nil)
		req.Header.Set("Authorization", "Bearer skewed-token")
		require.NoError(t, b.Refresh(t.Context(), req))
		assert.EqualValues(t, 2, fetches.Load(), "a rejection renews it")
	})
}

// TestAdvBearerSlowFetchShortCallers: an identity provider slower than
// each call's deadline, and calls that come one after another (a poll
// every 100ms with a 100ms deadline each). By default each call starts a
// fetch that its deadline cancels: no call ever gets a token, and the
// provider gets a token request per call. With FetchTimeout the fetch
// outlives its callers: one fetch, and the calls after it succeed
// (synctest).
func TestAdvBearerSlowFetchShortCallers(t *testing.T) {
	for _, fetchTimeout := range []time.Duration{0, 5 * time.Second} {
		t.Run(fmt.Sprint(fetchTimeout), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var fetches atomic.Int32
				b := transport.NewBearerCredentials(func(ctx context.Context) (string, time.Time, error) {
					fetches.Add(1)
					select {
					case <-time.After(350 * time.Millisecond):
						return "slow-idp-token", time.Time{}, nil
					case <-ctx.Done():
						return "", time.Time{}, ctx.Err()
					}
				})
				b.FetchTimeout = fetchTimeout
				ok := 0
				for range 10 {
					ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
					if _, err := authHeader(ctx, b); err == nil {
						ok++
					}
					cancel()
					synctest.Wait()
				}
				if fetchTimeout == 0 {
					assert.Zero(t, ok, "every fetch cancelled with its caller")
					assert.EqualValues(t, 10, fetches.Load(), "a fetch per call")
					return
				}
				assert.EqualValues(t, 1, fetches.Load(), "one fetch")
				assert.GreaterOrEqual(t, ok, 6, "the calls after it got its token")
			})
		})
	}
}
