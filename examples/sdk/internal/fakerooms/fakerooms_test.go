package fakerooms_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/lifeline-go/lifeline/examples/sdk/internal/fakerooms"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// call makes one request with net/http alone and returns status, body and
// the Retry-After header.
func call(t *testing.T, method, url, token, key, body string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), resp.Header.Get("Retry-After")
}

func token(t *testing.T, s *fakerooms.Server) string {
	t.Helper()
	code, body, _ := call(t, "POST", s.URL()+"/token", "", "", `{"api_key":"key"}`)
	var tok struct {
		AccessToken string  `json:"access_token"`
		ExpiresIn   float64 `json:"expires_in"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &tok) != nil || tok.AccessToken == "" || tok.ExpiresIn <= 0 {
		t.Fatalf("POST /token = %d %s", code, body)
	}
	return tok.AccessToken
}

func TestAPI(t *testing.T) {
	s := fakerooms.Start(t, fakerooms.Config{TokenTTL: 300 * time.Millisecond})
	if code, _, _ := call(t, "POST", s.URL()+"/token", "", "", `{"api_key":"nope"}`); code != 401 {
		t.Fatalf("bad key: %d", code)
	}
	tok := token(t, s)
	for _, c := range []struct {
		name, method, path, token, key, body string
		code                                 int
		want                                 string
	}{
		{"no token", "GET", "/rooms", "", "", "", 401, ""},
		{"create", "POST", "/rooms", tok, "k1", `{"name":"a"}`, 201, `{"id":"r1","name":"a"}`},
		{"same key", "POST", "/rooms", tok, "k1", `{"name":"a"}`, 200, `{"id":"r1","name":"a"}`},
		{"no key", "POST", "/rooms", tok, "", `{"name":"b"}`, 400, ""},
		{"get", "GET", "/rooms/r1", tok, "", "", 200, `{"id":"r1","name":"a"}`},
		{"missing", "GET", "/rooms/r9", tok, "", "", 404, ""},
		{"list", "GET", "/rooms", tok, "", "", 200, `[{"id":"r1","name":"a"}]`},
	} {
		code, body, _ := call(t, c.method, s.URL()+c.path, c.token, c.key, c.body)
		if code != c.code || (c.want != "" && body != c.want) {
			t.Errorf("%s: %d %s; want %d %s", c.name, code, body, c.code, c.want)
		}
	}
	time.Sleep(400 * time.Millisecond)
	if code, _, _ := call(t, "GET", s.URL()+"/rooms", tok, "", ""); code != 401 {
		t.Errorf("after the TTL: %d; want 401", code)
	}
	tok = token(t, s)
	s.ExpireTokens()
	if code, _, _ := call(t, "GET", s.URL()+"/rooms", tok, "", ""); code != 401 {
		t.Errorf("after ExpireTokens: %d; want 401", code)
	}
	if st := s.Stats(); st.TokensIssued != 2 || st.Creates != 1 || st.Unauthorized != 4 {
		t.Errorf("stats %+v", st)
	}
}

func TestFail(t *testing.T) {
	s := fakerooms.Start(t, fakerooms.Config{})
	tok := token(t, s)
	s.Fail(2, 1500*time.Millisecond)
	for i, want := range []int{503, 503, 200} {
		code, _, ra := call(t, "GET", s.URL()+"/rooms", tok, "", "")
		if code != want || (code == 503 && ra != "2") {
			t.Errorf("call %d: %d Retry-After %q; want %d (Retry-After 2 on 503)", i, code, ra, want)
		}
	}
}

func TestSignal(t *testing.T) {
	s := fakerooms.Start(t, fakerooms.Config{})
	url := "ws" + strings.TrimPrefix(s.URL(), "http") + "/signal"
	if _, resp, err := websocket.DefaultDialer.Dial(url, nil); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("no token: %v", err)
	}
	ws, _, err := websocket.DefaultDialer.Dial(url, http.Header{"Authorization": {"Bearer " + token(t, s)}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteJSON(map[string]string{"op": "subscribe", "room": "r1"}); err != nil {
		t.Fatal(err)
	}
	var ev fakerooms.Event
	if err := ws.ReadJSON(&ev); err != nil || ev != (fakerooms.Event{Type: "subscribed", Room: "r1"}) {
		t.Fatalf("ack %+v, %v", ev, err)
	}
	if err := ws.WriteJSON(map[string]string{"op": "subscribe", "room": "r1"}); err != nil { // a no-op: no second ack
		t.Fatal(err)
	}
	if n := s.Publish("r2", "x"); n != 0 {
		t.Fatalf("Publish to an unsubscribed room reached %d", n)
	}
	if n := s.Publish("r1", "hi"); n != 1 {
		t.Fatalf("Publish reached %d", n)
	}
	if err := ws.ReadJSON(&ev); err != nil || ev != (fakerooms.Event{Type: "message", Room: "r1", Data: "hi"}) {
		t.Fatalf("event %+v, %v", ev, err)
	}
	if n := s.DropAll(); n != 1 {
		t.Fatalf("DropAll = %d", n)
	}
	if err := ws.ReadJSON(&ev); err == nil {
		t.Fatal("read after DropAll succeeded")
	}
}

// TestCloseWithHeldRequest: Close returns while a held request and a
// websocket are open, and leaves no goroutine (goleak).
func TestCloseWithHeldRequest(t *testing.T) {
	s, err := fakerooms.New(fakerooms.Config{})
	if err != nil {
		t.Fatal(err)
	}
	tok := token(t, s)
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(s.URL(), "http")+"/signal",
		http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	s.HoldNext(1)
	s.DropEvery(time.Hour)
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequest("POST", s.URL()+"/rooms", strings.NewReader(`{"name":"a"}`))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Idempotency-Key", "k")
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		if resp, err := tr.RoundTrip(req); err == nil {
			resp.Body.Close()
		}
	}()
	for s.Stats().Creates == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v", d)
	}
	<-done
}
