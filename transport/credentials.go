package transport

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lifeline-go/lifeline/retry"
)

// Credentials authenticate the requests of a [Transport] and the
// handshakes of a [WebSocketDialer], and renew themselves when the server
// rejects them (OkHttp's Authenticator, grpc-go's per-RPC credentials).
//
// Apply is called on every try's own copy of the request, just before it
// is sent: every attempt, every hedge, every redial of a session (and,
// while a 429 has paused part of the upstream, once more on a copy before
// the call is admitted, and on a 429, to learn the call's scope). It sets
// the credential (an Authorization header, a signature, a key in the
// URL's query) and must not keep req. The copy's Header and URL are the
// try's own (the caller's request is never changed); its Body and the
// rest are shared and must not be changed. An error from Apply ends the call with that error; it is not
// retried; nor is a header Apply left unsendable (a control byte in a
// value): it fails the call with an error matching ErrBadRequest. A
// Transport does not call Apply for a redirect an http.Client
// follows to another origin (see Transport.Credentials).
//
// Refresh is called when the server answered 401 Unauthorized (and, for a
// websocket upgrade, 403 Forbidden) to a try that carried rejected's
// credentials, before the request is sent once more (a Transport's
// request only when its body can be replayed; else the 401 is returned
// after the Refresh, for the next call's sake). It should renew the
// credential unless it has changed since rejected was sent (another call
// refreshed it first), so that many calls rejected at once renew it once.
//
// Both are called concurrently from many goroutines; ctx and
// req.Context() carry the call's deadline, which a token fetch must honour.
// No credential value ever reaches a span, a metric, an error text or a log
// of lifeline's.
type Credentials interface {
	Apply(req *http.Request) error
	Refresh(ctx context.Context, rejected *http.Request) error
}

// BearerCredentials are [Credentials] that send an OAuth 2.0 bearer token
// (RFC 6750): Apply sets "Authorization: Bearer <token>". The token comes
// from the fetch function given to [NewBearerCredentials] and is cached:
// it is fetched on first use, again when it is near its expiry (within
// ExpiryMargin of it, and never before half its lifetime has passed), and
// when Refresh is told the current token was rejected (a rejection of an
// older token, which another call already replaced, fetches nothing).
//
// One fetch runs at a time: concurrent callers that need a token wait for
// the same fetch, each for as long as its own context allows, and the
// fetch's context is cancelled once no caller waits for it any more
// (unless FetchTimeout lets it run on). A fetch must honour its context;
// no other fetch starts before it has returned, and a token it returns
// late is cached. A failed fetch is not retried by BearerCredentials: the
// call that needed it fails with an error that wraps the fetch's error
// (the next call fetches again); while a token that is near its expiry
// but not past it is cached, a failed fetch leaves it in use.
//
// The token never appears in an error text of lifeline's; the fetch
// function's own errors are passed through with the cached and the
// rejected token redacted. A BearerCredentials is safe for concurrent
// use; set ExpiryMargin and FetchTimeout before first use.
type BearerCredentials struct {
	// ExpiryMargin is how long before its expiry a token is renewed. Zero
	// means 30s; negative means at expiry. A token with no expiry (a zero
	// time), or one whose expiry has already passed when it arrives (a
	// skewed clock), is renewed only on Refresh.
	ExpiryMargin time.Duration
	// FetchTimeout, when positive, lets a fetch outlive the callers that
	// waited for it, up to this long from its start: the callers that
	// come next join it, and the token it brings is cached. Use it when
	// the identity provider may be slower than your calls' deadlines;
	// else each call would start a fetch that its own deadline cancels,
	// and none would get a token. Zero means the fetch's context ends
	// when its last waiter leaves.
	FetchTimeout time.Duration

	fetch func(ctx context.Context) (string, time.Time, error)

	mu       sync.Mutex // guards the fields below
	token    string     // "" : none yet
	renewAt  time.Time  // zero: only on Refresh
	expiry   time.Time  // zero: none
	inflight *tokenFetch
}

// DefaultExpiryMargin is BearerCredentials' ExpiryMargin when it is zero.
const DefaultExpiryMargin = 30 * time.Second

// tokenFetch is one fetch of a token, shared by the callers that wait for
// it; waiters and cancel are guarded by the BearerCredentials' mu.
type tokenFetch struct {
	done    chan struct{} // closed when the fields below are set
	token   string
	expiry  time.Time
	err     error
	waiters int
	cancel  context.CancelFunc
	// abandoned: every waiter left and cancel was called; it is still
	// b.inflight until it returns.
	abandoned bool
}

// NewBearerCredentials returns BearerCredentials whose tokens come from
// fetch, which returns a token, its expiry (zero: none known) and an error.
// fetch is called from a goroutine of its own with a context that ends
// when no caller waits for the token any more. The token is used with
// surrounding whitespace removed (a trailing newline of a token file); an
// empty token, or one with a control byte inside, is a failed fetch. A
// panic in fetch is recovered and fails the callers waiting for that
// fetch with an error (the process is not ended from a goroutine no
// caller could recover in).
func NewBearerCredentials(fetch func(ctx context.Context) (token string, expiry time.Time, err error)) *BearerCredentials {
	return &BearerCredentials{fetch: fetch}
}

// bearerPrefix is the scheme of the Authorization field Apply sets.
const bearerPrefix = "Bearer "

// Apply sets req's Authorization field to the current token, fetching one
// first when there is none or it is near its expiry; the wait is bounded
// by req's context.
func (b *BearerCredentials) Apply(req *http.Request) error {
	tok, err := b.current(req.Context(), "")
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", bearerPrefix+tok)
	return nil
}

// Refresh fetches a new token if rejected carried the current one (or
// none is cached), bounded by ctx; if another call replaced it meanwhile,
// it returns nil at once.
func (b *BearerCredentials) Refresh(ctx context.Context, rejected *http.Request) error {
	sent := ""
	if rejected != nil {
		sent = strings.TrimPrefix(rejected.Header.Get("Authorization"), bearerPrefix)
	}
	if sent == "" {
		// Nothing to compare with: renew whatever is cached.
		sent = "\x00"
	}
	_, err := b.current(ctx, sent)
	return err
}

// current returns a token that is fresh enough. With rejected set, a
// cached token equal to it (or "\x00": any) is not: a new one is fetched.
func (b *BearerCredentials) current(ctx context.Context, rejected string) (string, error) {
	if b == nil || b.fetch == nil {
		return "", errors.New("transport: BearerCredentials without a fetch function (use NewBearerCredentials)")
	}
	var f *tokenFetch
	for {
		b.mu.Lock()
		now := time.Now()
		stale := b.token == "" || (!b.renewAt.IsZero() && !now.Before(b.renewAt))
		if rejected != "" && (rejected == "\x00" || rejected == b.token) {
			stale = true
		}
		if !stale {
			tok := b.token
			b.mu.Unlock()
			return tok, nil
		}
		f = b.inflight
		if f == nil || !f.abandoned {
			break
		}
		// A fetch nobody waited for is being cancelled: one fetch at a
		// time, so wait for it to end (a fetch that ignores its context
		// may still bring a token), then look again.
		b.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return "", credentialsErr("waiting for a token", context.Cause(ctx))
		}
	}
	if f == nil {
		// The fetch is the callers', not the first caller's: its own
		// context, ended when nobody waits (or after FetchTimeout).
		var fctx context.Context
		var cancel context.CancelFunc
		if b.FetchTimeout > 0 {
			fctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), b.FetchTimeout)
		} else {
			fctx, cancel = context.WithCancel(context.WithoutCancel(ctx))
		}
		f = &tokenFetch{done: make(chan struct{}), cancel: cancel}
		b.inflight = f
		go b.run(fctx, f)
	}
	f.waiters++
	b.mu.Unlock()

	select {
	case <-f.done:
	case <-ctx.Done():
		b.mu.Lock()
		f.waiters--
		if f.waiters == 0 && b.FetchTimeout <= 0 {
			// Nobody waits for it: end it. It stays the fetch in flight
			// until it returns, so that a fetch that ignores its context
			// is never joined by a second one.
			f.cancel()
			f.abandoned = true
		}
		b.mu.Unlock()
		return "", credentialsErr("waiting for a token", context.Cause(ctx))
	}
	if f.err != nil {
		// A token near its expiry but not past it still serves.
		b.mu.Lock()
		tok, exp := b.token, b.expiry
		b.mu.Unlock()
		if tok != "" && rejected == "" && (exp.IsZero() || time.Now().Before(exp)) {
			return tok, nil
		}
		// The fetch's error may quote the token it was to replace (an
		// identity provider refusing to renew it): neither the cached
		// token nor the rejected one is said.
		var secrets []string
		for _, s := range []string{tok, rejected} {
			if s != "" && s != "\x00" {
				secrets = append(secrets, s)
			}
		}
		return "", redactedCredentialsErr("fetching a token", f.err, secrets)
	}
	return f.token, nil
}

// run fetches a token for f and caches it.
func (b *BearerCredentials) run(ctx context.Context, f *tokenFetch) {
	tok, exp, err := b.fetchOnce(ctx)
	f.cancel()
	// A token read from a file or a variable often ends in a newline:
	// b64token (RFC 6750 §2.1) has no whitespace to lose.
	tok = strings.TrimSpace(tok)
	switch {
	case err != nil:
	case tok == "":
		err = errors.New("fetch returned an empty token")
	case !validFieldValue(tok):
		// net/http would refuse every request carrying it; cached, it
		// would fail every call without a 401 to renew it.
		err = errors.New("fetch returned a token that is not a valid header field value")
	}
	b.mu.Lock()
	if err == nil {
		now := time.Now()
		if !exp.After(now) {
			// Expired on arrival: a clock skew between the identity
			// provider and this host, not a token to fetch again on
			// every call. It serves until the server rejects it.
			exp = time.Time{}
		}
		b.token, b.expiry, b.renewAt = tok, exp, time.Time{}
		if !exp.IsZero() {
			margin := b.ExpiryMargin
			switch {
			case margin == 0:
				margin = DefaultExpiryMargin
			case margin < 0:
				margin = 0
			}
			// Never renew before half the token's life: a token shorter
			// lived than the margin would otherwise be fetched on every
			// call.
			margin = min(margin, max(exp.Sub(now), 0)/2)
			b.renewAt = exp.Add(-margin)
		}
	}
	if b.inflight == f {
		b.inflight = nil
	}
	f.token, f.expiry, f.err = tok, exp, err
	b.mu.Unlock()
	close(f.done)
}

// fetchOnce calls the fetch function. A panic in it becomes its error:
// it runs in run's goroutine, where no caller could recover it, and a bug
// in token code must fail the calls that need a token, not the process.
func (b *BearerCredentials) fetchOnce(ctx context.Context) (tok string, exp time.Time, err error) {
	defer func() {
		if r := recover(); r != nil {
			tok, exp, err = "", time.Time{}, fmt.Errorf("fetch panicked: %v", r)
		}
	}()
	return b.fetch(ctx)
}

// credentialsError is the failure of a Credentials step; its text names
// the step. It is final: neither the Transport nor a WebSocketDialer
// retries it (a session counts it as a failed dial).
//
// Its text is the cause's with every credential of the request the step
// saw (see credentialSecrets) replaced by "[redacted]": token code that
// echoes the token in its error ("token Bearer X expired") must not put
// it in lifeline's error texts, spans and logs. Unwrap returns the cause
// as it is.
type credentialsError struct {
	op      string
	err     error
	secrets []string // longest first
}

func (e *credentialsError) Error() string {
	if e.op == "" {
		// Over a credentialsError of a step that said its name: only
		// more redacted.
		return redact(e.err.Error(), e.secrets)
	}
	return "transport: credentials: " + e.op + ": " + redact(e.err.Error(), e.secrets)
}

func (e *credentialsError) Unwrap() error { return e.err }

// Retryable reports false: a credential does not heal by retrying.
func (e *credentialsError) Retryable() bool { return false }

// ErrorType is the error.type lifeline reports for it.
func (e *credentialsError) ErrorType() string { return "credentials" }

// credentialsErr wraps an error of a Credentials' step (Apply, Refresh,
// a token fetch) so that its text says where it came from, once, and
// quotes none of the credentials in hs.
func credentialsErr(op string, err error, hs ...http.Header) error {
	return redactedCredentialsErr(op, err, credentialSecrets(hs...))
}

// redactedCredentialsErr is credentialsErr with the secrets given. An
// error that already is a credentialsError (BearerCredentials' own, under
// a Refresh) keeps its text's one prefix and gets the secrets redacted
// too: the inner step did not know the request's.
func redactedCredentialsErr(op string, err error, secrets []string) error {
	var ce *credentialsError
	if errors.As(err, &ce) {
		if len(secrets) == 0 {
			return err
		}
		op = ""
	}
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	return &credentialsError{op: op, err: err, secrets: secrets}
}

// redact returns msg with each of secrets (longest first) replaced by
// "[redacted]".
func redact(msg string, secrets []string) string {
	for _, s := range secrets {
		msg = strings.ReplaceAll(msg, s, "[redacted]")
	}
	return msg
}

// credentialSecrets returns the credentials in the headers hs, longest
// first: each value of Authorization, Proxy-Authorization and Cookie, and
// the parts of one that an error may quote alone: the credential after
// its auth scheme ("Bearer X": X) and each cookie's value, when at least
// 8 bytes long (a cookie "consent=true" must not redact every "true").
func credentialSecrets(hs ...http.Header) []string {
	var out []string
	add := func(v string, min int) {
		if v = strings.TrimSpace(v); len(v) >= min {
			out = append(out, v)
		}
	}
	for _, h := range hs {
		for _, k := range []string{"Authorization", "Proxy-Authorization"} {
			for _, v := range h.Values(k) {
				add(v, 1)
				if _, cred, ok := strings.Cut(strings.TrimSpace(v), " "); ok {
					add(cred, 8)
				}
			}
		}
		for _, v := range h.Values("Cookie") {
			add(v, 1)
			cs, _ := http.ParseCookie(v)
			for _, c := range cs {
				add(c.Value, 8)
			}
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// reauth answers resp, a 401 to try tr: it refreshes the credentials once
// for the call, then sends a replayable request once more (a new attempt
// of the call's, not of the retry policy's) and returns its outcome; a
// non-replayable request's 401 is returned as it is.
func (c *call) reauth(ctx context.Context, resp *http.Response, tr *try) (*http.Response, *try, error) {
	creds := c.lim.creds
	if !c.replayable {
		// The body is gone: the answer is the caller's. Refresh anyway,
		// so that the caller's next call carries a fresh credential.
		if err := creds.Refresh(ctx, tr.req); err != nil {
			c.st.auth.refreshed(ctx, authError)
		} else {
			c.st.auth.refreshed(ctx, authNotResent)
		}
		return resp, tr, nil
	}
	discard(resp)
	if err := creds.Refresh(ctx, tr.req); err != nil {
		c.st.auth.refreshed(ctx, authError)
		return nil, tr, retry.Permanent(credentialsErr("refresh", err, tr.req.Header))
	}
	c.st.auth.refreshed(ctx, authResent)
	return c.attempt(ctx)
}

// leftOrigin reports whether req, a request an http.Client made to follow
// a redirect (req.Response is the redirect's answer, its Request the
// request before), or any request before it in the chain, is of another
// origin (scheme, host and port, RFC 6454) than the rest: a chain that
// ever left its first origin carries no credentials of the Transport's,
// not even back at the first origin, since the foreign hop chose where it
// leads. (net/http strips the caller's own Authorization on a redirect to
// another host; OkHttp drops it on one to another origin.)
func leftOrigin(req *http.Request) bool {
	for r := req.Response; r != nil && r.Request != nil; r = r.Request.Response {
		if r.Request.URL == nil || !sameOrigin(r.Request.URL, req.URL) {
			return true
		}
	}
	return false
}

// sameOrigin reports whether a and b have the same scheme, host and port
// (a missing port is the scheme's default: portOf).
func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Hostname(), b.Hostname()) &&
		portOf(a) == portOf(b)
}

// checkApplied rejects a header that Credentials.Apply left unsendable
// (a field name or value net/http refuses): refused on every try, it is
// the Credentials' fault, never worth a retry. The field's value is not
// named: it is the credential.
func checkApplied(h http.Header) error {
	for k, vs := range h {
		if !validToken(k) {
			return badRequest("invalid header field name " + strconv.Quote(k))
		}
		for _, v := range vs {
			if !validFieldValue(v) {
				return badRequest("invalid header field value for " + strconv.Quote(k))
			}
		}
	}
	return nil
}
