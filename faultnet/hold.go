package faultnet

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// holdByReading is hold for conns without a file descriptor: it reads and
// discards until an error.
func holdByReading(c net.Conn, activity func()) bool {
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			activity()
		}
		if err != nil {
			return err == io.EOF || isReset(err)
		}
	}
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET)
}
