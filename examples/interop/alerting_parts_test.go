package interop_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The real parts of the alerting replay (alerting_test.go): nginx as the
// load balancer, Prometheus, Alertmanager and blackbox_exporter, each a
// Debian package installed when missing, started on free loopback ports
// with its config and data in the test's temp dir, stopped at cleanup and
// its output shown when the test failed.

// stackBins are the binaries of the parts.
type stackBins struct {
	nginx, prometheus, alertmanager, blackbox, streamModule string
}

// installStack finds (or installs) every part; the test skips, saying
// why, when a part is missing and cannot be installed.
func installStack(t *testing.T) stackBins {
	t.Helper()
	b := stackBins{
		nginx:        lookBin(t, "nginx", "nginx"),
		prometheus:   lookBin(t, "prometheus", "prometheus"),
		alertmanager: lookBin(t, "prometheus-alertmanager", "prometheus-alertmanager"),
		blackbox:     lookBin(t, "prometheus-blackbox-exporter", "prometheus-blackbox-exporter"),
	}
	const mod = "/usr/lib/nginx/modules/ngx_stream_module.so"
	if _, err := os.Stat(mod); err != nil {
		aptInstall(t, "libnginx-mod-stream")
		if _, err := os.Stat(mod); err != nil {
			t.Fatalf("interop: %s missing after installing libnginx-mod-stream", mod)
		}
	}
	b.streamModule = mod
	return b
}

// writeFile writes a config file into dir and returns its path.
func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// httpReady returns a readiness check: GET url answers 200.
func httpReady(u string) func() error {
	c := &http.Client{Timeout: time.Second}
	return func() error {
		resp, err := c.Get(u)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", u, resp.Status)
		}
		return nil
	}
}

// tcpReady returns a readiness check: addr accepts a connection.
func tcpReady(addr string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// sharedPort returns a TCP port free on every one of the loopback hosts.
func sharedPort(t *testing.T, hosts ...string) int {
	t.Helper()
	for range 20 {
		first, err := net.Listen("tcp", net.JoinHostPort(hosts[0], "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		ok := true
		for _, h := range hosts[1:] {
			ln, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			ln.Close()
		}
		first.Close()
		if ok {
			return port
		}
	}
	t.Fatalf("interop: no port free on all of %v", hosts)
	return 0
}

// selfSignedFor makes a certificate for name (and the IPs), returns the
// server's config, a pool that trusts it, and the PEM file's path in dir.
func selfSignedFor(t *testing.T, dir, name string, ips ...string) (*tls.Config, *x509.CertPool, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	path := writeFile(t, dir, "ca.pem", string(certPEM))
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}}, pool, path
}

// startGoodBackend serves HTTPS on a free loopback port: 200 "ok" to every
// request.
func startGoodBackend(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "ok")
		}),
		TLSConfig:         cfg,
		ReadHeaderTimeout: 5 * time.Second,
		// Probes that only check a port close without a handshake; their
		// "TLS handshake error" lines are noise.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	done := make(chan struct{})
	// The server's goroutine ends when Close makes Serve return.
	go func() {
		defer close(done)
		_ = srv.ServeTLS(ln, "", "")
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// hangBackend is the backend that goes bad: until Hang it forwards each
// session to the good backend; from then on it accepts and never answers
// (incident 01's load balancer). Close ends every goroutine it started.
type hangBackend struct {
	ln      net.Listener
	forward string
	hanging atomic.Bool
	hung    atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startHangBackend(t *testing.T, forward string) *hangBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hangBackend{ln: ln, forward: forward, conns: make(map[net.Conn]struct{})}
	h.wg.Add(1)
	go h.accept()
	t.Cleanup(h.close)
	return h
}

func (h *hangBackend) addr() string { return h.ln.Addr().String() }

// track remembers c so that close can end its goroutine; false when closed.
func (h *hangBackend) track(c net.Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conns == nil {
		return false
	}
	h.conns[c] = struct{}{}
	return true
}

func (h *hangBackend) accept() {
	defer h.wg.Done()
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		if !h.track(c) {
			c.Close()
			return
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer c.Close()
			if h.hanging.Load() {
				h.hung.Add(1)
				_, _ = io.Copy(io.Discard, c) // accept, read, never answer
				return
			}
			up, err := net.DialTimeout("tcp", h.forward, 2*time.Second)
			if err != nil {
				return
			}
			if !h.track(up) {
				up.Close()
				return
			}
			defer up.Close()
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				_, _ = io.Copy(up, c)
				_ = up.(*net.TCPConn).CloseWrite()
			}()
			_, _ = io.Copy(c, up)
		}()
	}
}

func (h *hangBackend) close() {
	h.ln.Close()
	h.mu.Lock()
	for c := range h.conns {
		c.Close()
	}
	h.conns = nil
	h.mu.Unlock()
	h.wg.Wait()
}

// webhook is Alertmanager's receiver: it records every alert it is sent,
// with the time it arrived.
type webhook struct {
	mu       sync.Mutex
	received []receivedAlert
}

type receivedAlert struct {
	At       time.Time
	Status   string            `json:"status"`
	Labels   map[string]string `json:"labels"`
	StartsAt time.Time         `json:"startsAt"`
}

func (w *webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	var msg struct {
		Alerts []receivedAlert `json:"alerts"`
	}
	if err := json.NewDecoder(r.Body).Decode(&msg); err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	now := time.Now()
	w.mu.Lock()
	for _, a := range msg.Alerts {
		a.At = now
		w.received = append(w.received, a)
	}
	w.mu.Unlock()
}

func (w *webhook) alerts() []receivedAlert {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]receivedAlert(nil), w.received...)
}

// roundRobin resolves one name to its addresses, rotating their order on
// every lookup as round-robin DNS does, so that each address leads half of
// the dials.
type roundRobin struct {
	host  string
	addrs []netip.Addr
	n     atomic.Uint64
}

func (r *roundRobin) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if host != r.host {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	k := int(r.n.Add(1)) % len(r.addrs)
	return append(append([]netip.Addr(nil), r.addrs[k:]...), r.addrs[:k]...), nil
}

// promQuery runs an instant query against Prometheus's HTTP API and returns
// each series' labels and value.
func promQuery(base, q string) ([]promSample, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", q, body.Error)
	}
	var out []promSample
	for _, r := range body.Data.Result {
		s, _ := r.Value[1].(string)
		v, _ := strconv.ParseFloat(s, 64)
		out = append(out, promSample{r.Metric, v})
	}
	return out, nil
}

type promSample struct {
	Labels map[string]string
	Value  float64
}

// startPart runs one part with runServer, stopped with SIGTERM.
func startPart(t *testing.T, name, bin string, args []string, ready func() error) {
	t.Helper()
	runServer(t, name, exec.Command(bin, args...), syscall.SIGTERM, 30*time.Second, ready)
}

// listeningOn is the log line in which a server built on Prometheus's
// exporter-toolkit (Prometheus, Alertmanager, blackbox_exporter) reports
// the address it listens on.
var listeningOn = regexp.MustCompile(`msg="Listening on" address=(127\.0\.0\.1:[0-9]+)`)

// startWebPart runs such a part with --web.listen-address=127.0.0.1:0 and
// returns the "127.0.0.1:port" it reports once readyPath answers there.
// The kernel picks the port as the part binds it: a port picked by
// listening and closing first could be taken by another test before the
// part binds it.
func startWebPart(t *testing.T, name, bin string, args []string, readyPath string) string {
	t.Helper()
	var addr string // set by the ready check, which runs on this goroutine
	cmd := exec.Command(bin, append(args, "--web.listen-address=127.0.0.1:0")...)
	runServerLog(t, name, cmd, syscall.SIGTERM, 30*time.Second, func(out string) error {
		if addr == "" {
			m := listeningOn.FindStringSubmatch(out)
			if m == nil {
				return errors.New(`no "Listening on" line yet`)
			}
			addr = m[1]
		}
		return httpReady("http://" + addr + readyPath)()
	})
	return addr
}
