//go:build !linux

package faultnet

import "net"

// hold blocks until the peer closes c (true) or c is closed on our side
// (false). Outside Linux it reads and discards what the peer sends.
func hold(c net.Conn, activity func()) bool { return holdByReading(c, activity) }
