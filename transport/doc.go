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
// # When the upstream is down or drowning
//
// A Transport keeps, per upstream (scheme and host:port of the request
// URL; up to 256, and fewer than 32 met since the table was last
// settled, the least recently used healthy ones forgotten beyond),
// what it learnt of it, so that callers learn an outage in milliseconds
// instead of each waiting its own dial limits, and a drowning upstream gets
// room to recover. Its state machine:
//
//   - Ready: calls go. It turns Down after 5 consecutive establishment
//     failures with no success between (a failed dial, or the Transport's
//     FirstByteTimeout on a try, unless an answer of the upstream since
//     its request was written excuses it: one answer, one failure, in any
//     order and in any state, the answers while a pause is in force
//     included. A server that answers others while some requests hang is
//     reachable; one that answers a trickle while the rest hang is not. A
//     new conn that establishes forgives no first-byte failure, only an
//     answer does, and after a probe's conn re-opened the upstream one
//     such failure with no answer yet takes it down again. A caller's
//     cancel is no failure), or when 3 dials are pending longer than
//     max(1s, 4× the upstream's average establishment time; 3s before its
//     first establishment) with no success since the oldest began: a black
//     hole is seen within about 1–2s, long before any connect limit ends.
//   - Down: a call fails at once with an [*UnavailableError] (Reason
//     "down"; Last the last real failure, a *dial.Error with its phase
//     and peer, so errors.As still finds it), unless it is the probe: the
//     first call at or after the next probe time goes through, paid from
//     the retry Budget (when it refuses, one goes unpaid once none went
//     for 30s: a drained budget delays the recovery, never forbids it).
//     Probes go about every second (±20%) for the first 30s of an outage,
//     so a recovery is seen within about 1.2s, then 1.6× further apart up
//     to 30s. The first success (a dial that established, any response
//     headers, even a 5xx) re-opens the upstream for everyone. A call
//     made with [WaitForReady] (or CallOptions.WaitForReady) waits
//     instead, within its context, and may become the next probe. A retry
//     passes the gate too: one that finds the upstream down ends the call
//     with a *retry.ExhaustedError (Cause the *UnavailableError, Last the
//     attempt's own failure).
//   - Paused: a 503 with Retry-After (it speaks for the server) pauses
//     the upstream's new calls until the advised time; a 429 (with or
//     without Retry-After) pauses only the calls of its scope — the
//     request's URL path as sent (no query; escaped: /a%2Fb is not /a/b)
//     and the Authorization the try sends (with Credentials, the one they
//     apply; with Credentials that sign each request anew, any: a field
//     sent once names no one's quota), kept as hashes, never the values —
//     since rate limits are per path and per token as often as per host:
//     a call to another path, or with another token, goes at once. The
//     upstream pauses as a whole when 429s have paused scopes of 3
//     distinct paths at once (a host-wide limit, answered on every path;
//     tenants over their quotas on one path are not one), when a 429
//     answers the probe of its
//     pause, and when its table of scopes (64, the least recently used
//     whose pause is over forgotten) has no room. A scope's pause is the
//     host's in all else: the scope's calls wait or get the held answer,
//     one probe goes at its end. An answer to a call admitted before a
//     pause (in flight when it came) does not end it; only its probe, or
//     an answer after the advised time, does. A probe never hedges. A
//     call passes its scope's gate before the host's, so one waiting out
//     its scope's pause never holds the host's probe. The pauses last until the advised time (capped by the
//     Transport's Retry policy's MaxRetryAfter, not that of the call's
//     CallOptions, which caps its own retries only; a 429 without the
//     field pauses 1s, doubling while its scope's 429s continue). A call whose
//     deadline ends before then gets the server's answer at once: its
//     status, Retry-After the time left (no other header field: they were
//     another caller's), an empty body, and [Exhausted] returns a
//     *retry.ExhaustedError of 0 attempts (the Transport's final word: a
//     retry.Do around it does not retry). Other calls wait for the end;
//     then one probe goes, the rest wait for its outcome (another goes
//     when it has none after 1s: a long poll does not hold them): a
//     success releases them, another 429 pauses again; a call that has
//     seen the pause renewed twice gets the held answer then (a call
//     without a deadline is answered in about the time its own retries
//     would take, not at the end of a storm).
//
// Independently, client-side adaptive throttling (Google SRE, "Handling
// Overload") sheds load: over the last 5s it counts requests and accepts
// (answers that are not 429, 502, 503, 504, a first-byte timeout or a
// reset), and rejects a new call with probability max(0, (requests −
// 2·accepts) / (requests + 8)) with an *UnavailableError of Reason "shed"
// (errors.Is [ErrThrottled]). An upstream that serves C calls a second,
// offered more than 2C, sees about 2C; the shedding ends within the 5s
// window after it recovers. While it sheds, retries are refused (the call
// ends with a *retry.ExhaustedError whose Cause is the shed error, as a
// refused budget's) and no hedge starts. (An answer that pauses the
// upstream is the pause's business, not the throttle's.)
//
// DisableFailFast turns the states off, DisableLoadShedding the
// throttle; the zero Transport has both on. Telemetry: lifeline.throttled
// (by lifeline.reason unavailable, shed or retry_after, and server.address,
// the host for the first 32 upstreams, "other" beyond), the gauge
// lifeline.upstream.down (1 while down or paused as a whole; a scope's
// pause shows in lifeline.throttled, reason retry_after or unavailable,
// with no path or token in any label), lifeline.upstream.probes
// (by lifeline.outcome ok or failed), one client span per call not
// attempted with error.type and lifeline.not_attempted, and a log line per
// change of state (rate-limited with the others), never one per call.
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
