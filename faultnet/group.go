package faultnet

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"testing"
)

// groupAttempts bounds how often StartGroup picks a new port when another
// process holds the chosen one on one of the addresses.
const groupAttempts = 8

// StartGroup starts one Server per Config, all on ONE port on different
// loopback addresses (e.g. "127.0.0.2:0", "127.0.0.3:0", "[::1]:0"), so one
// "host:port" resolved to several IPs reaches each of them. Each Config's
// Addr gives the host; its port must be 0 (a port free on all hosts is
// chosen, retrying on collisions) or the same fixed port in every Config.
// The servers are returned in the order of cfgs and closed at tb's Cleanup;
// any error is tb.Fatal.
func StartGroup(tb testing.TB, cfgs ...Config) []*Server {
	tb.Helper()
	if len(cfgs) == 0 {
		tb.Fatal("faultnet: StartGroup: no Config given")
	}
	hosts := make([]netip.Addr, len(cfgs))
	var fixed uint16
	seen := make(map[netip.Addr]int)
	for i := range cfgs {
		ap, err := parseListenAddr(fmt.Sprintf("StartGroup cfgs[%d].Addr", i), cfgs[i].Addr, true)
		if err != nil {
			tb.Fatal(err)
		}
		if j, dup := seen[ap.Addr()]; dup {
			tb.Fatalf("faultnet: StartGroup cfgs[%d].Addr and cfgs[%d].Addr both use host %s; each server needs its own address", j, i, ap.Addr())
		}
		seen[ap.Addr()] = i
		if p := ap.Port(); p != 0 {
			if fixed != 0 && fixed != p {
				tb.Fatalf("faultnet: StartGroup cfgs[%d].Addr: port %d differs from port %d of an earlier Config", i, p, fixed)
			}
			fixed = p
		}
		hosts[i] = ap.Addr()
	}
	var err error
	for range groupAttempts {
		var servers []*Server
		servers, err = listenGroup(cfgs, hosts, fixed)
		if err == nil {
			for _, s := range servers {
				tb.Cleanup(func() { _ = s.Close() })
			}
			return servers
		}
		if fixed != 0 || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	tb.Fatalf("faultnet: StartGroup: %v", err)
	return nil
}

// listenGroup listens on hosts[i]:port for every Config; port 0 takes the
// first server's free port for all.
func listenGroup(cfgs []Config, hosts []netip.Addr, port uint16) ([]*Server, error) {
	servers := make([]*Server, 0, len(cfgs))
	for i, cfg := range cfgs {
		cfg.Addr = netip.AddrPortFrom(hosts[i], port).String()
		s, err := Listen(cfg)
		if err != nil {
			for _, s := range servers {
				_ = s.Close()
			}
			return nil, err
		}
		servers = append(servers, s)
		port = s.addr.Port()
	}
	return servers, nil
}
