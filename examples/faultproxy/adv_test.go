package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAPIConcurrentAddKeepsEveryRule: rules added at the same time by
// several harness threads are all kept (each POST answered 201 must be in
// GET /rules and in the proxy), none lost to a racing update.
func TestAPIConcurrentAddKeepsEveryRule(t *testing.T) {
	h := run(t, "-upstream", upstream(t), "-quiet")
	const n = 24
	var wg sync.WaitGroup
	codes := make([]int, n)
	// A few rounds: the lost update needs two adds to interleave.
	for range 4 {
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h.call(http.MethodPost, "/rules", fmt.Sprintf(`{"name":"r%d","fault":"pass"}`, i))
			}()
		}
		wg.Wait()
		if got := len(h.app.proxy.Rules()); got != n {
			t.Fatalf("after %d concurrent adds: the proxy has %d rules", n, got)
		}
		h.call(http.MethodDelete, "/rules", "")
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = h.call(http.MethodPost, "/rules", fmt.Sprintf(`{"name":"r%d","fault":"pass"}`, i))
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusCreated {
			t.Errorf("POST r%d: %d", i, c)
		}
	}
	_, m := h.call(http.MethodGet, "/rules", "")
	rules, _ := m["rules"].([]any)
	if len(rules) != n || len(h.app.proxy.Rules()) != n {
		t.Fatalf("after %d concurrent adds: GET /rules has %d, the proxy %d", n, len(rules), len(h.app.proxy.Rules()))
	}
	// Concurrent removes: every 204 is gone, and nothing else.
	for i := range n / 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = h.call(http.MethodDelete, fmt.Sprintf("/rules/r%d", i), "")
		}()
	}
	wg.Wait()
	_, m = h.call(http.MethodGet, "/rules", "")
	rules, _ = m["rules"].([]any)
	if len(rules) != n/2 || len(h.app.proxy.Rules()) != n/2 {
		t.Fatalf("after %d concurrent removes: GET /rules has %d, the proxy %d", n/2, len(rules), len(h.app.proxy.Rules()))
	}
}

// TestAPIRefusesCrossSiteRequests: a web page cannot drive the API. A
// browser's cross-site POST without a JSON body needs no preflight, so
// the Content-Type rule alone does not stop it: POST /drop from another
// origin must be refused and must reset nothing.
func TestAPIRefusesCrossSiteRequests(t *testing.T) {
	h := run(t, "-upstream", upstream(t), "-quiet")
	for _, hdr := range [][]string{
		{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"},
		{"Origin", "https://evil.example"},
		{"Origin", "null"},
	} {
		code, m := h.call(http.MethodPost, "/drop", "", hdr...)
		if code != http.StatusForbidden {
			t.Errorf("POST /drop with %q: %d %v, want 403", hdr, code, m)
		}
		code, m = h.call(http.MethodDelete, "/rules", "", hdr...)
		if code != http.StatusForbidden {
			t.Errorf("DELETE /rules with %q: %d %v, want 403", hdr, code, m)
		}
	}
	// Same-origin and non-browser clients (curl, a test harness) still work.
	if code, m := h.call(http.MethodPost, "/drop", ""); code != http.StatusOK {
		t.Fatalf("POST /drop from a harness: %d %v", code, m)
	}
	if code, m := h.call(http.MethodPost, "/drop", "", "Sec-Fetch-Site", "same-origin", "Origin", h.api); code != http.StatusOK {
		t.Fatalf("POST /drop same-origin: %d %v", code, m)
	}
}

// TestAPIDeleteEmptyRuleName: DELETE /rules/{name} with an empty name (a
// harness's f"/rules/{name}" with name unset) removes one rule or none,
// never all of them.
func TestAPIDeleteEmptyRuleName(t *testing.T) {
	h := run(t, "-upstream", upstream(t), "-quiet")
	if code, _ := h.call(http.MethodPost, "/rules", `{"name":"keep","fault":"pass"}`); code != http.StatusCreated {
		t.Fatal(code)
	}
	if code, _ := h.call(http.MethodDelete, "/rules/", ""); code != http.StatusNotFound {
		t.Errorf("DELETE /rules/: %d, want 404", code)
	}
	if n := len(h.app.proxy.Rules()); n != 1 {
		t.Fatalf("DELETE /rules/ left %d rules, want 1", n)
	}
	if code, _ := h.call(http.MethodDelete, "/rules/keep/", ""); code != http.StatusNoContent {
		t.Errorf("DELETE /rules/keep/: %d, want 204", code)
	}
}

// TestTLSKeyFilePermissions: the private key is written 0600 even when
// -tls-dir already holds a key.pem readable by others (it is replaced, not
// truncated in place), and a key.pem symlink is not followed.
func TestTLSKeyFilePermissions(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(key, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, "ca.pem")); err != nil {
		t.Fatal(err)
	}
	run(t, "-upstream", upstream(t), "-tls", "terminate", "-tls-dir", dir, "-quiet")
	fi, err := os.Lstat(key)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || !fi.Mode().IsRegular() {
		t.Errorf("key.pem mode %v, want -rw-------", fi.Mode())
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me" {
		t.Errorf("the ca.pem symlink was followed: its target now holds %q", strings.TrimSpace(string(b))[:20])
	}
	if fi, err := os.Lstat(filepath.Join(dir, "ca.pem")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("ca.pem: %v %v, want a regular file", fi.Mode(), err)
	}
}

// TestCloseWithUnusedAPIConn: a connection to the API that never sends a
// request (a pooled client's spare, a port scanner) does not hold Close
// (SIGTERM) up: net/http's Shutdown would wait 5s for it.
func TestCloseWithUnusedAPIConn(t *testing.T) {
	out := &syncBuf{}
	a, err := start([]string{"-upstream", upstream(t), "-quiet"}, out)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	c, err := net.Dial("tcp", a.apiLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(100 * time.Millisecond) // accepted, in StateNew
	t0 := time.Now()
	a.Close()
	if d := time.Since(t0); d > 2500*time.Millisecond {
		t.Fatalf("Close took %v with an unused API connection open (want well under Shutdown's 5s)", d)
	}
}

// TestTLSTempDirRemoved: -tls terminate without -tls-dir writes the pair
// to a directory of its own, which Close removes (the private key does
// not outlive the proxy).
func TestTLSTempDirRemoved(t *testing.T) {
	h := run(t, "-upstream", upstream(t), "-tls", "terminate", "-quiet")
	m := regexp.MustCompile(`faultproxy: ca (\S+)`).FindStringSubmatch(h.out.String())
	if m == nil {
		t.Fatalf("no ca line:\n%s", h.out)
	}
	dir := filepath.Dir(m[1])
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("tls dir %s: %v %v, want drwx------", dir, fi.Mode(), err)
	}
	h.app.Close()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after Close the tls dir %s is still there (%v)", dir, err)
	}
}

// TestListenWarningMatchesBoundAddress: the warning about a non-loopback
// listener is printed exactly when the proxy is not on loopback. "-listen
// :0" binds 127.0.0.1 (faultnet's reading of an empty host) and must not
// claim otherwise.
func TestListenWarningMatchesBoundAddress(t *testing.T) {
	h := run(t, "-upstream", upstream(t), "-listen", ":0", "-quiet")
	if !strings.HasPrefix(h.proxy, "127.0.0.1:") {
		t.Fatalf("-listen :0 bound %s", h.proxy)
	}
	if strings.Contains(h.out.String(), "WARNING") {
		t.Fatalf("a warning for a loopback listener:\n%s", h.out)
	}
}

// TestAPIListensOnLoopbackWhateverLocalhostResolvesTo: "-api
// localhost:0" must not follow a hosts file that says localhost is
// 0.0.0.0. Run in private mount and network namespaces (so the child's
// 0.0.0.0 is an empty namespace's), with such a hosts file.
func TestAPIListensOnLoopbackWhateverLocalhostResolvesTo(t *testing.T) {
	if os.Getenv("FAULTPROXY_HOSTS_CHILD") == "1" {
		a, err := start([]string{"-upstream", "127.0.0.1:9", "-api", "localhost:0", "-quiet"}, io.Discard)
		if err != nil {
			t.Logf("refused: %v", err)
			return
		}
		defer a.Close()
		if ap, err := netip.ParseAddrPort(a.apiLn.Addr().String()); err != nil || !ap.Addr().Unmap().IsLoopback() {
			t.Fatalf("-api localhost:0 listens on %s", a.apiLn.Addr())
		}
		return
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and unshare(1)")
	}
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("0.0.0.0 localhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(unshare, "-m", "-n", "sh", "-c", `ip link set lo up && mount --bind "$1" /etc/hosts && exec "$2" -test.run '^TestAPIListensOnLoopbackWhateverLocalhostResolvesTo$' -test.v -test.count=1`, "sh", hosts, exe)
	cmd.Env = append(os.Environ(), "FAULTPROXY_HOSTS_CHILD=1")
	out, err := cmd.CombinedOutput()
	if !bytes.Contains(out, []byte("=== RUN")) {
		t.Skipf("no private namespaces here: %v %s", err, out)
	}
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// TestBlackholeConcurrentCalls: PUT /blackhole calls racing each other
// (on for 150ms, off) leave the proxy in a state one of them asked for,
// with that call's restore: once the last for_ms has passed, the route is
// back — never black-holed for good with no restore pending.
func TestBlackholeConcurrentCalls(t *testing.T) {
	h := run(t, "-upstream", upstream(t), "-quiet")
	var wg sync.WaitGroup
	for range 12 {
		for _, body := range []string{`{"on":true,"for_ms":150}`, `{"on":false}`} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if code, m := h.call(http.MethodPut, "/blackhole", body); code != http.StatusOK {
					t.Errorf("PUT /blackhole %s: %d %v", body, code, m)
				}
			}()
		}
		wg.Wait()
	}
	waitFor(t, func() bool { return !h.app.proxy.Blackholed() })
	if err := h.get(5 * time.Second); err != nil {
		t.Fatalf("after the calls: %v", err)
	}
}

// TestStdoutNotReadDoesNotStall: the docs tell a harness to read the
// output until the api line; one that then stops reading (a full pipe)
// must not stall the proxy: connections keep being served and ended, the
// API keeps answering, Close still ends everything.
func TestStdoutNotReadDoesNotStall(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	readerDone := make(chan struct{})
	a, err := start([]string{"-upstream", upstream(t)}, w)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer func() { r.Close(); <-readerDone }() // runs before a.Close: unblocks a stuck write
	var head bytes.Buffer
	go func() { // read up to the api line, then never again
		defer close(readerDone)
		buf := make([]byte, 1)
		for !strings.Contains(head.String(), "faultproxy: api ") || !strings.HasSuffix(head.String(), "\n") {
			if _, err := r.Read(buf); err != nil {
				return
			}
			head.Write(buf)
		}
	}()
	h := &harness{t: t, app: a, proxy: a.proxy.Addr(), api: "http://" + a.apiLn.Addr().String()}
	// Enough connection lines to fill a pipe (64 KiB) several times.
	for i := range 2000 {
		c, err := net.DialTimeout("tcp", h.proxy, 2*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		c.Close()
	}
	done := make(chan int, 1)
	go func() { code, _ := h.call(http.MethodPost, "/rules", `{"name":"x","fault":"pass"}`); done <- code }()
	select {
	case code := <-done:
		if code != http.StatusCreated {
			t.Fatalf("POST /rules: %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("POST /rules stalled behind a full stdout (%d goroutines)", runtime.NumGoroutine())
	}
	waitFor(t, func() bool { return a.proxy.Stats().Active == 0 })
}

// TestFlapTooFast: a flap period so short that the proxy would do nothing
// but reset (a core spent on a loop) is refused, over the API and as a
// flag.
func TestFlapTooFast(t *testing.T) {
	h := run(t, "-upstream", upstream(t), "-quiet")
	for _, body := range []string{`{"period_ms":0.000001}`, `{"period_ms":0.5}`} {
		if code, m := h.call(http.MethodPut, "/flap", body); code != http.StatusBadRequest {
			t.Errorf("PUT /flap %s: %d %v, want 400", body, code, m)
		}
	}
	if code, m := h.call(http.MethodPut, "/flap", `{"period_ms":1}`); code != http.StatusOK {
		t.Errorf("PUT /flap 1ms: %d %v", code, m)
	}
	if a, err := start([]string{"-upstream", upstream(t), "-flap", "1ns"}, io.Discard); err == nil {
		a.Close()
		t.Error("-flap 1ns: no error")
	}
}

// TestAPIHostVariants: DNS-rebinding-style Host headers (a name that a
// page's DNS points at 127.0.0.1, "localhost." and friends, mapped or
// non-loopback literals) are refused; loopback literals and localhost
// are not.
func TestAPIHostVariants(t *testing.T) {
	h := run(t, "-upstream", upstream(t), "-quiet")
	for host, want := range map[string]int{
		"127.0.0.1.nip.io":     403,
		"localtest.me":         403,
		"localhost.":           403,
		"localhost.evil.com":   403,
		"[::ffff:10.0.0.1]:80": 403,
		"0.0.0.0":              403,
		"2130706433":           403,
		"127.1":                403,
		"evil.com@127.0.0.1":   403,
		"127.0.0.1:1":          200,
		"127.5.6.7":            200,
		"[::1]:9":              200,
		"[::ffff:127.0.0.1]":   200,
		"localhost:80":         200,
	} {
		if code, m := h.call(http.MethodGet, "/stats", "", "Host", host); code != want {
			t.Errorf("Host %q: %d %v, want %d", host, code, m, want)
		}
	}
}
