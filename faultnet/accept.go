package faultnet

import (
	"context"
	"errors"
	"net"
	"time"
)

// acceptEach accepts on ln and gives each conn to serve until ln is closed
// (nil) or ctx ends. A transient accept error (EMFILE, ECONNABORTED)
// pauses it briefly instead of spinning, as net/http's Server.Serve does.
func acceptEach(ctx context.Context, ln net.Listener, serve func(net.Conn)) {
	var t *time.Timer
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if t == nil {
				t = time.NewTimer(5 * time.Millisecond)
				defer t.Stop()
			} else {
				t.Reset(5 * time.Millisecond)
			}
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
			continue
		}
		serve(c)
	}
}
