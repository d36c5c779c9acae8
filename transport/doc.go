// Package transport is lifeline's client side for HTTP and websockets:
// [Transport], an http.RoundTripper on net/http's Transport (HTTP/1.1 and
// HTTP/2) whose conns come from a
// [github.com/lifeline-go/lifeline/dial.Dialer], [NewClient], and
// [WebSocketDialer] and [WebSocketSession] on gorilla/websocket.
//
// It replays the lesson of a load-balancer outage in which about 8% of
// connections were accepted and then went silent: one SDK without a
// connect timeout hung for hours while the others' retries hid the fault.
// A Transport bounds every phase (DNS, connect and TLS through the Dialer,
// which races addresses and a lone address against itself; the response
// headers with FirstByteTimeout; every body read and upload with
// StallTimeout), retries
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
//
// # WebSockets
//
// [WebSocketDialer] dials gorilla/websocket connections that cannot hang
// and that notice dead peers. The handshake runs on a
// [github.com/lifeline-go/lifeline/dial.Dialer]: the resolved addresses are
// raced through TCP and, for wss, through TLS (an address that accepts and
// stalls is overtaken after AttemptDelay), the certificate is verified for
// the URL's host and only ALPN "http/1.1" is offered. HandshakeTimeout
// (10s) bounds each attempt from DNS to the 101, and the caller's cancel
// stops it at once. Proxies come from the environment and are tunnelled
// with CONNECT for ws and wss alike, the TLS to the server made over the
// tunnel. Failed attempts are retried through Retry; an answer that
// refuses the upgrade (3xx, 4xx such as 401, 403, 404) is final and
// returned with its response in a *HandshakeError.
//
// Every conn pings its peer every PingInterval (15s) with WriteControl and
// a deadline, and is closed when nothing arrives within PongTimeout (10s)
// of a ping; its next read fails with a *PongTimeoutError, which matches
// ErrPongTimeout and context.DeadlineExceeded. A peer that vanishes
// without FIN or RST is caught within PingInterval + PongTimeout. The
// answers are seen whether or not the application reads: the conn reads
// ahead of gorilla into a bounded buffer, and a full buffer (the
// application behind, not the peer) is not held against the peer.
//
// [WebSocketSession] keeps one logical connection up across failures. One
// goroutine owns (re)connecting: on a loss it redials with the Dialer's
// Retry backoff, jittered, reset once a connection lasted StableAfter, so
// a flapping server is not hammered and a recovered one is rejoined
// quickly. OnConnect resubscribes or resumes before writes are let through,
// OnDisconnect receives the cause, OnStateChange and State report
// connecting, connected, disconnected and closed, and OnMessage receives
// messages in order. WriteMessage serialises writers, bounds each by
// WriteTimeout and fails at once with ErrDisconnected while there is no
// connection: nothing is queued. Close stops everything the session
// started and returns when it has.
//
// Telemetry: a websocket.handshake span per attempt, a websocket.conn span
// per connection (event websocket.ping_timeout), a websocket.reconnect span
// per outage; metrics lifeline.websocket.handshake.duration,
// lifeline.websocket.ping_timeouts, lifeline.websocket.reconnects and
// lifeline.websocket.disconnected.duration.
package transport
