// Package transport is lifeline's HTTP client side: [Transport], an
// http.RoundTripper on net/http's Transport (HTTP/1.1 and HTTP/2) whose
// conns come from a [github.com/lifeline-go/lifeline/dial.Dialer], and
// [NewClient].
//
// It replays the lesson of a load-balancer outage in which about 8% of
// connections were accepted and then went silent: one SDK without a
// connect timeout hung for hours while the others' retries hid the fault.
// A Transport bounds every phase (DNS, connect and TLS through the Dialer,
// which races addresses and a lone address against itself; the response
// headers with FirstByteTimeout; every body read with StallTimeout), retries
// only what is safe (nothing written, or idempotent and replayable) within a
// budget, hedges slow idempotent requests (a fixed delay or a quantile of
// recent latency), recycles conns past MaxConnLifetime without failing a
// request, and counts on lifeline.masked_failures every failure a retry or a
// hedge absorbed — so monitoring sees the 8% even when every call succeeds.
//
// Usage:
//
//	client := transport.NewClient(&transport.Transport{
//		HedgeQuantile: 0.95, // hedge the slowest 5%
//	})
//	resp, err := client.Get("https://api.example.com/v1/items")
//
// Spans: one client span per try, named by the method ("GET"), a child of
// the caller's span, with server.address, server.port, url.full (no
// userinfo; query values redacted), network.peer.address,
// http.request.resend_count on resends, http.response.status_code and, on
// failure, error.type; it ends when the body is read to EOF or closed. No
// header value, userinfo or query value reaches a span, a metric, an error
// or a log.
package transport
