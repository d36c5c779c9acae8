package faultnet

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
)

// Netns is a network namespace created by the test, with nftables rules for
// kernel-level faults (SYN drops, resets, loss, silent peers) that a
// loopback listener alone cannot produce. Create it with [NewNetns]; it is
// removed, with everything in it, at the test's Cleanup. A Netns{Name: x}
// literal works on an existing namespace x (made with `ip netns add`), which
// its creator removes; the zero value is not usable. Servers, listeners
// and conns made through it live in the namespace, so rules there affect
// nothing on the host. Methods are safe for concurrent use.
//
// Inside, only the loopback interface exists (127.0.0.0/8 and ::1, up).
// Both ends of a connection must be made through the same Netns:
// [Netns.Start] or [Netns.Listen] for the server, [Netns.DialContext] for the
// client.
type Netns struct {
	// Name is the namespace's name, "lifeline-<random>", as `ip netns`
	// lists it.
	Name string

	ipPath, nftPath string // resolved by NewNetns; "" means look up in PATH
}

// nftTable declares lifeline's table and its two base chains. Declaring
// them again is a no-op, so every rule change starts with it.
const nftTable = `table inet lifeline {
	chain input {
		type filter hook input priority 0; policy accept;
	}
	chain output {
		type filter hook output priority 0; policy accept;
	}
}
`

// Start starts a faultnet [Server] whose listener lives in the namespace
// (cfg.Addr "" = "127.0.0.1:0" inside it) and closes it at tb's Cleanup.
// Errors are tb.Fatal.
func (n *Netns) Start(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	s, err := listenServer(cfg, n.Listen, false)
	if err != nil {
		tb.Fatalf("faultnet: netns %s: %v", n.Name, err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// Listen is net.Listen inside the namespace. The caller closes the
// listener.
func (n *Netns) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.Run(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// DialContext connects to addr from inside the namespace; the socket stays
// in it. A host name in addr is resolved outside the namespace (use IP
// literals); the addresses are tried one after another. It fits
// dial.Dialer.DialFunc and pool.Config.Dial. The caller closes the conn.
func (n *Netns) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		ipNet := "ip"
		switch network {
		case "tcp4":
			ipNet = "ip4"
		case "tcp6":
			ipNet = "ip6"
		}
		ips, err = net.DefaultResolver.LookupNetIP(ctx, ipNet, host)
		if err != nil {
			return nil, &net.OpError{Op: "dial", Net: network, Err: err}
		}
	}
	var lastErr error
	for _, ip := range ips {
		var c net.Conn
		// One IP literal per call: net.Dialer then dials in the calling
		// goroutine, on the thread Run switched into the namespace. (With
		// several addresses it would race them in other goroutines, whose
		// sockets would be made outside.)
		err := n.Run(func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
			return err
		})
		if err == nil {
			return c, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func checkPort(port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("faultnet: port %d out of range 1..65535", port)
	}
	return nil
}

// DropSYN makes the kernel drop SYNs to port (TCP flags SYN without ACK), so
// a connect to it hangs until the client's timeout. Established
// connections are not affected.
func (n *Netns) DropSYN(port int) error {
	if err := checkPort(port); err != nil {
		return err
	}
	return n.Nft(nftTable + fmt.Sprintf("add rule inet lifeline input tcp dport %d tcp flags & (syn | ack) == syn drop\n", port))
}

// RejectReset answers every packet to port with a TCP RST: a connect is
// refused (ECONNREFUSED) and an established connection is reset by its next
// packet.
func (n *Netns) RejectReset(port int) error {
	if err := checkPort(port); err != nil {
		return err
	}
	return n.Nft(nftTable + fmt.Sprintf("add rule inet lifeline input tcp dport %d reject with tcp reset\n", port))
}

// Loss drops percent% (0..100) of the packets to and from port, chosen at
// random by the kernel (nft numgen), like a lossy path; TCP retransmits, so
// connections get slow rather than broken, and 100 behaves like Vanish.
func (n *Netns) Loss(port int, percent int) error {
	if err := checkPort(port); err != nil {
		return err
	}
	if percent < 0 || percent > 100 {
		return fmt.Errorf("faultnet: Loss percent %d out of range 0..100", percent)
	}
	match := fmt.Sprintf("numgen random mod 100 < %d ", percent)
	if percent == 100 {
		match = "" // nft rejects "< 100" (out of numgen's 0..99 range); drop all
	}
	return n.Nft(nftTable + fmt.Sprintf(
		"add rule inet lifeline input tcp dport %d %sdrop\n"+
			"add rule inet lifeline input tcp sport %d %sdrop\n",
		port, match, port, match))
}

// Vanish drops every packet to and from port, established connections
// included: the peer vanishes without FIN or RST, as in a network flap, and
// only timeouts and keepalives notice.
func (n *Netns) Vanish(port int) error {
	if err := checkPort(port); err != nil {
		return err
	}
	return n.Nft(nftTable + fmt.Sprintf(
		"add rule inet lifeline input tcp dport %d drop\n"+
			"add rule inet lifeline input tcp sport %d drop\n",
		port, port))
}

// Flush removes every rule this package added (the whole lifeline table):
// the recovery after a fault.
func (n *Netns) Flush() error {
	return n.Nft("table inet lifeline {}\ndelete table inet lifeline\n")
}
