// Command quickstart shows, on loopback only, what lifeline does about the
// faults in its incident reports:
//
//  1. A host name resolves to two addresses; the first accepts TCP and then
//     stalls the TLS handshake (the load-balancer fault). A plain net.Dialer
//     with tls.Client waits until its caller gives up; lifeline's Dialer
//     races the second address after AttemptDelay and wins in well under a
//     second, and counts the stall as a masked failure, so monitoring sees
//     it even though the dial succeeded.
//  2. A total outage with retries: without a budget every call makes
//     MaxAttempts attempts (a reconnect storm); a shared retry budget keeps
//     the extra load to a fraction of the calls.
//  3. A pool through a flap: every connection is reset, the pool replaces
//     them within its cap and dial rate and serves again.
//
// Run it with: go run ./examples/quickstart
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// staticResolver maps one host name to fixed addresses, standing in for DNS.
type staticResolver map[string][]netip.Addr

// LookupNetIP answers network "ip4" with the IPv4 addresses, "ip6" with
// the IPv6 ones and "ip" with all, as a DNS server answers A and AAAA.
func (r staticResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	all, ok := r[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []netip.Addr
	for _, a := range all {
		if (network == "ip4" && !a.Is4()) || (network == "ip6" && !a.Is6()) {
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

// run plays the three scenes and writes what happened to w.
func run(ctx context.Context, w io.Writer) error {
	if err := raceScene(ctx, w); err != nil {
		return fmt.Errorf("race: %w", err)
	}
	if err := budgetScene(ctx, w); err != nil {
		return fmt.Errorf("budget: %w", err)
	}
	return poolScene(ctx, w)
}

// raceScene: 127.0.0.2 stalls the TLS handshake, 127.0.0.1 is healthy, both
// on one port behind the name "api.lifeline.test".
func raceScene(ctx context.Context, w io.Writer) error {
	serverTLS, clientTLS, err := faultnet.NewSelfSigned("api.lifeline.test")
	if err != nil {
		return err
	}
	// No ServerName: lifeline sends the dialled host as SNI and verifies the
	// certificate against it, never against the raced IP.
	clientTLS.ServerName = ""
	stalled, err := faultnet.Listen(faultnet.Config{Addr: "127.0.0.2:0", Fault: faultnet.StallTLS})
	if err != nil {
		return err
	}
	defer stalled.Close()
	good, err := faultnet.Listen(faultnet.Config{
		Addr: "127.0.0.1:" + strconv.Itoa(stalled.Port()), TLS: serverTLS})
	if err != nil {
		return err
	}
	defer good.Close()
	addr := net.JoinHostPort("api.lifeline.test", strconv.Itoa(stalled.Port()))
	res := staticResolver{"api.lifeline.test": {
		netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")}}

	fmt.Fprintln(w, "== 1. an address that accepts TCP and then stalls TLS")

	// The plain way: net.Dialer + tls.Client, first address only, as a client
	// without racing does. Only the caller's 2s patience ends it.
	plainCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	start := time.Now()
	raw, err := (&net.Dialer{}).DialContext(plainCtx, "tcp", stalled.Addr())
	if err == nil {
		plainTLS := clientTLS.Clone()
		plainTLS.ServerName = "api.lifeline.test"
		tc := tls.Client(raw, plainTLS)
		err = tc.HandshakeContext(plainCtx)
		tc.Close()
	}
	cancel()
	fmt.Fprintf(w, "plain net.Dialer+tls:  failed after %.1fs (the caller gave up): %v\n",
		time.Since(start).Seconds(), errors.Is(err, context.DeadlineExceeded))

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	health := new(dial.Health)
	d := &dial.Dialer{Resolver: res, TLSConfig: clientTLS, Health: health, MeterProvider: mp}
	start = time.Now()
	conn, err := d.DialTLSContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	took := time.Since(start)
	winner := conn.RemoteAddr().(*net.TCPAddr).IP
	conn.Close()
	fmt.Fprintf(w, "lifeline DialTLSContext: won by %v in %s (AttemptDelay 250ms)\n", winner, roundMS(took))

	masked, err := maskedFailures(ctx, reader)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "masked failures seen by metrics: %v\n", masked)
	st, _ := health.Stats(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), uint16(stalled.Port())))
	fmt.Fprintf(w, "health of 127.0.0.2: tls stalls %d, demoted %v\n", st.TLSStalls, st.Demoted)

	// The next dial tries the healthy address first: no stagger to pay.
	start = time.Now()
	conn, err = d.DialTLSContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	conn.Close()
	fmt.Fprintf(w, "next dial, demoted address moved back: %s\n", roundMS(time.Since(start)))
	return nil
}

// maskedFailures reads lifeline.masked_failures as "phase@peer=count".
func maskedFailures(ctx context.Context, r *sdkmetric.ManualReader) (map[string]int64, error) {
	var rm metricdata.ResourceMetrics
	if err := r.Collect(ctx, &rm); err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "lifeline.masked_failures" {
				continue
			}
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				continue
			}
			for _, dp := range sum.DataPoints {
				phase, _ := dp.Attributes.Value(attribute.Key("lifeline.phase"))
				peer, _ := dp.Attributes.Value(attribute.Key("network.peer.address"))
				out[phase.AsString()+"@"+peer.AsString()] += dp.Value
			}
		}
	}
	return out, nil
}

// budgetScene: 200 calls against a refused port, with and without a budget.
func budgetScene(ctx context.Context, w io.Writer) error {
	fmt.Fprintln(w, "== 2. a total outage: retries with and without a budget")
	// Port 1 of loopback: nothing listens there (binding it needs root), so
	// every connect is refused. (A port freed by closing a listener of
	// one's own may be taken by another program's listener meanwhile.)
	down := "127.0.0.1:1"
	d := &dial.Dialer{}
	const calls = 200
	for _, budget := range []*retry.Budget{nil, retry.NewBudget(0.1, 0)} {
		var attempts atomic.Int64
		p := &retry.Policy{MaxAttempts: 5, InitialInterval: time.Millisecond, MaxInterval: time.Millisecond, Budget: budget}
		for range calls {
			err := p.Do(ctx, func(ctx context.Context) error {
				attempts.Add(1)
				c, err := d.DialContext(ctx, "tcp", down)
				if err == nil {
					c.Close()
				}
				return err
			})
			var de *dial.Error
			if !errors.As(err, &de) || de.Phase != dial.PhaseConnect {
				return fmt.Errorf("want a connect error, got %v", err)
			}
		}
		name := "no budget:        "
		if budget != nil {
			name = "budget 10%:       "
		}
		fmt.Fprintf(w, "%s %d calls made %d attempts (%.2f per call)\n", name, calls, attempts.Load(),
			float64(attempts.Load())/calls)
	}
	return nil
}

func roundMS(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
