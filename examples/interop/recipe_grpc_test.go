package interop_test

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/lifeline-go/lifeline/dial"
)

// grpcRecipe is docs/dial.md's grpc-go snippet (docs/dial.md, "### In real
// clients"; TestReadmeRecipesInSync keeps the two identical).
func grpcRecipe(d *dial.Dialer, addr string) (*grpc.ClientConn, error) {
	// README recipe: grpc
	conn, err := grpc.NewClient("passthrough:///"+addr, // the name goes to lifeline unresolved
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)
	// README recipe end
	return conn, err
}

// startHealthServer serves grpc's standard health service on a free
// loopback port until the test ends and returns the port.
func startHealthServer(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthSrv := health.NewServer() // the empty service name is SERVING
	healthpb.RegisterHealthServer(srv, healthSrv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		healthSrv.Shutdown()
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("grpc server: %v", err)
		}
	})
	return portOf(t, ln.Addr().String())
}

// checkServing calls the health service's Check on conn.
func checkServing(t *testing.T, conn *grpc.ClientConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health check: %v", err)
	}
	if got := resp.GetStatus(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health status %v, want SERVING", got)
	}
}

// TestRecipeGRPC runs docs/dial.md's grpc-go recipe against a real grpc
// server on loopback serving the standard health service: Check answers
// SERVING, and the connection came from lifeline's race over the
// addresses of a name only lifeline's Resolver knows (grpc's own resolver
// would have failed on it).
func TestRecipeGRPC(t *testing.T) {
	port := startHealthServer(t)
	d := newDialer(nil)
	conn, err := grpcRecipe(d, net.JoinHostPort("grpc.test", strconv.Itoa(int(port))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	checkServing(t, conn)
	checkRaced(t, d, port)
}

// TestRecipeGRPCNeedsPassthrough shows why the recipe's target starts with
// passthrough:///: with grpc's default (dns) resolver, grpc resolves the
// name itself and hands the dialer one IP at a time, so lifeline never sees
// the name and has no addresses to race.
func TestRecipeGRPCNeedsPassthrough(t *testing.T) {
	port := startHealthServer(t)
	d := newDialer(nil)
	var mu sync.Mutex
	var dialed []string
	conn, err := grpc.NewClient(net.JoinHostPort("localhost", strconv.Itoa(int(port))),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			mu.Lock()
			dialed = append(dialed, addr)
			mu.Unlock()
			return d.DialContext(ctx, "tcp", addr)
		}),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	checkServing(t, conn)

	mu.Lock()
	defer mu.Unlock()
	if len(dialed) == 0 {
		t.Fatal("grpc never called the dialer")
	}
	for _, addr := range dialed {
		if _, err := netip.ParseAddrPort(addr); err != nil {
			t.Errorf("without passthrough the dialer got %q, want an IP literal (grpc resolved the name)", addr)
		}
	}
}
