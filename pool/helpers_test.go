package pool_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/lifeline-go/lifeline/pool"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pipeDialer dials net.Pipe conns whose far end echoes until closed. It
// counts dials and can be made to fail or block. Safe for use in synctest
// bubbles: every goroutine it starts ends when its conn is closed.
type pipeDialer struct {
	dials   atomic.Int64
	fail    atomic.Pointer[error]
	mu      sync.Mutex
	servers []net.Conn
	gate    chan struct{} // when non-nil, each dial waits for a value or ctx
}

func (d *pipeDialer) Dial(ctx context.Context) (net.Conn, error) {
	d.dials.Add(1)
	if d.gate != nil {
		select {
		case <-d.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if e := d.fail.Load(); e != nil {
		return nil, *e
	}
	c, s := net.Pipe()
	d.mu.Lock()
	d.servers = append(d.servers, s)
	d.mu.Unlock()
	go func() { defer s.Close(); _, _ = io.Copy(s, s) }()
	return c, nil
}

func (d *pipeDialer) setFail(err error) {
	if err == nil {
		d.fail.Store(nil)
		return
	}
	d.fail.Store(&err)
}

// killServers closes the far end of every conn dialed so far.
func (d *pipeDialer) killServers() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.servers {
		_ = s.Close()
	}
	d.servers = nil
}

var errBoom = errors.New("boom")

// eventually polls cond until it holds and fails the test if it does not
// within the limit. Limits are generous (the machine is shared): the poll
// returns as soon as cond holds, so slack costs nothing when all is well.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// finCrossesLoopback is a margin for a close the server has completed to
// reach our socket. On loopback the FIN (or RST, or data) is delivered
// before the server's close or write returns in practice; the margin only
// covers a preempted softirq.
const finCrossesLoopback = 20 * time.Millisecond

func newPool(t testing.TB, cfg pool.Config) *pool.Pool {
	t.Helper()
	p, err := pool.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}
