package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// dialSpec is a host's dial, checked.
type dialSpec struct {
	network  string // "tcp", "tcp4", "tcp6" or "tls"
	address  string
	deadline time.Duration // ≤ 0: the dial.* limits only
}

func checkDial(network, address string) *Error {
	switch network {
	case "tcp", "tcp4", "tcp6", "tls":
	default:
		return argError(`network %q: want "tcp", "tcp4", "tcp6" or "tls"`, network)
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return argError("address %q: %v", address, err)
	}
	if host == "" || port == "" || strings.ContainsAny(host, " \t\r\n/") {
		return argError("address %q: want host:port", address)
	}
	return nil
}

// doDial dials and hands the connection over as a descriptor.
func doDial(ctx context.Context, b *built, o *op, s dialSpec) *Error {
	if s.network == "tls" {
		conn, err := b.tlsDialer.DialTLSContext(ctx, "tcp", s.address)
		if err != nil {
			return classify(ctx, err)
		}
		fd, e := o.c.relayTLS(conn)
		if e != nil {
			return e
		}
		return o.setFD(fd)
	}
	conn, err := b.tcpDialer.DialContext(ctx, s.network, s.address)
	if err != nil {
		return classify(ctx, err)
	}
	fd, err := detachFD(conn)
	if err != nil {
		return &Error{Status: statusNetwork, Phase: "connect", Type: "fd", Msg: "lifeline: handing over the socket: " + err.Error()}
	}
	return o.setFD(fd)
}

// setFD stores the descriptor, or closes it when the op was freed or
// cancelled meanwhile (then the result says so).
func (o *op) setFD(fd int) *Error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.freed {
		closeFD(fd)
		return &Error{Status: statusCanceled, Phase: "canceled", Type: "canceled", Msg: "lifeline: operation freed while running"}
	}
	o.fd = fd
	return nil
}

// detachFD duplicates the socket of conn (close-on-exec, blocking) and
// closes conn: the descriptor is then the host's alone.
func detachFD(conn net.Conn) (int, error) {
	defer conn.Close()
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return -1, errors.New("connection has no descriptor")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var dupErr error
	if err := raw.Control(func(fd uintptr) {
		nfd, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, dupErr
	}
	// O_NONBLOCK belongs to the open file description, which the dup
	// shares with Go's descriptor: clear it once Go let go of its own.
	conn.Close()
	if err := unix.SetNonblock(nfd, false); err != nil {
		closeFD(nfd)
		return -1, err
	}
	return nfd, nil
}

func closeFD(fd int) { _ = unix.Close(fd) }

// relay pumps plaintext between one end of a socketpair (the host's
// descriptor is the other end) and a TLS connection that stays in Go.
type relay struct {
	c     *client
	tls   net.Conn
	local *net.UnixConn
	// watch is a second descriptor of local's socket, on which waitHostGone
	// waits for the host's close while the copies may be blocked (a copy
	// cannot notice it: the one that reads local may be stuck writing to a
	// peer that stopped reading).
	watch *net.UnixConn
	once  sync.Once
}

// relayTLS makes the socketpair and starts the relay; it returns the
// host's end.
func (c *client) relayTLS(conn net.Conn) (int, *Error) {
	fail := func(err error) (int, *Error) {
		conn.Close()
		return -1, &Error{Status: statusNetwork, Phase: "tls", Type: "fd", Msg: "lifeline: making the descriptor: " + err.Error()}
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail(err)
	}
	f := os.NewFile(uintptr(fds[1]), "lifeline-relay")
	fc, err := net.FileConn(f) // dups; f is closed below
	if err != nil {
		f.Close()
		closeFD(fds[0])
		return fail(err)
	}
	wc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		fc.Close()
		closeFD(fds[0])
		return fail(err)
	}
	r := &relay{c: c, tls: conn, local: fc.(*net.UnixConn), watch: wc.(*net.UnixConn)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		r.stop()
		closeFD(fds[0])
		return -1, &Error{Status: statusClosed, Phase: "canceled", Type: "closed", Msg: "lifeline: client closed"}
	}
	c.relays[r] = struct{}{}
	c.wg.Add(1)
	c.mu.Unlock()
	go r.run()
	return fds[0], nil
}

// stop closes both sides; the host's descriptor then reads end-of-file.
// Closing the TLS conn also ends a Write blocked on a peer that stopped
// reading (tls.Conn.Close does not wait for an in-flight Write). But it
// sends close_notify first, or waits for a CloseWrite that is sending it,
// and on a send buffer full to the brim (the last write fitted; the peer
// stopped reading) that write waits up to 5s, a deadline tls.Conn sets
// itself: past stopWait the socket under the TLS conn is closed, which
// ends that write.
func (r *relay) stop() {
	r.once.Do(func() {
		sock := r.tls
		for {
			u, ok := sock.(interface{ NetConn() net.Conn })
			if !ok {
				break
			}
			sock = u.NetConn()
		}
		cut := make(chan struct{})
		t := time.AfterFunc(stopWait, func() {
			sock.Close()
			close(cut)
		})
		r.tls.Close()
		if !t.Stop() {
			<-cut
		}
		r.local.Close()
		r.watch.Close()
	})
}

// stopWait is how long stop lets the TLS conn send close_notify
// (hostGoneGrace + stopWait stay within lifeline.h's 100ms).
const stopWait = 20 * time.Millisecond

// run copies in both directions until both are done, or until the host
// closed its descriptor, then closes everything.
//
// host → peer: the host's end-of-file (shutdown(SHUT_WR) or close) becomes
// TLS close_notify. peer → host: the peer's end-of-file becomes a
// shutdown of the host's read side; an error (reset, the first-byte
// watch) closes everything. Beside them, waitHostGone ends the relay as
// soon as the host has closed its descriptor entirely, whatever the copies
// are blocked on: a peer that stops reading (or never closes) must not
// keep the relay and its TCP conn alive.
func (r *relay) run() {
	defer r.c.wg.Done()
	defer func() {
		r.c.mu.Lock()
		delete(r.c.relays, r)
		r.c.mu.Unlock()
	}()
	down := make(chan struct{})
	go func() {
		defer close(down)
		_, err := io.Copy(r.local, r.tls)
		if err == nil {
			_ = r.local.CloseWrite()
			return
		}
		r.stop()
	}()
	up := make(chan struct{})
	go func() {
		defer close(up)
		if _, err := io.Copy(r.tls, r.local); err != nil {
			r.stop()
			return
		}
		if cw, ok := r.tls.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		if !r.waitHostGone() {
			return // stopped
		}
		// The host closed its descriptor. What it wrote before still goes
		// to the peer, as a socket's close sends what was written — but
		// for hostGoneGrace at most: a peer that stopped reading must not
		// keep the relay (and its TCP conn) alive.
		t := time.NewTimer(hostGoneGrace)
		select {
		case <-up:
		case <-t.C:
		}
		t.Stop()
		r.stop()
	}()
	<-up
	<-down
	r.stop() // also ends waitHostGone
	<-watched
}

// hostGoneGrace is how long a relay whose host closed its descriptor
// keeps copying what the host wrote before (lifeline.h promises the end
// within 100ms).
const hostGoneGrace = 50 * time.Millisecond

// waitHostGone waits until the host has closed its descriptor entirely
// (both directions: POLLHUP on a Unix stream socket; a shutdown(SHUT_WR)
// is not a close) and reports true, or until stop closed the watch
// descriptor and reports false. It sleeps in the runtime's poller between
// checks: every event on the socket (the host's writes, its close) wakes
// it for one poll(2) with no timeout.
func (r *relay) waitHostGone() bool {
	raw, err := r.watch.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	err = raw.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
			gone = true
		}
		return gone
	})
	return err == nil && gone
}
