package faultnet_test

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/faultnet"
)

// TestProxyUpstreamNameNotReresolved: the upstream check passes
// "localhost" as 127.0.0.1; the proxy must connect where the check looked,
// not wherever the resolver says "localhost" is at dial time (a hosts file
// or DNS answer elsewhere). Run in a private mount namespace whose
// /etc/hosts says "127.0.0.2 localhost" — still loopback, so the test
// never leaves it — with the upstream on 127.0.0.2 only: a proxy that
// re-resolves reaches it; one that dials the checked address does not.
func TestProxyUpstreamNameNotReresolved(t *testing.T) {
	if os.Getenv("FAULTNET_HOSTS_CHILD") == "1" {
		hostsChild(t)
		return
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and unshare(1) for a private /etc/hosts")
	}
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.2 localhost\n127.0.0.2 upstream.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(unshare, "-m", "sh", "-c", `mount --bind "$1" /etc/hosts && exec "$2" -test.run '^TestProxyUpstreamNameNotReresolved$' -test.v -test.count=1`, "sh", hosts, exe)
	cmd.Env = append(os.Environ(), "FAULTNET_HOSTS_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		if !bytes.Contains(out, []byte("=== RUN")) {
			t.Skipf("no private mount namespace here: %v %s", err, out)
		}
		t.Fatalf("in a namespace whose hosts file moves localhost: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

func hostsChild(t *testing.T) {
	elsewhere := faultnet.Start(t, faultnet.Config{Addr: "127.0.0.2:0"})
	port := strconv.Itoa(elsewhere.Port())
	try := func(what, addr string) {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err == nil { // a reset can beat connect's return
			_, _ = c.Write([]byte("hi"))
			var got string
			got, err = readResult(c, 2*time.Second)
			c.Close()
			t.Logf("%s: %q", what, got)
		}
		t.Logf("%s: %s", what, kind(err))
		if n := elsewhere.Stats().Accepted; n != 0 {
			t.Fatalf("%s connected to 127.0.0.2, where the hosts file put the name (%d connections): the name was resolved at dial time, unchecked", what, n)
		}
	}
	p, err := faultnet.NewProxy(faultnet.ProxyConfig{Upstream: "localhost:" + port})
	if err != nil {
		t.Fatalf("NewProxy: %v", err)
	}
	defer p.Close()
	try("Proxy with Upstream localhost", p.Addr())
	lb, err := faultnet.NewLB(faultnet.LBConfig{Backend: "localhost:" + port})
	if err != nil {
		t.Fatalf("NewLB: %v", err)
	}
	defer lb.Close()
	try("NewLB with Backend localhost", lb.Addr())
	for _, backend := range []string{"localhost:" + port, "upstream.test:" + port} {
		s := faultnet.Start(t, faultnet.Config{Handler: faultnet.Forward(backend)})
		try("Forward("+backend+")", s.Addr())
	}
}

// TestProxyBlackholeAnyAddr: a proxy told to listen on every address
// (AnyAddr, "0.0.0.0:0") black-holes like any other: connects hang, and
// the state Blackholed reports is the real one. Run in a private network
// namespace (unshare -n), so 0.0.0.0 is an empty namespace's.
func TestProxyBlackholeAnyAddr(t *testing.T) {
	if os.Getenv("FAULTNET_NETNS_CHILD") == "1" {
		up := faultnet.Start(t, faultnet.Config{})
		p, err := faultnet.NewProxy(faultnet.ProxyConfig{Addr: "0.0.0.0:0", AnyAddr: true, Upstream: up.Addr()})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		_, port, _ := net.SplitHostPort(p.Addr())
		target := "127.0.0.1:" + port
		err = p.SetBlackhole(true)
		t.Logf("SetBlackhole(true): %v; Blackholed %v", err, p.Blackholed())
		c, derr := net.DialTimeout("tcp", target, 300*time.Millisecond)
		if derr == nil {
			c.Close()
		}
		t.Logf("connect while black-holed: %s", kind(derr))
		switch {
		case err == nil && kind(derr) != "timeout":
			t.Errorf("black-holed without error, but connect: %s, want it to hang", kind(derr))
		case err != nil && p.Blackholed():
			t.Errorf("SetBlackhole failed (%v) yet Blackholed reports true; connect: %s", err, kind(derr))
		case err != nil && kind(derr) != "ok":
			t.Errorf("SetBlackhole failed (%v) and left the proxy unreachable: connect %s", err, kind(derr))
		}
		if err := p.SetBlackhole(false); err != nil {
			t.Fatal(err)
		}
		if c, err := net.DialTimeout("tcp", target, 2*time.Second); err != nil {
			t.Errorf("after the restore: %v", err)
		} else {
			c.Close()
		}
		return
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and unshare(1) for a private network namespace")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(unshare, "-n", "sh", "-c", `ip link set lo up && exec "$1" -test.run '^TestProxyBlackholeAnyAddr$' -test.v -test.count=1`, "sh", exe)
	cmd.Env = append(os.Environ(), "FAULTNET_NETNS_CHILD=1")
	out, err := cmd.CombinedOutput()
	if !bytes.Contains(out, []byte("=== RUN")) {
		t.Skipf("no private network namespace here: %v %s", err, out)
	}
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("%s", out)
}
