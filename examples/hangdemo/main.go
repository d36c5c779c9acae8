// Command hangdemo replays incident 01 in-process, on loopback only: a load
// balancer that hangs about 8% of new connections after accept (by
// default in the TLS handshake, as the incident's HTTPS load balancers
// did) in front of a real backend. The same requests, each on a new
// connection and sent on the same schedule (-rate per second, whatever the
// earlier ones are doing), go through net/http's default client settings
// and then through lifeline's transport, one client after the other so
// that each has the machine to itself and every row compares like with
// like. A progress line runs meanwhile (a line per second when the output
// is not a terminal), then a table shows successes, p50, p99, max,
// attempts, the most requests in flight at once, and the failures that
// lifeline absorbed and counted on lifeline.masked_failures: the failures
// that monitoring built on SDK probes never saw in the incident.
//
// net/http gets a per-request cap (3s by default) so that the demo ends:
// without it a request on a hung connection waits forever over plain HTTP
// (no response-header timeout), and 10s over HTTPS (DefaultTransport's
// TLSHandshakeTimeout) before it fails.
//
// Run it with:
//
//	go run ./examples/hangdemo
//	go run ./examples/hangdemo -n 1000 -hang 0.2 -proto http -hedge fixed
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/transport"
)

func main() {
	opts, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := run(ctx, opts, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "hangdemo:", err)
		os.Exit(1)
	}
}

// options are the demo's settings, from the command line.
type options struct {
	n        int           // requests per client
	hang     float64       // fraction of new connections the balancer hangs
	proto    string        // "https" or "http"
	hedge    string        // "off", "fixed" or "adaptive"
	rate     float64       // requests sent per second, per client
	capAt    time.Duration // net/http's per-request cap
	warm     int           // healthy requests per client before the balancer degrades
	progress time.Duration // interval of the progress line
}

// parseFlags reads the command line; errors (and -h) are printed to errOut.
func parseFlags(args []string, errOut io.Writer) (options, error) {
	fs := flag.NewFlagSet("hangdemo", flag.ContinueOnError)
	fs.SetOutput(errOut)
	o := options{progress: 200 * time.Millisecond}
	fs.IntVar(&o.n, "n", 400, "requests per client")
	fs.Float64Var(&o.hang, "hang", 0.08, "fraction of new connections the load balancer hangs (0..1)")
	fs.StringVar(&o.proto, "proto", "https", "https (the hang is in the TLS handshake) or http (after accept)")
	fs.StringVar(&o.hedge, "hedge", "adaptive", "lifeline's hedging: off (FirstByteTimeout 1s, retries), fixed (250ms) or adaptive (95th percentile)")
	fs.Float64Var(&o.rate, "rate", 100, "requests per second per client, sent on schedule whatever the earlier ones are doing")
	fs.DurationVar(&o.capAt, "cap", 3*time.Second, "net/http's per-request cap, so that the demo ends")
	short := fs.Bool("short", false, "a quick run (48 requests in 1s, 1s cap), for tests")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if *short {
		o.n, o.rate, o.capAt, o.progress = 48, 48, time.Second, 50*time.Millisecond
	}
	// Enough healthy history for the adaptive hedge delay to leave its 1s
	// ceiling (it needs 20 samples).
	o.warm = 24
	var bad string
	switch {
	case o.n <= 0:
		bad = "-n must be positive"
	case !(o.hang >= 0 && o.hang < 1):
		bad = "-hang must be in [0, 1)"
	case o.proto != "https" && o.proto != "http":
		bad = "-proto must be https or http"
	case o.hedge != "off" && o.hedge != "fixed" && o.hedge != "adaptive":
		bad = "-hedge must be off, fixed or adaptive"
	case !(o.rate > 0 && o.rate <= 10000):
		bad = "-rate must be in (0, 10000]"
	case o.capAt <= 0:
		bad = "-cap must be positive"
	}
	if bad != "" {
		fmt.Fprintln(errOut, "hangdemo:", bad)
		fs.Usage()
		return o, errors.New(bad)
	}
	return o, nil
}

// side is one client's run: its balancer, its client and what it saw.
type side struct {
	name   string
	lb     *faultnet.Server
	client *http.Client
	capAt  time.Duration // 0: none

	done     atomic.Int64
	inFlight atomic.Int64
	peak     atomic.Int64  // the most requests in flight at once
	took     time.Duration // the whole replay, set when it ends
	mu       sync.Mutex
	lat      []time.Duration // successful requests
	fail     int
	last     error // the last failure
}

// run plays the demo: out gets the report, progress the progress line.
func run(ctx context.Context, o options, out, progress io.Writer) error {
	serverTLS, clientTLS, err := faultnet.NewSelfSigned("api.lifeline.test", "127.0.0.1")
	if err != nil {
		return err
	}
	backend, err := startBackend(o.proto == "https", serverTLS)
	if err != nil {
		return err
	}
	defer backend.Close()

	// One balancer per client, both hanging the same ordinals of their new
	// connections, in front of the same backend: each client meets the
	// same fault.
	var sides []*side
	for _, name := range []string{"net/http", "lifeline"} {
		lb, err := faultnet.NewLB(faultnet.LBConfig{Backend: backend.Addr().String()})
		if err != nil {
			return err
		}
		defer lb.Close()
		sides = append(sides, &side{name: name, lb: lb})
	}
	plain, ll := sides[0], sides[1]

	// net/http's defaults (DefaultTransport), trusting the demo's
	// certificate, and a cap so that the demo ends.
	ht := http.DefaultTransport.(*http.Transport).Clone()
	ht.TLSClientConfig = clientTLS.Clone()
	defer ht.CloseIdleConnections()
	plain.client = &http.Client{Transport: ht}
	plain.capAt = o.capAt

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	lt := &transport.Transport{
		// Health remembers the balancer's address, so the masked failures
		// carry it as network.peer.address.
		Dialer:          &dial.Dialer{Health: new(dial.Health)},
		TLSClientConfig: clientTLS.Clone(),
		MeterProvider:   mp,
	}
	hedging := ""
	switch o.hedge {
	case "off":
		lt.FirstByteTimeout = time.Second
		hedging = "no hedging, FirstByteTimeout 1s and retries"
	case "fixed":
		lt.HedgeDelay = 250 * time.Millisecond
		hedging = "HedgeDelay 250ms"
	case "adaptive":
		lt.HedgeQuantile = 0.95
		hedging = "HedgeQuantile 0.95"
	}
	defer lt.CloseIdleConnections()
	ll.client = transport.NewClient(lt)

	where := "in the TLS handshake"
	if o.proto == "http" {
		where = "after accept"
	}
	fmt.Fprintf(out, "hangdemo: incident 01 on loopback. A load balancer hangs %.0f%% of new %s connections %s,\n",
		100*o.hang, o.proto, where)
	fmt.Fprintf(out, "in front of a healthy backend. %d GETs per client, %g per second, each on a new connection.\n", o.n, o.rate)
	fmt.Fprintf(out, "net/http first, then lifeline, each alone on the machine, on the same schedule.\n")
	fmt.Fprintf(out, "lifeline: zero Dialer (a lone address races itself after 250ms), %s.\n\n", hedging)

	url := func(s *side) string { return o.proto + "://" + s.lb.Addr() + "/" }

	// A healthy start: the service had a history before the balancer
	// degraded (lifeline's adaptive hedge delay learns from it).
	for _, s := range sides {
		if err := warmUp(ctx, s, url(s), o.warm, o.rate); err != nil {
			return fmt.Errorf("%s, warm-up against a healthy balancer: %w", s.name, err)
		}
	}
	for _, s := range sides {
		s.lb.SetFault(faultnet.StallTLS, faultnet.Fraction(o.hang))
		if o.proto == "http" {
			s.lb.SetFault(faultnet.Silence, faultnet.Fraction(o.hang))
		}
	}
	warmAttempts, err := sumCounter(ctx, reader, "lifeline.http.attempts")
	if err != nil {
		return err
	}

	// One client after the other, each sending on the same schedule: run
	// at once, they shared the CPU; with a fixed number of workers each,
	// lifeline's (none of them waiting on a hung connection) kept more
	// handshakes in flight than net/http's, and each got less CPU. Either
	// made lifeline's p50 look several times net/http's. With the same
	// offered load, the rows compare like with like.
	tty := isTerminal(progress)
	every := o.progress
	if !tty {
		every = max(every, time.Second) // a log, not an animation
	}
	start := time.Now()
	for _, s := range sides {
		stop := make(chan struct{})
		var pwg sync.WaitGroup
		pwg.Go(func() { showProgress(progress, s, o.n, every, tty, stop) })
		s.replay(ctx, url(s), o.n, o.rate)
		close(stop)
		pwg.Wait()
	}
	elapsed := time.Since(start)

	attempts, err := sumCounter(ctx, reader, "lifeline.http.attempts")
	if err != nil {
		return err
	}
	masked, err := maskedFailures(ctx, reader)
	if err != nil {
		return err
	}
	report(out, o, sides, attempts-warmAttempts, masked, elapsed)
	return nil
}

// backend is the healthy service behind the balancers: a net/http server
// on loopback that answers "ok".
type backend struct {
	ln  net.Listener
	srv *http.Server
	wg  sync.WaitGroup
}

func startBackend(https bool, cfg *tls.Config) (*backend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &backend{ln: ln, srv: &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "ok")
		}),
		ReadHeaderTimeout: 10 * time.Second,
		// Handshakes the clients abandoned (raced, hedged or capped) are
		// logged by net/http; they are the demo's point, not noise to show.
		ErrorLog: log.New(io.Discard, "", 0),
	}}
	if https {
		ln = tls.NewListener(ln, cfg)
	}
	b.wg.Go(func() { _ = b.srv.Serve(ln) })
	return b, nil
}

// Addr is the backend's listening address.
func (b *backend) Addr() net.Addr { return b.ln.Addr() }

// Close stops the server and its connections and waits for it.
func (b *backend) Close() error {
	err := b.srv.Close()
	b.wg.Wait()
	return err
}

// replay sends n GETs at rate per second, each on a new connection and
// at its time on the schedule, whatever the earlier ones are doing (an
// open loop: a hung request holds its goroutine, not the next request),
// and waits for all of them.
func (s *side) replay(ctx context.Context, url string, n int, rate float64) {
	start := time.Now()
	defer func() { s.took = time.Since(start) }()
	every := time.Duration(float64(time.Second) / rate)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var wg sync.WaitGroup
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * every)); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
			case <-timer.C:
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			in := s.inFlight.Add(1)
			for p := s.peak.Load(); in > p && !s.peak.CompareAndSwap(p, in); p = s.peak.Load() {
			}
			d, err := s.get(ctx, url)
			s.inFlight.Add(-1)
			s.mu.Lock()
			if err == nil {
				s.lat = append(s.lat, d)
			} else {
				s.fail++
				s.last = err
			}
			s.mu.Unlock()
			s.done.Add(1)
		})
	}
	wg.Wait()
}

// get sends one GET on a new connection (req.Close) and reads the answer.
func (s *side) get(ctx context.Context, url string) (time.Duration, error) {
	if s.capAt > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.capAt)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Close = true
	start := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err == nil && (resp.StatusCode != http.StatusOK || string(b) != "ok") {
		err = fmt.Errorf("answer %d %q", resp.StatusCode, b)
	}
	return time.Since(start), err
}

// warmUp sends n healthy requests and fails on any error.
func warmUp(ctx context.Context, s *side, url string, n int, rate float64) error {
	s.replay(ctx, url, n, rate)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail > 0 {
		return s.last
	}
	s.lat, s.fail, s.last = nil, 0, nil
	s.done.Store(0)
	s.peak.Store(0)
	return nil
}

// showProgress shows s's progress until stop: on a terminal one line
// rewritten in place, otherwise (a pipe, a file) a line each time.
func showProgress(w io.Writer, s *side, n int, every time.Duration, tty bool, stop <-chan struct{}) {
	start := time.Now()
	t := time.NewTicker(every)
	defer t.Stop()
	line := func() {
		s.mu.Lock()
		fail := s.fail
		s.mu.Unlock()
		text := fmt.Sprintf("  %5.1fs   %s %d/%d done, %d failed", time.Since(start).Seconds(), s.name, s.done.Load(), n, fail)
		if tty {
			fmt.Fprint(w, "\r"+text)
		} else {
			fmt.Fprintln(w, text)
		}
	}
	for {
		select {
		case <-t.C:
			line()
		case <-stop:
			line()
			if tty {
				fmt.Fprintln(w)
			}
			return
		}
	}
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// report writes the side-by-side table and the masked failures.
func report(w io.Writer, o options, sides []*side, llAttempts int64, masked []maskedPoint, elapsed time.Duration) {
	plain, ll := sides[0], sides[1]
	var totalMasked int64
	for _, m := range masked {
		totalMasked += m.n
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', tabwriter.AlignRight)
	row := func(cells ...string) {
		for _, c := range cells {
			fmt.Fprint(tw, c, "\t")
		}
		fmt.Fprintln(tw)
	}
	row("", "net/http defaults*", "lifeline")
	row("succeeded", ratio(plain), ratio(ll))
	row("p50", quantile(plain, 0.50), quantile(ll, 0.50))
	row("p99", quantile(plain, 0.99), quantile(ll, 0.99))
	row("max", quantile(plain, 1), quantile(ll, 1))
	row("attempts", strconv.Itoa(o.n)+" (no retry)", strconv.FormatInt(llAttempts, 10))
	row("all done after", roughly(plain.took), roughly(ll.took))
	row("most in flight at once", strconv.FormatInt(plain.peak.Load(), 10), strconv.FormatInt(ll.peak.Load(), 10))
	row("connections hung by the LB", strconv.FormatInt(plain.lb.Stats().Faulted, 10), strconv.FormatInt(ll.lb.Stats().Faulted, 10))
	row("masked failures counted", "-", strconv.FormatInt(totalMasked, 10))
	_ = tw.Flush()
	fmt.Fprintf(w, "\n* net/http: DefaultTransport's settings, each request capped at %v so the demo ends;\n", o.capAt)
	fmt.Fprintln(w, "  uncapped, a request on a hung connection waits forever over http and 10s over https (TLSHandshakeTimeout).")
	fmt.Fprintln(w, "  p50/p99/max are of successful requests. The clients ran one after the other, each alone on this")
	fmt.Fprintf(w, "  machine, both sending a request every %s whatever the earlier ones were doing.\n", roughly(time.Duration(float64(time.Second)/o.rate)))
	if plain.last != nil {
		fmt.Fprintf(w, "  net/http's last failure: %v\n", plain.last)
	}
	if ll.last != nil {
		fmt.Fprintf(w, "lifeline's last failure: %v\n", ll.last)
	}
	fmt.Fprintf(w, "\nlifeline.masked_failures: the failures monitoring would otherwise never have seen (%d):\n", totalMasked)
	for _, m := range masked {
		peer := m.peer
		if peer == "" {
			peer = "-" // the try had no connection yet
		}
		fmt.Fprintf(w, "  masked_by=%-5s phase=%-10s peer=%-9s error.type=%-20s %d\n", m.by, m.phase, peer, m.errType, m.n)
	}
	fmt.Fprintf(w, "\nreplayed in %.1fs\n", elapsed.Seconds())
}

func ratio(s *side) string {
	ok := len(s.lat)
	total := ok + s.fail
	return fmt.Sprintf("%d/%d (%.1f%%)", ok, total, 100*float64(ok)/float64(max(total, 1)))
}

// quantile of a side's successful latencies, rounded for the table.
func quantile(s *side, q float64) string {
	if len(s.lat) == 0 {
		return "-"
	}
	l := slices.Clone(s.lat)
	slices.Sort(l)
	i := min(max(int(q*float64(len(l))+0.5)-1, 0), len(l)-1)
	return roughly(l[i])
}

// roughly prints d to two or three significant digits.
func roughly(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

// maskedPoint is one series of lifeline.masked_failures.
type maskedPoint struct {
	by, phase, peer, errType string
	n                        int64
}

// maskedFailures reads lifeline.masked_failures by masked_by, phase, peer
// and error.type (summed over the packages' scopes), largest first.
func maskedFailures(ctx context.Context, r *sdkmetric.ManualReader) ([]maskedPoint, error) {
	var out []maskedPoint
	err := eachPoint(ctx, r, "lifeline.masked_failures", func(p metricdata.DataPoint[int64]) {
		get := func(k string) string {
			v, _ := p.Attributes.Value(attribute.Key(k))
			return v.String()
		}
		mp := maskedPoint{get("lifeline.masked_by"), get("lifeline.phase"), get("network.peer.address"), get("error.type"), p.Value}
		for i := range out {
			if out[i].by == mp.by && out[i].phase == mp.phase && out[i].peer == mp.peer && out[i].errType == mp.errType {
				out[i].n += mp.n
				return
			}
		}
		out = append(out, mp)
	})
	slices.SortFunc(out, func(a, b maskedPoint) int { return int(b.n - a.n) })
	return out, err
}

// sumCounter adds every point of the int64 counter name.
func sumCounter(ctx context.Context, r *sdkmetric.ManualReader, name string) (int64, error) {
	var n int64
	err := eachPoint(ctx, r, name, func(p metricdata.DataPoint[int64]) { n += p.Value })
	return n, err
}

func eachPoint(ctx context.Context, r *sdkmetric.ManualReader, name string, f func(metricdata.DataPoint[int64])) error {
	var rm metricdata.ResourceMetrics
	if err := r.Collect(ctx, &rm); err != nil {
		return err
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == name {
				for _, p := range sum.DataPoints {
					f(p)
				}
			}
		}
	}
	return nil
}
