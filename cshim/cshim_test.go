package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/faultnet"
)

// The C tests: cshim is built as a shared library and as a static archive
// (each once per test run), ctest/lifeline_test.c is compiled against each
// with -Wall -Wextra -Werror (and once more with AddressSanitizer), and run
// against loopback servers started here. The program prints "ok NAME" per
// test; every expected name must be there.

// expectedOK are the "ok" lines a full run must print.
var expectedOK = []string{
	"version", "get", "post", "https", "config", "first_byte_timeout", "first_byte_timeout_retried",
	"tls_handshake_stall", "connect_timeout", "connect_refused", "total_deadline", "default_request_timeout", "deadline_phase",
	"dns_no_addresses", "body_stall", "large_body", "huge_length", "async", "callback_reentrant", "cancel", "cancel_held", "stress",
	"free_running", "unavailable",
	"close", "bad_args",
	"session_echo", "session_reconnect", "session_stall", "session_step", "session_threads", "session_flood", "session_callback", "adv_sessions", "dial", "metrics", "threads", "fork", "loop", "no_leaks",
}

// artifacts builds each library once per test run, whichever test asks
// first; building a c-shared library takes tens of seconds.
type artifact struct {
	once sync.Once
	path string
	err  error
	out  []byte
}

var (
	buildDir  string
	buildOnce sync.Once
	shared    artifact
	archive   artifact
	hooked    artifact
)

func needCC(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not found: the C ABI tests need a C compiler")
	}
	if os.Getenv("CGO_ENABLED") == "0" {
		t.Skip("CGO_ENABLED=0: the C ABI needs cgo")
	}
	if testing.Short() {
		t.Skip("-short: building the C library takes a while")
	}
}

func dir(t *testing.T) string {
	buildOnce.Do(func() {
		d, err := os.MkdirTemp("", "lifeline-cshim-test-")
		if err != nil {
			t.Fatal(err)
		}
		buildDir = d
	})
	return buildDir
}

// build runs `go build -buildmode=mode` once for a; tags may be empty.
func build(t *testing.T, a *artifact, mode, name, tags string) string {
	t.Helper()
	d := dir(t)
	a.once.Do(func() {
		sub := filepath.Join(d, strings.TrimSuffix(strings.TrimSuffix(name, ".so"), ".a")+"-"+tags)
		if err := os.MkdirAll(sub, 0o755); err != nil {
			a.err = err
			return
		}
		a.path = filepath.Join(sub, name)
		args := []string{"build", "-buildmode=" + mode, "-o", a.path}
		if tags != "" {
			args = append(args, "-tags", tags)
		}
		args = append(args, ".")
		cmd := exec.Command(goTool(), args...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		start := time.Now()
		a.out, a.err = cmd.CombinedOutput()
		fmt.Fprintf(os.Stderr, "cshim: go build -buildmode=%s %s: %v\n", mode, tags, time.Since(start).Round(time.Millisecond))
	})
	if a.err != nil {
		t.Fatalf("go build -buildmode=%s: %v\n%s", mode, a.err, a.out)
	}
	return a.path
}

// goTool is the go command that runs this test (go test puts its own
// GOROOT's bin first on PATH).
func goTool() string { return "go" }

func cc(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("gcc", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

var cflags = []string{"-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1", "-I."}

// compileShared links the C test program against the shared library.
func compileShared(t *testing.T, lib, out string, extra ...string) {
	libDir := filepath.Dir(lib)
	args := append(append([]string{}, cflags...), extra...)
	args = append(args, "-o", out, "ctest/lifeline_test.c", "-L"+libDir, "-llifeline",
		"-Wl,-rpath,"+libDir, "-lpthread", "-lm")
	cc(t, args...)
}

// servers are the loopback servers of the C tests.
type servers struct {
	env []string
}

func startServers(t *testing.T) *servers {
	t.Helper()
	srvTLS, _ := faultnet.SelfSigned(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	cert := srvTLS.Certificates[0].Certificate[0]
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert}), 0o600); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var stopOnce sync.Once
	t.Cleanup(func() { stopOnce.Do(func() { close(stop) }) })
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Test", "yes")
		w.Header().Set("X-Seen-User-Agent", r.UserAgent())
		io.WriteString(w, "hello")
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Echo-Back", r.Header.Get("X-Echo"))
		io.Copy(w, r.Body)
	})
	// LL_REVIVE refuses connects until GET /revive starts a server there
	// (the C test of fail fast).
	revive := faultnet.ReservePort(t, "tcp")
	reviveAddr := revive.Addr()
	revived := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "back")
	})}
	t.Cleanup(func() { revived.Close() })
	var reviveOnce sync.Once
	mux.HandleFunc("/revive", func(w http.ResponseWriter, r *http.Request) {
		var err error
		reviveOnce.Do(func() {
			var ln net.Listener
			if ln, err = revive.Listen(); err == nil {
				go revived.Serve(ln)
			}
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i % 251)
	}
	mux.HandleFunc("/unavailable", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "5")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) { w.Write(big) })
	// A hostile server's claim: a terabyte announced, three bytes sent.
	mux.HandleFunc("/huge", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000000000000")
		io.WriteString(w, "abc")
	})
	mux.HandleFunc("/stall", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(200)
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	})
	wsHandlers(mux)
	plain := httptest.NewServer(mux)
	t.Cleanup(plain.Close)
	tlsSrv := httptest.NewUnstartedServer(mux)
	tlsSrv.TLS = srvTLS.Clone()
	tlsSrv.EnableHTTP2 = true
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	// Close the /stall handlers before the servers wait for them.
	t.Cleanup(func() { stopOnce.Do(func() { close(stop) }) })

	hang := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
	tlsStall := faultnet.Start(t, faultnet.Config{Fault: faultnet.StallTLS})
	echo := faultnet.Start(t, faultnet.Config{})
	echoTLS := faultnet.Start(t, faultnet.Config{TLS: srvTLS})
	hole := faultnet.NewBlackhole(t, "")
	refused := faultnet.RefusedAddr(t, "tcp")

	return &servers{env: append([]string{
		"LL_HTTP=" + plain.URL,
		"LL_HTTPS=" + strings.Replace(tlsSrv.URL, "127.0.0.1", "localhost", 1),
		"LL_CA_FILE=" + caFile,
		"LL_HANG=" + hang.Addr(),
		"LL_TLS_STALL=" + tlsStall.Addr(),
		"LL_ECHO_TCP=" + echo.Addr(),
		"LL_ECHO_TLS=" + echoTLS.Addr(),
		"LL_BLACKHOLE=" + hole.Addr(),
		"LL_REFUSED=" + refused,
		"LL_REVIVE=" + reviveAddr,
		"LL_WS=" + strings.Replace(plain.URL, "http://", "ws://", 1),
		// The proxy variables of the CI host must not route loopback tests.
		"NO_PROXY=*", "no_proxy=*",
	}, streamServers(t)...)}
}

// run runs a compiled test program and returns its output lines.
func run(t *testing.T, s *servers, bin string, env []string, args ...string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(append(os.Environ(), s.env...), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		lines = append(lines, sc.Text())
		t.Log(sc.Text())
	}
	if err != nil {
		t.Fatalf("%s %v: %v\nstderr:\n%s", filepath.Base(bin), args, err, tail(stderr.String(), 8000))
	}
	if stderr.Len() > 0 {
		t.Logf("stderr:\n%s", tail(stderr.String(), 4000))
	}
	return lines
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// checkOK fails t unless every name has its "ok" line and nothing failed.
func checkOK(t *testing.T, lines []string, names ...string) {
	t.Helper()
	ok := map[string]bool{}
	for _, l := range lines {
		if strings.HasPrefix(l, "FAIL") {
			t.Errorf("%s", l)
		}
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "ok" {
			ok[f[1]] = true
		}
	}
	for _, n := range names {
		if !ok[n] {
			t.Errorf("no \"ok %s\" line", n)
		}
	}
}

func measure(lines []string, key string) string {
	re := regexp.MustCompile(`\b` + regexp.QuoteMeta(key) + `=(\S+)`)
	for _, l := range lines {
		if m := re.FindStringSubmatch(l); m != nil {
			return m[1]
		}
	}
	return ""
}

func TestCSharedLibrary(t *testing.T) {
	needCC(t)
	lib := build(t, &shared, "c-shared", "liblifeline.so", "")
	bin := filepath.Join(t.TempDir(), "lifeline_test")
	compileShared(t, lib, bin)
	s := startServers(t)
	lines := run(t, s, bin, nil, "all")
	checkOK(t, lines, expectedOK...)
	if v := measure(lines, "version"); v != Version {
		t.Errorf("lifeline_version() = %q, Go side says %q", v, Version)
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "measure") || strings.HasPrefix(l, "ok cancel") {
			t.Logf("%s", l)
		}
	}
}

func TestCStaticArchive(t *testing.T) {
	needCC(t)
	lib := build(t, &archive, "c-archive", "liblifeline.a", "")
	bin := filepath.Join(t.TempDir(), "lifeline_test_static")
	args := append(append([]string{}, cflags...), "-o", bin, "ctest/lifeline_test.c", lib, "-lpthread", "-lm")
	cc(t, args...)
	// The program must not need the shared library.
	if out, err := exec.Command("ldd", bin).CombinedOutput(); err == nil && strings.Contains(string(out), "liblifeline") {
		t.Fatalf("static test program links liblifeline dynamically:\n%s", out)
	}
	s := startServers(t)
	lines := run(t, s, bin, []string{"LL_LOOP=2000"}, "all")
	checkOK(t, lines, expectedOK...)
}

// TestCAddressSanitizer runs the C tests under ASan and LeakSanitizer: a
// buffer the library hands out and the host frees must be exactly what
// the library allocated, and nothing the tests free may leak.
func TestCAddressSanitizer(t *testing.T) {
	needCC(t)
	lib := build(t, &shared, "c-shared", "liblifeline.so", "")
	bin := filepath.Join(t.TempDir(), "lifeline_test_asan")
	compileShared(t, lib, bin, "-fsanitize=address", "-fno-omit-frame-pointer")
	s := startServers(t)
	lines := run(t, s, bin, []string{"LL_LOOP=2000", "LL_ASAN=1",
		"ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23:allow_user_segv_handler=1"}, "all")
	checkOK(t, lines, expectedOK...)
}

// TestCPanicPoisons builds the library with the lifeline_testhooks tag,
// which lets the C test make it panic at a chosen place.
func TestCPanicPoisons(t *testing.T) {
	needCC(t)
	lib := build(t, &hooked, "c-shared", "liblifeline.so", "lifeline_testhooks")
	bin := filepath.Join(t.TempDir(), "lifeline_test_hooks")
	compileShared(t, lib, bin, "-DLL_TESTHOOKS")
	s := startServers(t)
	for _, mode := range []string{"panic_op", "panic_export"} {
		lines := run(t, s, bin, nil, mode)
		checkOK(t, lines, mode)
	}
}

// TestCHeader compiles the public header as strict C99 and as C++.
func TestCHeader(t *testing.T) {
	needCC(t)
	out := t.TempDir()
	cc(t, "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-I.", "-c", "-o", filepath.Join(out, "c99.o"), "ctest/header_c99.c")
	if _, err := exec.LookPath("g++"); err != nil {
		t.Skip("g++ not found: the C++ half of the header test needs it")
	}
	cmd := exec.Command("g++", "-std=c++11", "-pedantic", "-Wall", "-Wextra", "-Werror", "-I.", "-c", "-o",
		filepath.Join(out, "cxx.o"), "ctest/header_cxx.cc")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("g++: %v\n%s", err, b)
	}
}
