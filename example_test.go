package lifeline_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
)

// Dial with every phase bounded, retry inside a budget, and find out where
// it broke. The address refuses connections (nothing listens there), so
// every attempt fails in the connect phase; the retries stop after
// MaxAttempts and the last attempt's *dial.Error is still reachable.
func Example() {
	port, _ := faultnet.NewRefusedPort("tcp") // a loopback port reserved, where nothing listens
	defer port.Close()
	addr := port.Addr()

	d := &dial.Dialer{Health: new(dial.Health)}
	policy := &retry.Policy{MaxAttempts: 3, InitialInterval: time.Millisecond, Budget: retry.NewBudget(0.1, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	conn, err := retry.Do(ctx, policy, func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	})
	if err == nil {
		conn.Close()
	}
	var de *dial.Error
	if errors.As(err, &de) {
		fmt.Println("phase:", de.Phase)
		fmt.Println("type:", de.ErrorType())
	}
	var ex *retry.ExhaustedError
	if errors.As(err, &ex) {
		fmt.Println("attempts:", ex.Attempts)
	}
	// Output:
	// phase: connect
	// type: connect_refused
	// attempts: 3
}
