package otelx_test

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"github.com/lifeline-go/lifeline/internal/otelx"
)

// ErrorTypeOf turns any error into a short, low-cardinality error.type
// value, so that dashboards can group failures without exploding series.
func ExampleErrorTypeOf() {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	fmt.Println(otelx.ErrorTypeOf(refused))
	fmt.Println(otelx.ErrorTypeOf(fmt.Errorf("query: %w", context.DeadlineExceeded)))
	fmt.Println(otelx.ErrorTypeOf(&net.DNSError{Err: "no such host", Name: "db.invalid", IsNotFound: true}))
	// Output:
	// connection_refused
	// timeout
	// dns_not_found
}
