package interop_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// redisServer is a real redis-server from Debian's package, started by the
// test on a free loopback port and stopped at cleanup.
type redisServer struct {
	Addr string
}

// startRedis installs redis-server when it is missing (root and apt-get
// needed; otherwise the test skips and says why), starts it on 127.0.0.1
// with persistence off and the extra config args, waits until it answers
// PING and registers its shutdown.
func startRedis(t *testing.T, extra ...string) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		bin = installRedis(t)
	}
	port := freePort(t)
	args := append([]string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--protected-mode", "no", "--dir", t.TempDir(), "--loglevel", "warning",
	}, extra...)
	s := &redisServer{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	runServer(t, "redis-server", exec.Command(bin, args...), syscall.SIGTERM, 10*time.Second, func() error {
		_, err := s.command("PING")
		return err
	})
	return s
}

func installRedis(t *testing.T) string {
	t.Helper()
	aptInstall(t, "redis-server")
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("interop: redis-server still missing after install: %v", err)
	}
	return bin
}

// aptInstall installs a Debian package for a test that needs a real server,
// or skips the test, saying why, when it cannot (not root, no apt-get).
func aptInstall(t *testing.T, pkg string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("interop: %s is not installed and the test is not root, so it cannot install it (apt-get install %s)", pkg, pkg)
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skipf("interop: %s is not installed and there is no apt-get to install it", pkg)
	}
	install := func() error {
		cmd := exec.Command("apt-get", "install", "-y", "-qq", pkg)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := install(); err != nil {
		if out, err := exec.Command("apt-get", "update", "-qq").CombinedOutput(); err != nil {
			t.Fatalf("interop: apt-get update: %v: %s", err, out)
		}
		if err := install(); err != nil {
			t.Fatalf("interop: apt-get install %s: %v", pkg, err)
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// command runs one command on a fresh connection (so that it is never
// subject to the server's idle timeout or a CLIENT KILL it sends itself).
func (s *redisServer) command(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", s.Addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	return do(c, args...)
}

// connectedClients reads INFO clients' connected_clients (the asking
// connection included).
func (s *redisServer) connectedClients() (int, error) {
	info, err := s.command("INFO", "clients")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "connected_clients:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, fmt.Errorf("no connected_clients in %q", info)
}

// errRedis is a RESP error reply.
type errRedis string

func (e errRedis) Error() string { return "redis: " + string(e) }

// do sends one command in RESP and reads its one reply: a simple string,
// an integer, a bulk string or an error reply (as errRedis). The server sends
// nothing unasked, so reading through a bufio.Reader made here loses nothing.
func do(c net.Conn, args ...string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("redis: empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errRedis(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < -1 || n > 1<<20 {
			return "", fmt.Errorf("redis: bad bulk length %q", line)
		}
		if n == -1 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("redis: unexpected reply %q", line)
}

// waitFor polls cond every 20ms until it holds or the bound passes.
func waitFor(t *testing.T, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("interop: %s: not within %v", what, bound)
		case <-tick.C:
		}
	}
}
