package dial_test

import (
	"context"
	"net"
	"testing"

	"github.com/lifeline-go/lifeline/dial"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// TestDialLeavesTheCallersSpanAlone: a Dialer whose tracer makes no spans
// (a noop provider) writes nothing on the caller's own span, which is the
// span in the dial's context then: its attributes are the caller's. A
// Dialer with a real provider names the addresses on its own dial span.
func TestDialLeavesTheCallersSpanAlone(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port

	caller := newTelemetry(t)
	for _, own := range []bool{false, true} {
		d := dial.Dialer{Resolver: resolverFor("127.0.0.1"), TracerProvider: tracenoop.NewTracerProvider()}
		var rig *telemetryRig
		if own {
			rig = newTelemetry(t)
			d.TracerProvider = rig.tp
		}
		ctx, span := caller.tp.Tracer("caller").Start(context.Background(), "caller")
		c, err := d.DialContext(ctx, "tcp", hostPort(port))
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		span.End()
		got := caller.spansNamed("caller")
		if n := len(got[len(got)-1].Attributes()); n != 0 {
			t.Errorf("own provider %v: the caller's span got %d attributes from the dial: %v", own, n, got[len(got)-1].Attributes())
		}
		if own {
			ds := rig.spansNamed("dial")
			if len(ds) != 1 {
				t.Fatalf("%d dial spans, want 1", len(ds))
			}
			if _, ok := attr(ds[0], "lifeline.dial.addresses"); !ok {
				t.Errorf("the dial span does not name its addresses: %v", ds[0].Attributes())
			}
		}
	}
}
