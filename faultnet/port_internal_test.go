package faultnet

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReservationNotInherited: the sockets that hold a port (RefusedPort,
// RefusedAddr, Blackhole) are close-on-exec, so a server process a test
// starts (openssl, nginx) does not keep the port reserved or black-holed
// after the test frees it.
func TestReservationNotInherited(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	ls, err := exec.LookPath("ls")
	if err != nil {
		t.Skipf("no ls: %v", err)
	}
	p := ReservePort(t, "tcp")
	fds := map[string]int{"RefusedPort": p.fd}
	fd, _, err := boundSocket(netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 0))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	fds["boundSocket"] = fd
	out, err := exec.Command(ls, "-l", "/proc/self/fd").CombinedOutput()
	if err != nil {
		t.Fatalf("ls: %v\n%s", err, out)
	}
	for name, fd := range fds {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil {
			t.Fatal(err)
		}
		if flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("%s: fd %d has no FD_CLOEXEC", name, fd)
		}
		link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), link) {
			t.Errorf("%s: a child process holds %s:\n%s", name, link, out)
		}
	}
}

// TestIPv6Unavailable: the errors of a host without ::1 skip a tcp6 test;
// others (a port in use, too many files) still fail it.
func TestIPv6Unavailable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{os.NewSyscallError("socket", unix.EAFNOSUPPORT), true},
		{os.NewSyscallError("socket", unix.EPROTONOSUPPORT), true},
		{fmt.Errorf("faultnet: reserve a port on ::1: %w", os.NewSyscallError("bind", unix.EADDRNOTAVAIL)), true},
		{os.NewSyscallError("bind", unix.EADDRINUSE), false},
		{os.NewSyscallError("socket", unix.EMFILE), false},
	} {
		if got := ipv6Unavailable(tc.err); got != tc.want {
			t.Errorf("ipv6Unavailable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
