package dial

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// resolutionDelay is how long a dial whose IPv4 answer came first waits for
// the IPv6 one before it starts racing (RFC 8305 §3 recommends 50ms).
const resolutionDelay = 50 * time.Millisecond

// PortResolver is implemented by Resolvers that also look up service names
// ("https" → 443); *net.Resolver does. A Dialer whose Resolver lacks it
// asks net.DefaultResolver. Either way the lookup runs under ResolveTimeout
// and the dial's Timeout.
type PortResolver interface {
	LookupPort(ctx context.Context, network, service string) (int, error)
}

// lookupPort parses a numeric port or looks a service name up under the
// DNS phase's limits: with cgo or NSS a service lookup is not always local.
func (s *dialState) lookupPort(ctx context.Context, p string) (uint16, error) {
	n, err := strconv.ParseUint(p, 10, 16)
	switch {
	case err == nil:
		return uint16(n), nil
	case p == "":
		return 0, s.inputErr("missing port")
	case errors.Is(err, strconv.ErrRange):
		return 0, s.inputErr("invalid port %s", p)
	}
	pr, ok := s.d.Resolver.(PortResolver)
	if !ok {
		pr = net.DefaultResolver
	}
	pctx, cancel := s.phaseCtx(ctx, s.d.resolveTimeout(), errResolveTimeout)
	defer cancel()
	port, err := pr.LookupPort(pctx, s.network, p)
	if err != nil {
		if pctx.Err() != nil {
			return 0, s.fail(pctx, PhaseDNS, netip.AddrPort{}, err)
		}
		return 0, s.inputErr("unknown port %s: %v", p, err)
	}
	if port < 0 || port > 65535 {
		return 0, s.inputErr("invalid port %d for service %s", port, p)
	}
	return uint16(port), nil
}

// answer is one family's lookup result.
type answer struct {
	v6  bool
	ips []netip.Addr
	err error
}

// startLookup resolves the host for one family ("ip4" or "ip6") on its own
// goroutine and sends the answer on ch, which must have room for it: the
// goroutine never blocks and ends once ctx is done (the Resolver contract).
func (s *dialState) startLookup(ctx context.Context, v6 bool, ch chan<- answer) {
	network := "ip4"
	if v6 {
		network = "ip6"
	}
	res := s.d.resolver()
	go func() {
		ips, err := res.LookupNetIP(ctx, network, s.host)
		ch <- answer{v6, ips, err}
	}()
}

// families returns which lookups the dial makes: IPv6, IPv4 or both.
func (s *dialState) families() (v6, v4 bool) {
	switch s.family {
	case '4':
		return false, true
	case '6':
		return true, false
	}
	return true, true
}

// usable returns the addresses of ips that fit the dial's family, with the
// port, leaving out those already in seen; seen is extended with them.
func (s *dialState) usable(ips []netip.Addr, seen *addrSet) []netip.AddrPort {
	var out []netip.AddrPort
	for _, ip := range ips {
		ip = ip.Unmap()
		if !ip.IsValid() || (s.family == '4' && !ip.Is4()) || (s.family == '6' && !ip.Is6()) {
			continue
		}
		if ap := netip.AddrPortFrom(ip, s.port); seen.add(ap) {
			out = append(out, ap)
		}
	}
	return out
}

// addrSet is the set of addresses a dial has learned: a list while it is
// short (the common dial has one or two), a map past that, so that a huge
// answer costs linear time, not quadratic.
type addrSet struct {
	n    int
	list []netip.AddrPort
	set  map[netip.AddrPort]struct{}
}

// addrSetListMax is the size past which an addrSet becomes a map.
const addrSetListMax = 16

// add adds ap and reports whether it was new.
func (a *addrSet) add(ap netip.AddrPort) bool {
	if a.set != nil {
		if _, ok := a.set[ap]; ok {
			return false
		}
		a.set[ap] = struct{}{}
		a.n++
		return true
	}
	if slices.Contains(a.list, ap) {
		return false
	}
	a.list = append(a.list, ap)
	a.n++
	if len(a.list) > addrSetListMax {
		a.set = make(map[netip.AddrPort]struct{}, 2*len(a.list))
		for _, p := range a.list {
			a.set[p] = struct{}{}
		}
		a.list = nil
	}
	return true
}

// dnsError is the error of a resolution that gave no address: a failure
// other than "not found" wins, as it tells more; with none at all it is
// ErrNoAddresses.
func dnsError(errs []error) error {
	var first error
	for _, err := range errs {
		var de *net.DNSError
		if err != nil && !(errors.As(err, &de) && de.IsNotFound) {
			return err
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		return ErrNoAddresses
	}
	return first
}

// order applies Health (demoted peers to the back) and then interleaves the
// families of each group (RFC 8305 §4), so that Health breaks the family
// alternation only at the boundary between healthy and demoted peers.
func (s *dialState) order(peers []netip.AddrPort, now time.Time) []netip.AddrPort {
	if len(peers) < 2 {
		return peers
	}
	peers, healthy := s.health.order(peers, now)
	if healthy == len(peers) || healthy == 0 {
		return interleave(peers)
	}
	out := make([]netip.AddrPort, 0, len(peers))
	out = append(out, interleave(peers[:healthy])...)
	return append(out, interleave(peers[healthy:])...)
}

// resolveAll returns every address of the dial, ordered, after waiting for
// every lookup (bounded by ResolveTimeout): a Probe wants them all, not the
// first to answer.
func (s *dialState) resolveAll(ctx context.Context, span trace.Span) ([]netip.AddrPort, error) {
	peer, literal, err := s.prepare(ctx, span)
	if err != nil {
		return nil, err
	}
	if literal {
		return []netip.AddrPort{peer}, nil
	}
	rctx, cancel := s.phaseCtx(ctx, s.d.resolveTimeout(), errResolveTimeout)
	defer cancel()
	v6, v4 := s.families()
	ch := make(chan answer, 2)
	n := 0
	if v6 {
		n++
		s.startLookup(rctx, true, ch)
	}
	if v4 {
		n++
		s.startLookup(rctx, false, ch)
	}
	var seen addrSet
	var peers []netip.AddrPort
	var errs []error
	for range n {
		a := <-ch
		if a.err != nil {
			errs = append(errs, a.err)
			continue
		}
		peers = append(peers, s.usable(a.ips, &seen)...)
	}
	if len(peers) == 0 {
		return nil, s.fail(rctx, PhaseDNS, netip.AddrPort{}, dnsError(errs))
	}
	return s.order(v6First(peers), time.Now()), nil
}
