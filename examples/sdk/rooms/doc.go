// Package rooms is the client SDK of the "rooms" service: a JSON API with
// bearer tokens and idempotent creates, and a signalling websocket. It is
// the template of an SDK built on lifeline: lifeline bounds every phase of
// every call, retries what is safe (Retry-After honoured within the
// caller's deadline), refreshes the token on a 401, keeps the websocket up
// and resubscribes it, and counts what it survived; this package only
// speaks the service's protocol. See examples/sdk/README.md.
package rooms
