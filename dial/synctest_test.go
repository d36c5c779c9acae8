package dial_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
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
	"github.com/lifeline-go/lifeline/retry"
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
	// inFlight and maxInFlight count the calls running at once.
	inFlight, maxInFlight int
}

type fakeStep struct {
	kind  string // hang, refuse, ok, hangFirst (hang on the first call, then ok), fail (reset after delay)
	delay time.Duration
}

func (f *fakeNet) dial(ctx context.Context, _, addr string) (net.Conn, error) {
	host, _, _ := net.SplitHostPort(addr)
	f.mu.Lock()
	f.calls = append(f.calls, host)
	f.inFlight++
	f.maxInFlight = max(f.maxInFlight, f.inFlight)
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	step := f.plan[host]
	if step.kind == "hangFirst" {
		f.plan[host] = fakeStep{kind: "ok"}
		step.kind = "hang"
	}
	f.mu.Unlock()
	switch step.kind {
	case "refuse":
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	case "fail":
		if err := sleepCtx(ctx, step.delay); err != nil {
			return nil, err
		}
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNRESET)}
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

// lateResolver answers each family after its own delay (in a synctest
// bubble: exactly), honouring the context.
type lateResolver struct {
	v4, v6 []netip.Addr
	d4, d6 time.Duration
}

func (r *lateResolver) LookupNetIP(ctx context.Context, network, _ string) ([]netip.Addr, error) {
	ips, d := r.v4, r.d4
	if network == "ip6" {
		ips, d = r.v6, r.d6
	}
	if err := sleepCtx(ctx, d); err != nil {
		return nil, err
	}
	return ips, nil
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

// TestRaceInterleavings walks the race's named interleavings with exact
// time (synctest): each case is a plan of how every address behaves and
// when each family answers, and the attempts the race must make.
func TestRaceInterleavings(t *testing.T) {
	hang := fakeStep{kind: "hang"}
	failAt := func(d time.Duration) fakeStep { return fakeStep{kind: "fail", delay: d} }
	ok := func(d time.Duration) fakeStep { return fakeStep{kind: "ok", delay: d} }
	cases := []struct {
		name    string
		d       dial.Dialer
		literal string // dial this IP literal instead of resolving
		res     *lateResolver
		plan    map[string]fakeStep
		calls   []string // every connect, in order
		elapsed time.Duration
		winner  string // "" = the dial fails
		maxPar  int    // most connects at once; 0: not checked
	}{
		{
			// Break 24: a failed address was offered again and again.
			name: "IP literal, MaxAttemptsPerAddress 3: a failure is never repeated",
			d:    dial.Dialer{MaxAttemptsPerAddress: 3, AttemptDelay: 50 * time.Millisecond, Timeout: time.Second}, literal: "10.0.0.1",
			plan:  map[string]fakeStep{"10.0.0.1": failAt(75 * time.Millisecond)},
			calls: []string{"10.0.0.1", "10.0.0.1"}, elapsed: 125 * time.Millisecond,
		},
		{
			name: "two addresses, one of the first's two attempts fails: it gets no third",
			d:    dial.Dialer{AttemptDelay: 100 * time.Millisecond, Timeout: time.Second},
			res:  &lateResolver{v4: addrs("10.0.0.1", "10.0.0.2")},
			plan: map[string]fakeStep{"10.0.0.1": failAt(250 * time.Millisecond), "10.0.0.2": hang},
			// .1 at 0, .2 at 100, .1 again at 200 (pending), .1's first
			// fails at 250, so the stagger at 300 repeats .2, not .1;
			// .1's second fails at 450; nothing more until the Timeout.
			calls: []string{"10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.2"}, elapsed: time.Second,
		},
		{
			name: "a failure just before the stagger: no repeat of the failed address",
			d:    dial.Dialer{AttemptDelay: 100 * time.Millisecond}, literal: "10.0.0.1",
			plan:  map[string]fakeStep{"10.0.0.1": failAt(100*time.Millisecond - time.Microsecond)},
			calls: []string{"10.0.0.1"}, elapsed: 100*time.Millisecond - time.Microsecond,
		},
		{
			// Break 25: the late AAAA answer started a second attempt
			// at once, in parallel.
			name: "serial: a late AAAA waits for the attempt in flight",
			d:    dial.Dialer{AttemptDelay: -1, ConnectTimeout: time.Second},
			res:  &lateResolver{v4: addrs("10.0.0.1"), v6: addrs("fd00::1"), d6: 100 * time.Millisecond},
			plan: map[string]fakeStep{"10.0.0.1": hang, "fd00::1": ok(0)},
			// A at 50 (the Resolution Delay), AAAA at 100 waits; A times
			// out at 1050, then AAAA.
			calls: []string{"10.0.0.1", "fd00::1"}, elapsed: 1050 * time.Millisecond, winner: "fd00::1", maxPar: 1,
		},
		{
			name: "staggered: a late AAAA joins the race at its turn",
			d:    dial.Dialer{},
			res:  &lateResolver{v4: addrs("10.0.0.1"), v6: addrs("fd00::1"), d6: 100 * time.Millisecond},
			plan: map[string]fakeStep{"10.0.0.1": hang, "fd00::1": ok(0)},
			// A at 50, AAAA answers at 100 and goes next, at 50+250.
			calls: []string{"10.0.0.1", "fd00::1"}, elapsed: 300 * time.Millisecond, winner: "fd00::1",
		},
		{
			name: "staggered: an AAAA later than the stagger starts at once",
			d:    dial.Dialer{MaxAttemptsPerAddress: 1},
			res:  &lateResolver{v4: addrs("10.0.0.1"), v6: addrs("fd00::1"), d6: 400 * time.Millisecond},
			plan: map[string]fakeStep{"10.0.0.1": hang, "fd00::1": ok(0)},
			// A at 50; the stagger at 300 finds nothing; AAAA at 400.
			calls: []string{"10.0.0.1", "fd00::1"}, elapsed: 400 * time.Millisecond, winner: "fd00::1",
		},
		{
			name: "repeat only while pending: both attempts of a lone address stall, no third at once",
			d:    dial.Dialer{ConnectTimeout: time.Second}, literal: "10.0.0.1",
			plan:  map[string]fakeStep{"10.0.0.1": hang},
			calls: []string{"10.0.0.1", "10.0.0.1"}, elapsed: 1250 * time.Millisecond,
		},
		{
			name: "serial IP literal: one attempt",
			d:    dial.Dialer{AttemptDelay: -1, ConnectTimeout: time.Second}, literal: "10.0.0.1",
			plan:  map[string]fakeStep{"10.0.0.1": hang},
			calls: []string{"10.0.0.1"}, elapsed: time.Second, maxPar: 1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fn := &fakeNet{plan: tc.plan}
				defer fn.close()
				d := tc.d
				d.DialFunc = fn.dial
				target := hostPort(443)
				if tc.literal != "" {
					target = net.JoinHostPort(tc.literal, "443")
				} else {
					d.Resolver = tc.res
				}
				start := time.Now()
				conn, err := d.DialContext(t.Context(), "tcp", target)
				assert.Equal(t, tc.elapsed, time.Since(start))
				assert.Equal(t, tc.calls, fn.calls)
				if tc.maxPar > 0 {
					assert.LessOrEqual(t, fn.maxInFlight, tc.maxPar, "connects at once")
				}
				if tc.winner == "" {
					require.Error(t, err)
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

// TestStalledAttemptsLeaveTheRetryItsTurn: break 15. A lone address (a
// load balancer) hangs the TLS handshakes of both attempts a dial races
// to it (0.6% of dials when 8% of handshakes hang). The dial no longer
// takes the whole of the caller's 5s: each attempt's handshake gets at
// most half of what remains, so the dial fails near 2.5s and the retry
// that wraps it succeeds well within the deadline (it failed at 5s, with
// no time left for a retry).
func TestStalledAttemptsLeaveTheRetryItsTurn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		serverCfg, clientCfg, _ := testCert(t, testHost)
		clientCfg.ServerName = testHost
		var mu sync.Mutex
		var ends []net.Conn
		connects := 0
		dialFn := func(_ context.Context, _, addr string) (net.Conn, error) {
			c, s := net.Pipe()
			mu.Lock()
			connects++
			stall := connects <= 2
			ends = append(ends, s)
			mu.Unlock()
			go func() {
				if !stall {
					_ = tls.Server(s, serverCfg).Handshake()
				}
				_, _ = io.Copy(io.Discard, s) // a stalled handshake: read, never answer
			}()
			return addrConn{c, addr}, nil
		}
		defer func() {
			mu.Lock()
			defer mu.Unlock()
			for _, s := range ends {
				s.Close()
			}
		}()
		d := dial.Dialer{TLSConfig: clientCfg, DialFunc: dialFn, FirstByteTimeout: -1}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		p := &retry.Policy{MaxAttempts: 3, InitialInterval: 10 * time.Millisecond, Jitter: -1}
		start := time.Now()
		conn, err := retry.Do(ctx, p, func(ctx context.Context) (net.Conn, error) {
			return d.DialTLSContext(ctx, "tcp", "10.0.0.1:443")
		})
		elapsed := time.Since(start)
		require.NoError(t, err, "the retry had its turn")
		conn.Close()
		// Attempt 1 from 0 (limit 2.5s), attempt 2 from 250ms (limit
		// half of 4.75s): the dial fails at 2.625s; the retry 10ms later.
		assert.Equal(t, 2625*time.Millisecond+10*time.Millisecond, elapsed)
		assert.Equal(t, 3, connects)
	})
}

// TestSlowHandshakeKeepsWholeLimitWithoutRetry: the share of break 15 is
// only for a dial a retry may follow. A healthy server that takes 3s to
// answer the handshake, one address, a 5s deadline: dialled directly, or
// in the last attempt of a retry policy, the dial succeeds at 3s (with the
// share it would fail at 2.5s, half the deadline); as the first of three
// attempts it gives up at half the remaining time, leaving the retry its turn.
func TestSlowHandshakeKeepsWholeLimitWithoutRetry(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy *retry.Policy // nil: no retry.Do around the dial
		wantOK bool
	}{
		{"direct", nil, true},
		{"last attempt", &retry.Policy{MaxAttempts: 1}, true},
		{"a retry may follow", &retry.Policy{MaxAttempts: 3, InitialInterval: 10 * time.Second, MaxInterval: 10 * time.Second, Jitter: -1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				serverCfg, clientCfg, _ := testCert(t, testHost)
				clientCfg.ServerName = testHost
				var mu sync.Mutex
				var ends []net.Conn
				quit := make(chan struct{})
				dialFn := func(_ context.Context, _, addr string) (net.Conn, error) {
					c, s := net.Pipe()
					mu.Lock()
					ends = append(ends, s)
					mu.Unlock()
					go func() {
						select { // slow, not stalled
						case <-time.After(3 * time.Second):
						case <-quit:
							return
						}
						_ = tls.Server(s, serverCfg).Handshake()
						_, _ = io.Copy(io.Discard, s)
					}()
					return addrConn{c, addr}, nil
				}
				defer func() {
					close(quit)
					mu.Lock()
					defer mu.Unlock()
					for _, s := range ends {
						s.Close()
					}
				}()
				// One attempt at a time (MaxAttemptsPerAddress 1), so the
				// only thing that decides is the handshake's limit.
				d := dial.Dialer{TLSConfig: clientCfg, DialFunc: dialFn, FirstByteTimeout: -1, MaxAttemptsPerAddress: 1}
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				defer cancel()
				start := time.Now()
				var conn net.Conn
				var err error
				if tc.policy == nil {
					conn, err = d.DialTLSContext(ctx, "tcp", "10.0.0.1:443")
				} else {
					conn, err = retry.Do(ctx, tc.policy, func(ctx context.Context) (net.Conn, error) {
						return d.DialTLSContext(ctx, "tcp", "10.0.0.1:443")
					})
				}
				elapsed := time.Since(start)
				if tc.wantOK {
					require.NoError(t, err)
					conn.Close()
					assert.Equal(t, 3*time.Second, elapsed)
					return
				}
				require.Error(t, err)
				var de *dial.Error
				require.ErrorAs(t, err, &de)
				assert.Equal(t, dial.PhaseTLS, de.Phase)
				assert.Equal(t, 2500*time.Millisecond, elapsed, "the first attempt gave up at half the deadline; the retry's 10s wait crosses it")
			})
		})
	}
}

// TestDialsInSuccessiveBubbles: dials made in one synctest bubble, then in
// another, then outside any. A channel or timer made in a bubble belongs
// to it; a dial that reused one across dials (a sync.Pool of the race's
// channel and timer, tried to save four allocations) crashed the next
// bubble's dial ("select on synctest channel from outside bubble") — the
// applications' tests that use synctest would crash the same way.
func TestDialsInSuccessiveBubbles(t *testing.T) {
	dialTwice := func(t *testing.T) {
		f := &fakeNet{plan: map[string]fakeStep{"127.0.0.1": {kind: "ok"}}}
		defer f.close()
		d := &dial.Dialer{DialFunc: f.dial}
		for range 2 {
			c, err := d.DialContext(t.Context(), "tcp", "127.0.0.1:80")
			require.NoError(t, err)
			c.Close()
		}
	}
	for range 2 {
		synctest.Test(t, dialTwice)
	}
	dialTwice(t)
}
