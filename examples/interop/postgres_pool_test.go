package interop_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/pool"
)

// newPostgresPool pools PostgreSQL sessions: each connection is dialed
// through a lifeline Dialer and has completed the startup handshake.
func newPostgresPool(t *testing.T, s *pgServer, maxConns int) *pool.Pool {
	t.Helper()
	d := &dial.Dialer{}
	p, err := pool.New(pool.Config{
		Dial: func(ctx context.Context) (net.Conn, error) {
			c, err := d.DialContext(ctx, "tcp", s.Addr)
			if err != nil {
				return nil, err
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if err := pgStartup(c, bufio.NewReader(c)); err != nil {
				c.Close()
				return nil, err
			}
			_ = c.SetDeadline(time.Time{})
			return c, nil
		},
		MaxConns:       maxConns,
		DialRate:       100,
		CheckAfterIdle: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// isTooManyClients reports PostgreSQL's SQLSTATE 53300, "sorry, too many
// clients already": the server's max_connections ran out — incident 03.
func isTooManyClients(err error) bool {
	var pe *pgError
	return errors.As(err, &pe) && pe.Code == "53300"
}

// TestPostgresMaxConnections replays incident 03 against a real
// PostgreSQL: max_connections is 8; while 16 workers query through a pool,
// every client backend is terminated server-side again and again (as the
// network restarts dropped every connection). A pool capped at 7 leaves the
// one connection the monitor needs: the server never answers "too many
// clients", never holds more than 8 backends, and serves again once the
// storm stops. The control, a pool capped above max_connections, does run
// the server out of connections — the fault is real and the test can fail.
func TestPostgresMaxConnections(t *testing.T) {
	s := startPostgres(t, "max_connections=8", "superuser_reserved_connections=0")
	for _, tc := range []struct {
		name      string
		maxConns  int
		wantLimit bool
	}{
		{"pool capped below max_connections", 7, false},
		{"control: pool capped above max_connections", 12, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The monitor holds one session for all its queries: a new
			// connection per query would need a second slot for as long as
			// the server takes to reap the last one's backend, and the
			// pool would meet "too many clients" through no fault of its
			// own. It waits until it is the only client left (backends of
			// the server's start-up check or of the subtest before may
			// still be exiting), so that the pool has exactly 7 slots.
			mon := s.session(t)
			waitFor(t, 5*time.Second, "the monitor alone on the server", func() bool {
				n, err := mon.query("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
				return err == nil && n == "1"
			})
			p := newPostgresPool(t, s, tc.maxConns)
			ctx, stop := context.WithCancel(t.Context())
			var (
				wg                  sync.WaitGroup
				ok, failed, tooMany atomic.Int64
				lastOK              atomic.Int64
			)
			for range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil {
						err := pgWork(ctx, p)
						switch {
						case err == nil:
							ok.Add(1)
							lastOK.Store(time.Now().UnixNano())
						case isTooManyClients(err):
							tooMany.Add(1)
						case ctx.Err() == nil:
							failed.Add(1)
						}
					}
				}()
			}

			// The monitor terminates every other client backend five times,
			// sampling the server's backend count in between.
			maxBackends, monitorRefused := 0, 0
			for range 5 {
				_, err := mon.query("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity " +
					"WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
				if isTooManyClients(err) {
					monitorRefused++
				} else if err != nil {
					t.Fatalf("terminate: %v", err)
				}
				until := time.Now().Add(200 * time.Millisecond)
				for time.Now().Before(until) {
					n, err := mon.query("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
					switch {
					case isTooManyClients(err):
						monitorRefused++
					case err != nil:
						t.Fatalf("count backends: %v", err)
					default:
						v, _ := strconv.Atoi(n)
						maxBackends = max(maxBackends, v)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			stormEnd := time.Now()
			if !tc.wantLimit {
				waitFor(t, 2*time.Second, "served again after the storm", func() bool {
					return lastOK.Load() > stormEnd.UnixNano()
				})
			}
			stop()
			wg.Wait()
			st := p.Stats()
			t.Logf("queries ok %d, failed %d, too many clients %d (monitor refused %d); max backends %d; stats %+v",
				ok.Load(), failed.Load(), tooMany.Load(), monitorRefused, maxBackends, st)

			limitHit := tooMany.Load()+int64(monitorRefused) > 0
			if tc.wantLimit {
				if !limitHit {
					t.Fatalf("control: a pool of %d never ran max_connections=8 out", tc.maxConns)
				}
				return
			}
			if limitHit {
				t.Errorf("the server refused connections for max_connections (%d workers, %d monitor)", tooMany.Load(), monitorRefused)
			}
			if maxBackends > 8 {
				t.Errorf("the server held %d backends; max_connections is 8", maxBackends)
			}
			if failed.Load() == 0 {
				t.Errorf("no query failed: the terminations did not reach the pool's sessions")
			}
			if st.Open > tc.maxConns {
				t.Errorf("Open = %d > MaxConns %d", st.Open, tc.maxConns)
			}
		})
	}
}

// pgWork runs one short query on a pooled session. A session the server
// ended (or any protocol error) is marked broken, so Release destroys it.
func pgWork(ctx context.Context, p *pool.Pool) error {
	actx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := p.Acquire(actx)
	if err != nil {
		return err
	}
	defer c.Release()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := pgQuery(c, bufio.NewReader(c), "SELECT 1"); err != nil {
		c.MarkBroken()
		return err
	}
	return nil
}
