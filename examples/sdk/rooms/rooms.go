package rooms

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/transport"
)

// Config configures a [Client]. BaseURL and APIKey are required.
type Config struct {
	// BaseURL is the service's URL, e.g. "https://rooms.example.com".
	BaseURL string
	// APIKey is exchanged at POST /token for bearer tokens.
	APIKey string
	// Dialer makes every connection (HTTP and websocket). Nil means
	// lifeline's zero dial.Dialer (every phase bounded, addresses raced)
	// with a Health, so addresses that hung are tried last.
	Dialer *dial.Dialer
}

// Room is a room of the service.
type Room struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Error is a non-2xx answer of the service (after lifeline's retries).
type Error struct {
	StatusCode int
	Message    string
	// RetryAfter is the wait a 429 or 503 asked for (0: none), for a
	// caller whose deadline was too close to wait it out.
	RetryAfter time.Duration
}

// Error reads like "rooms: 503 overloaded".
func (e *Error) Error() string { return fmt.Sprintf("rooms: %d %s", e.StatusCode, e.Message) }

// Client is a rooms client: one lifeline Transport (one conn pool) for
// every call, tokens fetched and refreshed by it. Safe for concurrent use;
// Close it after the Signals it opened.
type Client struct {
	base    string
	apiKey  string
	tr      *transport.Transport
	wsd     *transport.WebSocketDialer
	mp      *sdkmetric.MeterProvider
	metrics http.Handler
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || cfg.APIKey == "" {
		return nil, errors.New("rooms: Config needs an http(s) BaseURL and an APIKey")
	}
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, err
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &dial.Dialer{Health: &dial.Health{}}
	}
	c := &Client{base: strings.TrimSuffix(cfg.BaseURL, "/"), apiKey: cfg.APIKey,
		mp: sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp)), metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}
	creds := transport.NewBearerCredentials(c.fetchToken)
	c.tr = &transport.Transport{Name: "rooms", Dialer: cfg.Dialer, MeterProvider: c.mp,
		Credentials: creds}
	c.wsd = &transport.WebSocketDialer{Name: "rooms", Dialer: cfg.Dialer, MeterProvider: c.mp, Credentials: creds}
	return c, nil
}

// CreateRoom creates a room. It carries an Idempotency-Key, so lifeline
// may retry it: a create whose answer was lost makes one room, not two.
func (c *Client) CreateRoom(ctx context.Context, name string) (Room, error) {
	var r Room
	return r, c.do(ctx, http.MethodPost, "/rooms", map[string]string{"name": name}, &r)
}

// GetRoom returns the room with the given id.
func (c *Client) GetRoom(ctx context.Context, id string) (Room, error) {
	var r Room
	return r, c.do(ctx, http.MethodGet, "/rooms/"+url.PathEscape(id), nil, &r)
}

// ListRooms returns every room, oldest first.
func (c *Client) ListRooms(ctx context.Context) ([]Room, error) {
	var rs []Room
	return rs, c.do(ctx, http.MethodGet, "/rooms", nil, &rs)
}

// MetricsHandler serves the client's metrics (lifeline's, named
// "rooms" by lifeline.client.name) in the Prometheus text format: mount
// it at /metrics.
func (c *Client) MetricsHandler() http.Handler { return c.metrics }

// Close closes idle conns and flushes the metrics. Calls in flight finish.
func (c *Client) Close() error {
	c.tr.CloseIdleConnections()
	return c.mp.Shutdown(context.Background())
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b) // replayable: NewRequest sets GetBody
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if method == http.MethodPost {
		req.Header.Set("Idempotency-Key", rand.Text())
	}
	resp, err := c.tr.RoundTrip(req) // no http.Client: no redirects, no *url.Error around lifeline's errors
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		e := &Error{StatusCode: resp.StatusCode, Message: strings.TrimSpace(string(msg))}
		e.RetryAfter, _ = transport.RetryAfter(resp)
		return e
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// fetchToken exchanges the API key for a token (BearerCredentials calls
// it once at a time, on first use, near expiry and after a 401).
func (c *Client) fetchToken(ctx context.Context) (string, time.Time, error) {
	var t struct {
		Token     string  `json:"access_token"`
		ExpiresIn float64 `json:"expires_in"`
	}
	// The token request goes without the credentials it fetches.
	ctx = transport.WithCallOptions(ctx, transport.CallOptions{NoCredentials: true})
	err := c.do(ctx, http.MethodPost, "/token", map[string]string{"api_key": c.apiKey}, &t)
	return t.Token, time.Now().Add(time.Duration(t.ExpiresIn * float64(time.Second))), err
}
