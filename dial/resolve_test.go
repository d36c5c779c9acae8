package dial_test

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
)

// familyAnswer is how a familyResolver answers one family: after delay,
// with ips, or with a not-found error, or never (hang: until the context).
type familyAnswer struct {
	delay    time.Duration
	ips      []string
	notFound bool
	hang     bool
}

// familyResolver answers "ip6" and "ip4" lookups separately, as a DNS
// server answers AAAA and A queries; it records the lookups that ended
// because their context did.
type familyResolver struct {
	v6, v4   familyAnswer
	canceled chan string
}

func (r *familyResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	a := r.v4
	if network == "ip6" {
		a = r.v6
	}
	if a.hang {
		<-ctx.Done()
		r.canceled <- network
		return nil, &net.DNSError{Err: ctx.Err().Error(), Name: host, IsTimeout: true}
	}
	if err := sleepCtx(ctx, a.delay); err != nil {
		r.canceled <- network
		return nil, &net.DNSError{Err: err.Error(), Name: host, IsTimeout: true}
	}
	if a.notFound {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []netip.Addr
	for _, s := range a.ips {
		out = append(out, netip.MustParseAddr(s))
	}
	return out, nil
}

// TestResolveFamiliesApart: the AAAA and A lookups run apart (RFC 8305 §3):
// the race starts as soon as AAAA answers, or 50ms after A answered first
// (the Resolution Delay), and answers that come later join the running
// race, so a lookup that hangs costs at most the Resolution Delay, and a
// fast but useless AAAA answer does not fail a dial that A would complete. Timings are exact (synctest); every connect succeeds
// at once, so the elapsed time is the resolution's.
func TestResolveFamiliesApart(t *testing.T) {
	const v6, v4 = "2001:db8::1", "10.0.0.1"
	at := func(d time.Duration, ips ...string) familyAnswer { return familyAnswer{delay: d, ips: ips} }
	hang := familyAnswer{hang: true}
	notFound := familyAnswer{notFound: true}
	cases := []struct {
		name     string
		v6, v4   familyAnswer
		elapsed  time.Duration
		winner   string   // "" = the dial fails
		tried    []string // addresses in the order dialed (all succeed at once: only the first)
		canceled []string // the lookups cut short by their context, sorted
		errType  string
		plan     map[string]fakeStep // connect behaviour per IP; nil: all succeed at once
	}{
		{"both at once: IPv6 first", at(0, v6), at(0, v4), 0, v6, []string{v6}, nil, "", nil},
		{"A first, AAAA within the delay: both used", at(30*time.Millisecond, v6), at(0, v4), 30 * time.Millisecond, v6, []string{v6}, nil, "", nil},
		{"A first, AAAA after the delay: go on with A", at(80*time.Millisecond, v6), at(0, v4), 50 * time.Millisecond, v4, []string{v4}, []string{"ip6"}, "", nil},
		{"AAAA hangs: 50ms, not the 5s ResolveTimeout", hang, at(0, v4), 50 * time.Millisecond, v4, []string{v4}, []string{"ip6"}, "", nil},
		{"A hangs: AAAA answered, race at once", at(10*time.Millisecond, v6), hang, 10 * time.Millisecond, v6, []string{v6}, []string{"ip4"}, "", nil},
		{"AAAA fast but unreachable, A at 100ms: A joins the race", at(0, v6), at(100*time.Millisecond, v4),
			100 * time.Millisecond, v4, []string{v6, v4}, nil, "", map[string]fakeStep{v6: {kind: "refuse"}, v4: {kind: "ok"}}},
		{"AAAA fast but hanging, A at 100ms: A starts at the stagger", at(0, v6), at(100*time.Millisecond, v4),
			250 * time.Millisecond, v4, []string{v6, v4}, nil, "", map[string]fakeStep{v6: {kind: "hang"}, v4: {kind: "ok"}}},
		{"AAAA hanging, A at 400ms: A starts 250ms after the last attempt (v6 raced itself at 250ms)", at(0, v6), at(400*time.Millisecond, v4),
			500 * time.Millisecond, v4, []string{v6, v6, v4}, nil, "", map[string]fakeStep{v6: {kind: "hang"}, v4: {kind: "ok"}}},
		{"no AAAA records: no delay", at(0), at(0, v4), 0, v4, []string{v4}, nil, "", nil},
		{"AAAA not found, A answers", notFound, at(20*time.Millisecond, v4), 20 * time.Millisecond, v4, []string{v4}, nil, "", nil},
		{"both not found", notFound, notFound, 0, "", nil, nil, "dns_not_found", nil},
		{"A not found, AAAA hangs: the timeout is the error", hang, notFound, 5 * time.Second, "", nil, []string{"ip6"}, "dns_timeout", nil},
		{"AAAA hanging, A at 900ms: late A starts at once (the stagger is spent)", at(0, v6), at(900*time.Millisecond, v4),
			900 * time.Millisecond, v4, []string{v6, v6, v4}, nil, "", map[string]fakeStep{v6: {kind: "hang"}, v4: {kind: "ok"}}},
		{"late A goes ahead of the second AAAA address: families alternate", at(0, v6, "2001:db8::2"), at(10*time.Millisecond, v4),
			250 * time.Millisecond, v4, []string{v6, v4}, nil, "", map[string]fakeStep{v6: {kind: "hang"}, v4: {kind: "ok"}}},
		{"interleaved: a hanging v6, then v4 before the second v6", at(0, v6, "2001:db8::2"), at(0, v4),
			250 * time.Millisecond, v4, []string{v6, v4}, nil, "", map[string]fakeStep{v6: {kind: "hang"}, v4: {kind: "ok"}}},
		{"both hang: ResolveTimeout", hang, hang, 5 * time.Second, "", nil, []string{"ip4", "ip6"}, "dns_timeout", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				plan := tc.plan
				if plan == nil {
					plan = map[string]fakeStep{v6: {kind: "ok"}, v4: {kind: "ok"}}
				}
				fn := &fakeNet{plan: plan}
				defer fn.close()
				res := &familyResolver{v6: tc.v6, v4: tc.v4, canceled: make(chan string, 2)}
				d := dial.Dialer{Resolver: res, DialFunc: fn.dial}
				start := time.Now()
				conn, err := d.DialContext(t.Context(), "tcp", hostPort(443))
				assert.Equal(t, tc.elapsed, time.Since(start))
				assert.Equal(t, tc.tried, fn.calls)
				// Every lookup goroutine has ended when the dial returns: a
				// lookup that was cut short has reported it by now.
				var canceled []string
				for len(res.canceled) > 0 {
					canceled = append(canceled, <-res.canceled)
				}
				slices.Sort(canceled)
				assert.Equal(t, tc.canceled, canceled, "lookups cut short")
				if tc.winner == "" {
					var de *dial.Error
					require.ErrorAs(t, err, &de)
					assert.Equal(t, dial.PhaseDNS, de.Phase)
					assert.Equal(t, tc.errType, de.ErrorType())
					return
				}
				require.NoError(t, err)
				defer conn.Close()
				host, _, _ := net.SplitHostPort(conn.RemoteAddr().String())
				assert.Equal(t, tc.winner, host)
			})
		})
	}
}
