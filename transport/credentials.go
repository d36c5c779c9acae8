package transport

import (
	"context"
	"net/http"
)

// Credentials authenticate the requests of a [Transport] and the
// handshakes of a [WebSocketDialer], and renew themselves when the server
// rejects them (OkHttp's Authenticator, grpc-go's per-RPC credentials).
//
// Apply is called on every try's own copy of the request, just before it
// is sent: every attempt, every hedge, every redial of a session. It sets
// the credential (an Authorization header, a signature) and must not keep
// req. An error from Apply ends the call with that error; it is not
// retried.
//
// Refresh is called when the server answered 401 Unauthorized (and, for a
// websocket upgrade, 403 Forbidden) to a try that carried rejected's
// credentials, before the request is sent once more. It should renew the
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
