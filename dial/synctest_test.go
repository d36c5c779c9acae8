package dial_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
)

// fakeNet is a DialFunc whose behaviour is chosen per IP: "hang" blocks
// until the context ends, "refuse" fails at once, "ok" returns one end of a
// net.Pipe after the given delay (honouring the context). Used inside a
// synctest bubble, every timing is exact.
type fakeNet struct {
	mu    sync.Mutex
	plan  map[string]fakeStep
	ends  []net.Conn // server ends, closed by close()
	calls []string
}

type fakeStep struct {
	kind  string // hang, refuse, ok, hangFirst (hang on the first call, then ok)
	delay time.Duration
}

func (f *fakeNet) dial(ctx context.Context, _, addr string) (net.Conn, error) {
	host, _, _ := net.SplitHostPort(addr)
	f.mu.Lock()
	f.calls = append(f.calls, host)
	step := f.plan[host]
	if step.kind == "hangFirst" {
		f.plan[host] = fakeStep{kind: "ok"}
		step.kind = "hang"
	}
	f.mu.Unlock()
	switch step.kind {
	case "refuse":
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	case "ok":
		if err := sleepCtx(ctx, step.delay); err != nil {
			return nil, err
		}
		c, s := net.Pipe()
		f.mu.Lock()
		f.ends = append(f.ends, s)
		f.mu.Unlock()
		return addrConn{c, addr}, nil
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// sleepCtx waits d, or until ctx ends (its error). A zero d returns at
// once: a timer of 0 and a context ended in the same instant would be a
// coin toss for select, and the fakes' timings must be exact.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// addrConn is a pipe end that reports the address it was dialled at.
type addrConn struct {
	net.Conn
	addr string
}

func (c addrConn) RemoteAddr() net.Addr {
	return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(c.addr))
}

func (f *fakeNet) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.ends {
		c.Close()
	}
}

func TestRaceTiming(t *testing.T) {
	hang := fakeStep{kind: "hang"}
	refuse := fakeStep{kind: "refuse"}
	ok := func(d time.Duration) fakeStep { return fakeStep{kind: "ok", delay: d} }
	cases := []struct {
		name    string
		d       dial.Dialer
		steps   []fakeStep
		elapsed time.Duration
		winner  string // "" = fails
		phase   dial.Phase
		calls   int
	}{
		{"first ok", dial.Dialer{}, []fakeStep{ok(0), ok(0)}, 0, "10.0.0.1", 0, 1},
		{"[hang, ok]: next after AttemptDelay 250ms", dial.Dialer{}, []fakeStep{hang, ok(0)}, 250 * time.Millisecond, "10.0.0.2", 0, 2},
		{"[refuse, ok]: next at once", dial.Dialer{}, []fakeStep{refuse, ok(0)}, 0, "10.0.0.2", 0, 2},
		{"[hang, refuse, ok]: the refusal starts the third at once", dial.Dialer{AttemptDelay: 100 * time.Millisecond},
			[]fakeStep{hang, refuse, ok(0)}, 100 * time.Millisecond, "10.0.0.3", 0, 3},
		{"[slow 300ms, ok 10ms]: overtaken", dial.Dialer{}, []fakeStep{ok(300 * time.Millisecond), ok(10 * time.Millisecond)},
			260 * time.Millisecond, "10.0.0.2", 0, 2},
		{"serial [hang, ok]: waits for ConnectTimeout", dial.Dialer{AttemptDelay: -1, ConnectTimeout: time.Second},
			[]fakeStep{hang, ok(0)}, time.Second, "10.0.0.2", 0, 2},
		{"[hang x3] with defaults: each connect 5s, staggered 250ms, then each raced again", dial.Dialer{}, []fakeStep{hang, hang, hang},
			5*time.Second + 1250*time.Millisecond, "", dial.PhaseConnect, 6},
		{"[hang x3] one attempt per address: 3 calls", dial.Dialer{MaxAttemptsPerAddress: 1}, []fakeStep{hang, hang, hang},
			5*time.Second + 500*time.Millisecond, "", dial.PhaseConnect, 3},
		{"[hang x3] Timeout 1s cuts the race", dial.Dialer{Timeout: time.Second}, []fakeStep{hang, hang, hang},
			time.Second, "", dial.PhaseConnect, 4},
		{"lone [hangs once]: its second attempt wins after AttemptDelay", dial.Dialer{}, []fakeStep{{kind: "hangFirst"}},
			250 * time.Millisecond, "10.0.0.1", 0, 2},
		{"lone [hangs once], MaxAttemptsPerAddress 1: waits for ConnectTimeout", dial.Dialer{MaxAttemptsPerAddress: 1, ConnectTimeout: time.Second},
			[]fakeStep{{kind: "hangFirst"}}, time.Second, "", dial.PhaseConnect, 1},
		{"lone [refuse]: a failure is not repeated", dial.Dialer{}, []fakeStep{refuse}, 0, "", dial.PhaseConnect, 1},
		{"[refuse, hangs once]: the pending address races itself", dial.Dialer{}, []fakeStep{refuse, {kind: "hangFirst"}},
			250 * time.Millisecond, "10.0.0.2", 0, 3},
		{"serial [hang]: no repeat", dial.Dialer{AttemptDelay: -1, ConnectTimeout: time.Second}, []fakeStep{hang},
			time.Second, "", dial.PhaseConnect, 1},
		{"[hang x8] Timeout 1s: no attempt starts after it", dial.Dialer{Timeout: time.Second, AttemptDelay: 400 * time.Millisecond},
			[]fakeStep{hang, hang, hang, hang, hang, hang, hang, hang}, time.Second, "", dial.PhaseConnect, 3},
		{"ConnectTimeout off, Timeout bounds", dial.Dialer{ConnectTimeout: -1, Timeout: 2 * time.Second}, []fakeStep{hang},
			2 * time.Second, "", dial.PhaseConnect, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fn := &fakeNet{plan: map[string]fakeStep{}}
				defer fn.close()
				var ips []string
				for i, st := range tc.steps {
					ip := "10.0.0." + itoa(i+1)
					fn.plan[ip] = st
					ips = append(ips, ip)
				}
				d := tc.d
				d.DialFunc = fn.dial
				d.Resolver = resolverFor(ips...)
				start := time.Now()
				conn, err := d.DialContext(t.Context(), "tcp", hostPort(443))
				assert.Equal(t, tc.elapsed, time.Since(start))
				assert.Len(t, fn.calls, tc.calls, "addresses tried: %v", fn.calls)
				if tc.winner == "" {
					var de *dial.Error
					require.ErrorAs(t, err, &de)
					assert.Equal(t, tc.phase, de.Phase)
					assert.Equal(t, errors.Is(err, context.DeadlineExceeded), de.Timeout(), "one answer to 'was it a timeout'")
					return
				}
				require.NoError(t, err)
				conn.Close()
				host, _, _ := net.SplitHostPort(conn.RemoteAddr().String())
				assert.Equal(t, tc.winner, host)
			})
		})
	}
}

func TestResolveTimeoutExact(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cases := []struct {
			d    dial.Dialer
			want time.Duration
			typ  string
		}{
			{dial.Dialer{}, 5 * time.Second, "dns_timeout"},
			{dial.Dialer{ResolveTimeout: time.Second}, time.Second, "dns_timeout"},
			{dial.Dialer{ResolveTimeout: -1, Timeout: 3 * time.Second}, 3 * time.Second, "timeout"},
			{dial.Dialer{ResolveTimeout: 10 * time.Second, Timeout: 2 * time.Second}, 2 * time.Second, "timeout"},
		}
		for _, tc := range cases {
			d := tc.d
			d.Resolver = &fakeResolver{block: true}
			start := time.Now()
			_, err := d.DialContext(t.Context(), "tcp", hostPort(443))
			assert.Equal(t, tc.want, time.Since(start))
			var de *dial.Error
			require.ErrorAs(t, err, &de)
			assert.Equal(t, tc.typ, de.ErrorType())
			assert.ErrorIs(t, err, context.DeadlineExceeded)
		}
		// The caller's earlier deadline wins over every limit of the Dialer.
		ctx, cancel := context.WithTimeout(t.Context(), 700*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := (&dial.Dialer{Resolver: &fakeResolver{block: true}}).DialContext(ctx, "tcp", hostPort(443))
		assert.Equal(t, 700*time.Millisecond, time.Since(start))
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), "context deadline exceeded")
	})
}
