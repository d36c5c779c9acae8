package faultnet

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// NewNetns creates a network namespace "lifeline-<random>", brings its
// loopback interface up (127.0.0.0/8 and ::1) and deletes the namespace at
// tb's Cleanup. It skips the test (tb.Skip, "faultnet: netns unavailable:
// <why>") only when the machine cannot do it: not root, `ip` or `nft`
// missing, or `ip netns add` failing. Other errors are tb.Fatal.
func NewNetns(tb testing.TB) *Netns {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("faultnet: netns unavailable: not root (ip netns and nft need CAP_SYS_ADMIN and CAP_NET_ADMIN)")
	}
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		tb.Skipf("faultnet: netns unavailable: `ip` (iproute2) not found: %v", err)
	}
	nftPath, err := exec.LookPath("nft")
	if err != nil {
		tb.Skipf("faultnet: netns unavailable: `nft` (nftables) not found: %v", err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "lifeline-" + hex.EncodeToString(b[:])
	if out, err := exec.Command(ipPath, "netns", "add", name).CombinedOutput(); err != nil {
		tb.Skipf("faultnet: netns unavailable: ip netns add %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	tb.Cleanup(func() {
		if out, err := exec.Command(ipPath, "netns", "delete", name).CombinedOutput(); err != nil {
			tb.Errorf("faultnet: ip netns delete %s: %v: %s", name, err, strings.TrimSpace(string(out)))
		}
	})
	if out, err := exec.Command(ipPath, "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		tb.Fatalf("faultnet: netns %s: ip link set lo up: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return &Netns{Name: name, ipPath: ipPath, nftPath: nftPath}
}

// nsPath is the file `ip netns add` bind-mounts the namespace on.
func (n *Netns) nsPath() string { return "/var/run/netns/" + n.Name }

func (n *Netns) tool(resolved, name string) string {
	if resolved != "" {
		return resolved
	}
	return name // exec.Command looks it up in PATH
}

// Run runs fn on an OS thread switched into the namespace and waits for it.
// Sockets fn creates stay in the namespace for their whole life; fn must not
// start goroutines that create sockets (those run on other threads, outside).
// fn runs on its own goroutine, so it must report failure through its
// error, not tb.Fatal.
func (n *Netns) Run(fn func() error) error {
	if n.Name == "" {
		return errors.New("faultnet: Netns.Name is empty")
	}
	errc := make(chan error, 1)
	go func() {
		// The thread is locked for the whole switch. It is unlocked only
		// once it is back in the original namespace; if switching back
		// fails, it stays locked and the runtime discards it when this
		// goroutine exits, so no other goroutine ever runs in the wrong
		// namespace.
		runtime.LockOSThread()
		restored, err := n.runLocked(fn)
		if restored {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// runLocked switches the locked thread into the namespace, runs fn and
// switches back. restored reports whether the thread is in its original
// namespace at the end.
func (n *Netns) runLocked(fn func() error) (restored bool, err error) {
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return true, fmt.Errorf("faultnet: netns %s: %w", n.Name, &os.PathError{Op: "open", Path: "/proc/thread-self/ns/net", Err: err})
	}
	defer unix.Close(orig)
	target, err := unix.Open(n.nsPath(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return true, fmt.Errorf("faultnet: netns %s: %w", n.Name, &os.PathError{Op: "open", Path: n.nsPath(), Err: err})
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		// A failed setns leaves the thread where it was.
		return true, fmt.Errorf("faultnet: netns %s: %w", n.Name, os.NewSyscallError("setns", err))
	}
	fnErr := fn()
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
		return false, errors.Join(fnErr, fmt.Errorf("faultnet: netns %s: switching back: %w", n.Name, os.NewSyscallError("setns", err)))
	}
	return true, fnErr
}

// Nft loads ruleset with `nft -f -` inside the namespace (through `ip netns
// exec`). Rules outside table inet lifeline are not removed by Flush.
func (n *Netns) Nft(ruleset string) error {
	if n.Name == "" {
		return errors.New("faultnet: Netns.Name is empty")
	}
	cmd := exec.Command(n.tool(n.ipPath, "ip"), "netns", "exec", n.Name, n.tool(n.nftPath, "nft"), "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("faultnet: netns %s: nft -f -: %w: %s", n.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
