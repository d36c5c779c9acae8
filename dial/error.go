package dial

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Phase is the step of establishing a connection at which a dial failed (or,
// for a successful attempt, the furthest step it completed). Phases are
// ordered: a larger Phase got further.
type Phase uint8

// The phases of a dial, in order.
const (
	// PhaseDNS covers parsing the address and resolving the host.
	PhaseDNS Phase = iota
	// PhaseConnect is the TCP connect to one resolved address.
	PhaseConnect
	// PhaseTLS is the TLS handshake (DialTLSContext only).
	PhaseTLS
	// PhaseFirstByte is the wait for the first byte of the reply after the
	// first write on a returned conn (only with FirstByteTimeout > 0).
	PhaseFirstByte
)

// String returns "dns", "connect", "tls" or "first_byte".
func (p Phase) String() string {
	switch p {
	case PhaseDNS:
		return "dns"
	case PhaseConnect:
		return "connect"
	case PhaseTLS:
		return "tls"
	case PhaseFirstByte:
		return "first_byte"
	}
	return "phase(" + strconv.Itoa(int(p)) + ")"
}

// ErrNoAddresses is the cause (inside an *Error with PhaseDNS) when the
// resolver returned no usable address for the host and network.
var ErrNoAddresses = errors.New("dial: no addresses")

// Causes of the phase limits, set with context.WithDeadlineCause so that a
// phase limit, the whole-dial limit, the caller's deadline and a lost race
// are told apart. The first four match context.DeadlineExceeded through
// timeoutError.
var (
	errResolveTimeout   = errors.New("dial: ResolveTimeout exceeded")
	errConnectTimeout   = errors.New("dial: ConnectTimeout exceeded")
	errTLSTimeout       = errors.New("dial: TLSHandshakeTimeout exceeded")
	errDialTimeout      = errors.New("dial: Timeout exceeded")
	errFirstByteTimeout = errors.New("dial: FirstByteTimeout exceeded")
	// errLostRace is the Err of an attempt that the racer stopped because
	// another address won (see fail). It never reaches a caller.
	errLostRace = errors.New("dial: another address won the race")
)

// timeoutError is the Err of an *Error when one of the Dialer's own limits
// expired. It reads "i/o timeout" like net's, is a net.Error with Timeout()
// true, matches context.DeadlineExceeded, and unwraps to the limit that
// expired (errConnectTimeout, ...).
type timeoutError struct{ cause error }

func (e *timeoutError) Error() string        { return "i/o timeout" }
func (e *timeoutError) Timeout() bool        { return true }
func (e *timeoutError) Temporary() bool      { return true }
func (e *timeoutError) Unwrap() error        { return e.cause }
func (e *timeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// Error is the error of every failed dial and of a first-byte timeout on a
// returned conn. It reads like *net.OpError:
//
//	dial tcp api.example.com:443 (203.0.113.7:443): tls: i/o timeout
//
// Phase says where it broke, Addr is the address as passed to the dial and
// Peer the IP and port of the attempt (zero for PhaseDNS). Timeouts match
// errors.Is(err, context.DeadlineExceeded) and net.Error's Timeout(); a
// caller's cancel matches context.Canceled.
//
// When several attempts were raced and all failed, the top-level Error
// carries the Phase and Peer of the attempt that got furthest and its Err
// holds every attempt's *Error: errors.Is and errors.As reach each of them
// (so errors.Is(err, syscall.ECONNREFUSED) holds when any attempt was
// refused), and [Error.Attempts] lists them.
//
// One rule answers "was it a timeout": Timeout() is true exactly when
// errors.Is(err, context.DeadlineExceeded) is — for an aggregate, when any
// attempt timed out or the dial as a whole ran out of time (its Timeout or
// the caller's deadline). Retryable is true when any attempt's is;
// ErrorType is that of the attempt that got furthest.
//
// An Error is a value: it is not modified after it is returned and may be
// shared between goroutines.
type Error struct {
	// Phase is where the dial (or, for the aggregate, the attempt that got
	// furthest) broke.
	Phase Phase
	// Network is the network passed to the dial: "tcp", "tcp4" or "tcp6".
	Network string
	// Addr is the address passed to the dial, e.g. "api.example.com:443".
	Addr string
	// Peer is the IP and port of the attempt; zero for PhaseDNS.
	Peer netip.AddrPort
	// Err is the cause: a syscall error (ECONNREFUSED, ...), a TLS or DNS
	// error, an "i/o timeout" when one of the Dialer's limits expired,
	// the caller's context error, or every attempt's error when all failed.
	Err error

	// health is the Dialer's scoreboard, which bounds the peer label of
	// MetricLabels; nil for an Error made outside a dial.
	health *Health
}

// MetricLabels returns the phase and the peer as lifeline's metrics label
// them (the masked-failure counts of retry and transport read them from
// the error): the peer's IP only when the Dialer's Health (its own when
// the field is nil) remembers it, "other" when it does not (or the Error
// was not made by a dial), and "" when the
// error has no peer. So a label's cardinality is bounded by Health's
// MaxPeers, whatever the resolver returns.
func (e *Error) MetricLabels() (phase, peer string) {
	if e == nil {
		return "", ""
	}
	return e.Phase.String(), peerLabel(e.health, e.Peer)
}

// Error formats the error like *net.OpError:
// "dial tcp host:port (ip:port): phase: cause".
func (e *Error) Error() string {
	if e == nil {
		return "<nil>"
	}
	var b strings.Builder
	b.WriteString("dial ")
	b.WriteString(e.Network)
	b.WriteByte(' ')
	b.WriteString(e.Addr)
	if e.Peer.IsValid() && e.Peer.String() != e.Addr {
		b.WriteString(" (")
		b.WriteString(e.Peer.String())
		b.WriteByte(')')
	}
	b.WriteString(": ")
	b.WriteString(e.Phase.String())
	b.WriteString(": ")
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString("unknown error")
	}
	return b.String()
}

// Unwrap returns Err.
func (e *Error) Unwrap() error {
	if e == nil {
		return nil
	}
	return e.Err
}

// Timeout reports whether a time limit ended the dial or, for an
// aggregate, any of its attempts: one of the Dialer's phase limits, its
// Timeout, or the caller's deadline. It agrees with
// errors.Is(e, context.DeadlineExceeded).
func (e *Error) Timeout() bool {
	if e == nil || e.Err == nil {
		return false
	}
	if ae, ok := e.Err.(*attemptsError); ok {
		return ae.Timeout()
	}
	if errors.Is(e.Err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(e.Err, &ne) && ne.Timeout()
}

// Temporary reports whether trying again may succeed; it equals
// [Error.Retryable]. (net.Error's Temporary is deprecated; it is here so that
// code written against net.Error keeps working.)
func (e *Error) Temporary() bool { return e.Retryable() }

// Is reports whether target is context.DeadlineExceeded and e is a timeout,
// so that every timeout matches it even when Err is a net error that does
// not.
func (e *Error) Is(target error) bool {
	return target == context.DeadlineExceeded && e.Timeout()
}

// Attempts returns the error of every raced address when all of them failed,
// in the order they were tried, or nil when e is the error of a single
// attempt (or of the DNS phase).
func (e *Error) Attempts() []*Error {
	var ae *attemptsError
	if e == nil || !errors.As(e.Err, &ae) {
		return nil
	}
	out := make([]*Error, len(ae.attempts))
	copy(out, ae.attempts)
	return out
}

// ErrorType returns a short, low-cardinality class of the error for the
// error.type attribute and for dashboards: "dns_timeout", "dns_not_found",
// "dns_no_addresses", "dns", "connect_timeout", "connect_refused",
// "connect_reset", "connect_unreachable", "connect", "tls_timeout",
// "tls_certificate", "tls_reset", "tls", "first_byte_timeout", "first_byte", "canceled",
// or "timeout" when the caller's deadline or the Dialer's Timeout expired.
func (e *Error) ErrorType() string {
	if e == nil {
		return ""
	}
	err := e.Err
	if ae, ok := err.(*attemptsError); ok {
		// The class of the attempt that got furthest (or of the cancel).
		err = ae.cause
	}
	var te *timeoutError
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &te):
		if te.cause == errDialTimeout {
			return "timeout"
		}
		return e.Phase.String() + "_timeout"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	switch e.Phase {
	case PhaseDNS:
		var dnsErr *net.DNSError
		switch {
		case errors.Is(err, ErrNoAddresses):
			return "dns_no_addresses"
		case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
			return "dns_not_found"
		case errors.As(err, &dnsErr) && dnsErr.IsTimeout:
			return "dns_timeout"
		}
		return "dns"
	case PhaseConnect:
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return "connect_refused"
		case errors.Is(err, syscall.ECONNRESET):
			return "connect_reset"
		case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
			return "connect_unreachable"
		case e.Timeout():
			return "connect_timeout"
		}
		return "connect"
	case PhaseTLS:
		switch {
		case isCertError(err):
			return "tls_certificate"
		case errors.Is(err, syscall.ECONNRESET):
			return "tls_reset"
		case e.Timeout():
			return "tls_timeout"
		}
		return "tls"
	case PhaseFirstByte:
		if e.Timeout() {
			return "first_byte_timeout"
		}
		return "first_byte"
	}
	return e.Phase.String()
}

// Retryable reports whether the same dial may succeed if tried again: true
// for refused, reset and unreachable connects, timeouts and stalls of any
// phase and TLS handshakes cut short by the network; false for a host that
// does not exist or has no addresses, a bad address or network, certificate
// and other TLS protocol failures, and the caller's cancel. A context's
// deadline is retryable: the Dialer cannot tell the caller's last deadline
// from a per-attempt one set inside a retried operation, and a retry loop
// stops by itself once its own context has ended.
func (e *Error) Retryable() bool {
	if e == nil {
		return false
	}
	err := e.Err
	if ae, ok := err.(*attemptsError); ok {
		if errors.Is(ae.cause, context.Canceled) {
			return false // the caller cancelled
		}
		// Worth retrying when any address failed in a way that can heal.
		for _, a := range ae.attempts {
			if a.Retryable() {
				return true
			}
		}
		return false
	}
	switch {
	case errors.Is(err, context.Canceled):
		return false
	case errors.Is(err, context.DeadlineExceeded):
		// One of our limits, or a context's deadline. The Dialer cannot
		// tell the caller's outermost deadline from one set per attempt
		// inside a retried operation (which a later attempt, with time of
		// its own, may beat); retry.Do stops anyway once its own context
		// has ended.
		return true
	}
	switch e.Phase {
	case PhaseDNS:
		var dnsErr *net.DNSError
		if errors.Is(err, ErrNoAddresses) || errors.Is(err, errBadInput) {
			return false
		}
		if errors.As(err, &dnsErr) {
			return !dnsErr.IsNotFound && (dnsErr.IsTimeout || dnsErr.IsTemporary)
		}
		return true
	case PhaseTLS:
		if isCertError(err) {
			return false
		}
		var alert tls.AlertError
		var rhe tls.RecordHeaderError
		if errors.As(err, &alert) || errors.As(err, &rhe) {
			return false
		}
		return true
	}
	return true
}

// isCertError reports whether err is a certificate verification failure.
func isCertError(err error) bool {
	var (
		certErr *tls.CertificateVerificationError
		unkAuth x509.UnknownAuthorityError
		hostErr x509.HostnameError
		invErr  x509.CertificateInvalidError
	)
	return errors.As(err, &certErr) || errors.As(err, &unkAuth) ||
		errors.As(err, &hostErr) || errors.As(err, &invErr)
}

// errBadInput marks an address or network the Dialer cannot dial.
var errBadInput = errors.New("dial: bad input")

// inputError is a bad address or network; it matches errBadInput.
type inputError struct{ msg string }

func (e *inputError) Error() string        { return e.msg }
func (e *inputError) Is(target error) bool { return target == errBadInput }

// attemptsError is the Err of the top-level *Error when every raced address
// failed. Its message is the furthest attempt's, followed by a summary of
// the others; Unwrap reaches every attempt.
type attemptsError struct {
	primary  *Error   // the attempt that got furthest (or the caller's cancel)
	cause    error    // primary.Err, or the caller's context error
	attempts []*Error // every attempt that failed, in order
	unwrap   []error
}

func newAttemptsError(cause error, primary *Error, attempts []*Error) *attemptsError {
	ae := &attemptsError{primary: primary, cause: cause, attempts: attempts}
	ae.unwrap = make([]error, 0, len(attempts)+1)
	ae.unwrap = append(ae.unwrap, cause)
	for _, a := range attempts {
		ae.unwrap = append(ae.unwrap, a)
	}
	return ae
}

func (e *attemptsError) Error() string {
	var b strings.Builder
	b.WriteString(e.cause.Error())
	others := 0
	for _, a := range e.attempts {
		if a != e.primary {
			others++
		}
	}
	if others == 0 {
		return b.String()
	}
	b.WriteString(" (and ")
	b.WriteString(strconv.Itoa(others))
	if others == 1 {
		b.WriteString(" more attempt: ")
	} else {
		b.WriteString(" more attempts: ")
	}
	listed := 0
	for _, a := range e.attempts {
		if a == e.primary {
			continue
		}
		if listed > 0 {
			b.WriteString("; ")
		}
		if listed == maxListedAttempts {
			b.WriteString("...")
			break
		}
		listed++
		b.WriteString(a.Peer.String())
		b.WriteByte(' ')
		b.WriteString(a.Phase.String())
		b.WriteString(": ")
		b.WriteString(a.Err.Error())
	}
	b.WriteByte(')')
	return b.String()
}

// maxListedAttempts is how many of the other attempts an aggregate error's
// text names: a dial of a huge DNS answer may fail thousands, and the text
// goes to logs (Unwrap still reaches every one).
const maxListedAttempts = 8

func (e *attemptsError) Unwrap() []error { return e.unwrap }

// Timeout reports whether the dial as a whole or any attempt timed out,
// as errors.Is does through Unwrap.
func (e *attemptsError) Timeout() bool {
	if isTimeout(e.cause) || errors.Is(e.cause, context.DeadlineExceeded) {
		return true
	}
	for _, a := range e.attempts {
		if a.Timeout() {
			return true
		}
	}
	return false
}

// Temporary mirrors Timeout; net.Error requires it.
func (e *attemptsError) Temporary() bool { return e.Timeout() }

// innerError strips net's wrapping of a connect error so that the message
// reads "connect: connection refused" rather than repeating the address and
// the syscall name. The cause stays reachable with errors.Is/As.
func innerError(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		err = oe.Err
	}
	var se *os.SyscallError
	if errors.As(err, &se) && se.Syscall == "connect" {
		return se.Err
	}
	return err
}

// fail builds the *Error of a phase that failed with err under ctx: when
// ctx is done, the cause of ctx decides (a limit of ours, the caller's
// cancel or deadline, or a lost race: ctx canceled while the dial's own
// context is not, which only the racer's stop does); otherwise err itself,
// stripped of net's wrapping.
func (s *dialState) fail(ctx context.Context, phase Phase, peer netip.AddrPort, err error) *Error {
	e := &Error{Phase: phase, Network: s.network, Addr: s.addr, Peer: peer, health: s.health}
	if ctx.Err() == nil && isTimeout(err) {
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			// net puts the context's deadline on the socket too, so its
			// i/o timeout can beat the context's own timer by a hair.
			// The deadline has passed: Done is about to close; wait for
			// it so that the cause decides, not the order of two timers.
			<-ctx.Done()
		}
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		switch cause := context.Cause(ctx); cause {
		case errResolveTimeout, errConnectTimeout, errTLSTimeout, errDialTimeout:
			e.Err = &timeoutError{cause: cause}
		case ctxErr, nil:
			e.Err = ctxErr
			if ctxErr == context.Canceled && s.ctx != nil && s.ctx.Err() == nil {
				e.Err = errLostRace
			}
		default:
			// The caller's own cause (WithCancelCause, WithTimeoutCause):
			// keep both, so errors.Is matches the context error and the
			// cause.
			e.Err = &causeError{ctxErr: ctxErr, cause: cause}
		}
		return e
	}
	e.Err = innerError(err)
	return e
}

// causeError is the caller's context error with the cause they gave it.
type causeError struct{ ctxErr, cause error }

func (e *causeError) Error() string   { return e.ctxErr.Error() + ": " + e.cause.Error() }
func (e *causeError) Unwrap() []error { return []error{e.ctxErr, e.cause} }
