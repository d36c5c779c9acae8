package transport

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// relay forwards loopback TCP to a backend; freeze makes the conns open so
// far go silent both ways without closing them (a peer that vanished).
type relay struct {
	ln      net.Listener
	backend string
	mu      sync.Mutex
	cur     chan struct{}
	accepts atomic.Int32
	// dropped counts the frozen conns the client closed (its read side
	// ended while frozen).
	dropped atomic.Int32
	wg      sync.WaitGroup
}

func startRelay(t *testing.T, backend string) *relay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, backend: backend, cur: make(chan struct{})}
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(func() { ln.Close(); r.freeze(); r.wg.Wait() })
	return r
}

func (r *relay) serve() {
	defer r.wg.Done()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.accepts.Add(1)
		up, err := net.Dial("tcp", r.backend)
		if err != nil {
			c.Close()
			continue
		}
		conns = append(conns, c, up)
		r.mu.Lock()
		frozen := r.cur
		r.mu.Unlock()
		for _, pair := range [][2]net.Conn{{c, up}, {up, c}} {
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				buf := make([]byte, 32<<10)
				for {
					n, err := pair[0].Read(buf)
					select {
					case <-frozen:
						// Silent: swallow everything, close nothing, until
						// the relay stops.
						if err != nil {
							if pair[0] == c {
								r.dropped.Add(1)
							}
							return
						}
						continue
					default:
					}
					if n > 0 {
						if _, werr := pair[1].Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						pair[1].Close()
						return
					}
				}
			}()
		}
	}
}

// freeze silences every conn relayed so far; later conns work.
func (r *relay) freeze() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.cur:
	default:
		close(r.cur)
	}
	r.cur = make(chan struct{})
}

// TestHTTP2PingsDropDeadConn: an HTTP/2 conn whose peer goes silent (no
// FIN, no RST) is found dead by the health pings and dropped, so the next
// request opens a new conn instead of waiting on the dead one. The ping
// timings are shortened on this Transport's own net/http Transport.
func TestHTTP2PingsDropDeadConn(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	rl := startRelay(t, srv.Listener.Addr().String())

	tr := &Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "example.com"},
		FirstByteTimeout: 20 * time.Second}
	st := tr.get()
	st.ht.HTTP2.SendPingTimeout = 200 * time.Millisecond
	st.ht.HTTP2.PingTimeout = 200 * time.Millisecond
	defer tr.CloseIdleConnections()
	get := func() (string, error) {
		resp, err := NewClient(tr).Get("https://" + rl.ln.Addr().String())
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	proto, err := get()
	if err != nil || proto != "HTTP/2.0" {
		t.Fatalf("first request: %q, %v", proto, err)
	}
	rl.freeze()
	// Several ping periods (400ms) on a quiet machine; waited for, not
	// slept, so that a loaded machine's late timers do not send the next
	// request to the dead conn before the pings found it. A conn the
	// pings never drop fails here.
	for wait := time.Now(); rl.dropped.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Since(wait) > 10*time.Second {
			t.Fatal("the frozen conn was not dropped 10s after its peer went silent (pings every 200ms)")
		}
	}
	start := time.Now()
	proto, err = get()
	if err != nil || proto != "HTTP/2.0" {
		t.Fatalf("after the freeze: %q, %v", proto, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the second request took %v: it waited on the dead conn", d)
	}
	// 2: the dead one was replaced. On a loaded machine a dial's handshake
	// may outlast AttemptDelay, and the lone address's race opens one more
	// (make stress saw 3); never more than one extra per dial.
	if n := rl.accepts.Load(); n < 2 || n > 4 {
		t.Fatalf("relay accepted %d conns, want 2 to 4 (the dead one was replaced)", n)
	}
}
