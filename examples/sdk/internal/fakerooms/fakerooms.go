package fakerooms

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/lifeline-go/lifeline/faultnet"
)

// Config configures a [Server]. The zero value is usable.
type Config struct {
	// APIKey is the key POST /token accepts. "" means "key".
	APIKey string
	// TokenTTL is how long a token is valid. Zero means one minute.
	TokenTTL time.Duration
}

// Room is a room as the API returns it.
type Room struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Event is a message of the signalling websocket.
type Event struct {
	Type string `json:"type"`
	Room string `json:"room"`
	Data string `json:"data,omitempty"`
}

// Stats counts what the server saw.
type Stats struct {
	TokensIssued int // POST /token answered with a token
	Unauthorized int // 401 answers
	Failed       int // 503 answers of Fail
	Creates      int // POST /rooms that made a new room
	SignalConns  int // websocket conns accepted
	Dropped      int // websocket conns cut by DropAll or DropEvery
}

// Server is a running rooms service. Its methods are safe for concurrent
// use; Close ends it and waits for its goroutines.
type Server struct {
	cfg  Config
	ln   net.Listener
	srv  *http.Server
	wg   sync.WaitGroup // Serve, handlers, the dropper
	stop chan struct{}  // closed by Close

	mu       sync.Mutex // guards the fields below
	tokens   map[string]time.Time
	rooms    []Room
	byKey    map[string]Room
	conns    map[*signalConn]struct{}
	failN    int
	failWait time.Duration
	holdN    int
	dropper  chan struct{} // closed to stop the running dropper
	st       Stats
	closed   bool
}

type signalConn struct {
	ws   *websocket.Conn
	wmu  sync.Mutex // one writer at a time (gorilla's rule)
	mu   sync.Mutex
	subs map[string]bool
}

func (c *signalConn) send(ev Event) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(time.Second))
	return c.ws.WriteJSON(ev)
}

// New starts a Server on 127.0.0.1 and a free port. The caller must Close it.
func New(cfg Config) (*Server, error) {
	if cfg.APIKey == "" {
		cfg.APIKey = "key"
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = time.Minute
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, ln: ln, stop: make(chan struct{}), tokens: map[string]time.Time{},
		byKey: map[string]Room{}, conns: map[*signalConn]struct{}{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", s.token)
	mux.HandleFunc("POST /rooms", s.authed(s.create))
	mux.HandleFunc("GET /rooms/{id}", s.authed(s.get))
	mux.HandleFunc("GET /rooms", s.authed(s.list))
	mux.HandleFunc("GET /signal", s.authed(s.signal))
	s.srv = &http.Server{Handler: s.track(mux), ReadHeaderTimeout: 5 * time.Second}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); _ = s.srv.Serve(ln) }()
	return s, nil
}

// Start is New that closes the Server at tb's Cleanup; errors are tb.Fatal.
func Start(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	s, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// URL is the base URL, "http://127.0.0.1:port".
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Port is the server's port.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// APIKey is the key POST /token accepts.
func (s *Server) APIKey() string { return s.cfg.APIKey }

// Stats returns the counts so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// Close stops the server: listener, HTTP conns, websocket conns, the
// dropper; it waits for every handler. Idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	s.mu.Unlock()
	err := s.srv.Close()
	s.DropAll()
	s.wg.Wait()
	return err
}

// ExpireTokens revokes every token issued so far: the next request with
// one gets 401.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// Fail makes the next k requests to /rooms answer 503 with
// "Retry-After: <retryAfter in whole seconds>".
func (s *Server) Fail(k int, retryAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failN, s.failWait = k, retryAfter
}

// HoldNext makes the next k POST /rooms do their work (the room is made)
// and then never answer, until the client gives up: an answer lost on the
// way back.
func (s *Server) HoldNext(k int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holdN = k
}

// Publish sends a message event to every websocket conn subscribed to
// room and returns how many it reached.
func (s *Server) Publish(room, data string) int {
	n := 0
	for _, c := range s.signalConns() {
		c.mu.Lock()
		sub := c.subs[room]
		c.mu.Unlock()
		if sub && c.send(Event{Type: "message", Room: room, Data: data}) == nil {
			n++
		}
	}
	return n
}

// DropAll cuts every websocket conn (no close frame: a crash or a
// balancer's reset) and returns how many.
func (s *Server) DropAll() int {
	cs := s.signalConns()
	for _, c := range cs {
		_ = c.ws.NetConn().Close()
	}
	s.mu.Lock()
	s.st.Dropped += len(cs)
	s.mu.Unlock()
	return len(cs)
}

// DropEvery cuts every websocket conn each d, until DropEvery(0) or Close.
func (s *Server) DropEvery(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dropper != nil {
		close(s.dropper)
		s.dropper = nil
	}
	if d <= 0 || s.closed {
		return
	}
	quit := make(chan struct{})
	s.dropper = quit
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				s.DropAll()
			case <-quit:
				return
			case <-s.stop:
				return
			}
		}
	}()
}

// HangAfterAccept starts, on host (a loopback IP other than 127.0.0.1) and
// the server's port, a listener that accepts connections and never says a
// word: incident 01's load balancer. Closed at tb's Cleanup.
func (s *Server) HangAfterAccept(tb testing.TB, host string) {
	tb.Helper()
	faultnet.Start(tb, faultnet.Config{Addr: net.JoinHostPort(host, strconv.Itoa(s.Port())), Fault: faultnet.Silence})
}

// HangConnect makes host (a loopback IP other than 127.0.0.1) and the
// server's port an address where connect hangs (SYNs dropped): a routing
// outage. Closed at tb's Cleanup.
func (s *Server) HangConnect(tb testing.TB, host string) {
	tb.Helper()
	faultnet.NewBlackhole(tb, net.JoinHostPort(host, strconv.Itoa(s.Port())))
}

func (s *Server) signalConns() []*signalConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := make([]*signalConn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	return cs
}

// track counts every handler in wg, so Close waits for them (hijacked
// websocket handlers included, which http.Server.Close does not).
func (s *Server) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Add under mu, never after Close set closed: Close's Wait then
		// sees every handler.
		s.mu.Lock()
		closed := s.closed
		if !closed {
			s.wg.Add(1)
		}
		s.mu.Unlock()
		if closed {
			http.Error(w, "closed", http.StatusServiceUnavailable)
			return
		}
		defer s.wg.Done()
		h.ServeHTTP(w, r)
	})
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	var in struct {
		APIKey string `json:"api_key"`
	}
	if json.NewDecoder(r.Body).Decode(&in) != nil || in.APIKey != s.cfg.APIKey {
		s.count(func(st *Stats) { st.Unauthorized++ })
		http.Error(w, "bad api key", http.StatusUnauthorized)
		return
	}
	s.mu.Lock()
	s.st.TokensIssued++
	tok := "tok-" + strconv.Itoa(s.st.TokensIssued)
	s.tokens[tok] = time.Now().Add(s.cfg.TokenTTL)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "expires_in": s.cfg.TokenTTL.Seconds()})
}

func (s *Server) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		const prefix = "Bearer "
		a := r.Header.Get("Authorization")
		s.mu.Lock()
		exp, ok := s.tokens[a[min(len(prefix), len(a)):]]
		ok = ok && len(a) > len(prefix) && a[:len(prefix)] == prefix && time.Now().Before(exp)
		if !ok {
			s.st.Unauthorized++
		}
		fail := ok && s.failN > 0 && r.URL.Path != "/signal"
		if fail {
			s.failN--
			s.st.Failed++
		}
		wait := s.failWait
		s.mu.Unlock()
		switch {
		case !ok:
			http.Error(w, "invalid or expired token", http.StatusUnauthorized)
		case fail:
			w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
		default:
			h(w, r)
		}
	}
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name string `json:"name"`
	}
	key := r.Header.Get("Idempotency-Key")
	if json.NewDecoder(r.Body).Decode(&in) != nil || in.Name == "" || key == "" {
		http.Error(w, "need a name and an Idempotency-Key", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	room, seen := s.byKey[key]
	if !seen {
		room = Room{ID: "r" + strconv.Itoa(len(s.rooms)+1), Name: in.Name}
		s.rooms = append(s.rooms, room)
		s.byKey[key] = room
		s.st.Creates++
	}
	hold := s.holdN > 0
	if hold {
		s.holdN--
	}
	s.mu.Unlock()
	if hold {
		select {
		case <-r.Context().Done():
		case <-s.stop:
		}
		return
	}
	status := http.StatusCreated
	if seen {
		status = http.StatusOK
	}
	writeJSON(w, status, room)
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, room := range s.rooms {
		if room.ID == r.PathValue("id") {
			writeJSON(w, http.StatusOK, room)
			return
		}
	}
	http.Error(w, "no such room", http.StatusNotFound)
}

func (s *Server) list(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	writeJSON(w, http.StatusOK, append([]Room{}, s.rooms...))
}

func (s *Server) signal(w http.ResponseWriter, r *http.Request) {
	ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &signalConn{ws: ws, subs: map[string]bool{}}
	s.mu.Lock()
	if s.closed { // Close's DropAll may have run already
		s.mu.Unlock()
		_ = ws.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.st.SignalConns++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		_ = ws.Close()
	}()
	for {
		var in struct{ Op, Room string }
		if err := ws.ReadJSON(&in); err != nil {
			var syn *json.SyntaxError
			if errors.As(err, &syn) {
				continue
			}
			return
		}
		if in.Op != "subscribe" || in.Room == "" {
			continue
		}
		c.mu.Lock()
		again := c.subs[in.Room]
		c.subs[in.Room] = true
		c.mu.Unlock()
		if !again && c.send(Event{Type: "subscribed", Room: in.Room}) != nil {
			return
		}
	}
}

func (s *Server) count(f func(*Stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.st)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
