package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/lifeline-go/lifeline/faultnet"
)

// serviceName is the name scenarios (c) and (d) resolve to three addresses.
const serviceName = "lifeline-compare.test"

// roundRobinDNS is an in-process DNS server behind Go's own resolver: every
// A question gets all of ips, rotated by one per answer, as round-robin DNS
// does; AAAA questions get none. Each contender gets its own, so each sees
// the same sequence of answers.
type roundRobinDNS struct {
	ips []netip.Addr
	n   atomic.Uint64
}

// resolver is a *net.Resolver (it fits net.Dialer.Resolver and
// dial.Dialer.Resolver) whose queries reach d over an in-memory conn.
func (d *roundRobinDNS) resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(context.Context, string, string) (net.Conn, error) {
			client, server := net.Pipe()
			go d.serve(server)
			return client, nil
		},
	}
}

// serve answers queries in DNS-over-TCP framing (Go's resolver uses it on a
// conn that is not a net.PacketConn) until the resolver closes the conn.
func (d *roundRobinDNS) serve(c net.Conn) {
	defer c.Close()
	for {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		a, err := d.answer(q)
		if err != nil {
			return
		}
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(a))), a...)); err != nil {
			return
		}
	}
}

func (d *roundRobinDNS) answer(query []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	qs, err := p.AllQuestions()
	if err != nil {
		return nil, err
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{
		ID: h.ID, Response: true, Authoritative: true,
		RecursionDesired: h.RecursionDesired, RecursionAvailable: true,
	})
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	for _, q := range qs {
		if err := b.Question(q); err != nil {
			return nil, err
		}
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	for _, q := range qs {
		if q.Type != dnsmessage.TypeA {
			continue
		}
		k := int(d.n.Add(1) - 1)
		for i := range d.ips {
			ip := d.ips[(k+i)%len(d.ips)]
			rh := dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}
			if err := b.AResource(rh, dnsmessage.AResource{A: ip.As4()}); err != nil {
				return nil, err
			}
		}
	}
	return b.Finish()
}

// skipError says why a scenario cannot run on this machine.
type skipError struct{ why string }

func (e *skipError) Error() string { return "skipped: " + e.why }

// newNetns creates a network namespace for scenario (c) with its loopback
// up and returns it with the function that deletes it. Without root, `ip`
// or `nft` it returns a *skipError.
func newNetns() (*faultnet.Netns, func(), error) {
	if os.Geteuid() != 0 {
		return nil, nil, &skipError{"not root (a network namespace and nftables need CAP_SYS_ADMIN and CAP_NET_ADMIN)"}
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return nil, nil, &skipError{"`ip` (iproute2) not found"}
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return nil, nil, &skipError{"`nft` (nftables) not found"}
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	name := "lifeline-compare-" + hex.EncodeToString(r[:])
	if out, err := exec.Command(ip, "netns", "add", name).CombinedOutput(); err != nil {
		return nil, nil, &skipError{fmt.Sprintf("ip netns add: %v: %s", err, strings.TrimSpace(string(out)))}
	}
	del := func() { _ = exec.Command(ip, "netns", "delete", name).Run() }
	if out, err := exec.Command(ip, "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		del()
		return nil, nil, fmt.Errorf("netns %s: ip link set lo up: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return &faultnet.Netns{Name: name}, del, nil
}

// dropSYNTo makes the namespace's kernel drop SYNs to ip:port only (the
// other addresses on the port stay reachable), as a black-holed path does.
func dropSYNTo(ns *faultnet.Netns, ip string, port int) error {
	return ns.Nft(fmt.Sprintf(`table inet lifeline_compare {
	chain input {
		type filter hook input priority 0; policy accept;
		ip daddr %s tcp dport %d tcp flags & (syn | ack) == syn drop
	}
}
`, ip, port))
}

// listenGroup listens on one port on each of hosts (loopback IPs), with
// listen (the host's or a namespace's), retrying on a port another socket
// holds on one of them.
func listenGroup(listen func(network, addr string) (net.Listener, error), hosts ...string) ([]net.Listener, int, error) {
	var lastErr error
	for range 8 {
		first, err := listen("tcp", net.JoinHostPort(hosts[0], "0"))
		if err != nil {
			return nil, 0, err
		}
		port := first.Addr().(*net.TCPAddr).Port
		lns := []net.Listener{first}
		for _, h := range hosts[1:] {
			ln, err := listen("tcp", net.JoinHostPort(h, fmt.Sprint(port)))
			if err != nil {
				lastErr = err
				break
			}
			lns = append(lns, ln)
		}
		if len(lns) == len(hosts) {
			return lns, port, nil
		}
		for _, ln := range lns {
			_ = ln.Close()
		}
	}
	return nil, 0, errors.Join(errors.New("no port free on every address"), lastErr)
}
