//go:build !linux

package faultnet

import (
	"errors"
	"testing"
)

var errNoNetns = errors.New("faultnet: network namespaces need Linux")

// NewNetns skips the test: network namespaces and nftables need Linux.
func NewNetns(tb testing.TB) *Netns {
	tb.Helper()
	tb.Skip("faultnet: netns unavailable: needs Linux")
	return nil
}

// Run fails outside Linux.
func (n *Netns) Run(fn func() error) error { return errNoNetns }

// Nft fails outside Linux.
func (n *Netns) Nft(ruleset string) error { return errNoNetns }
