package dial_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/dial"
)

// echoResolver answers any host with the loopback address, so every input
// that parses reaches the connect seam.
type echoResolver struct{}

func (echoResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}, nil
}

// FuzzDialInput feeds arbitrary networks and addresses to DialContext with
// a connect seam that refuses at once: whatever the input, the result is an
// *Error with a phase and no conn, and nothing panics or hangs.
func FuzzDialInput(f *testing.F) {
	for _, seed := range [][2]string{
		{"tcp", "127.0.0.1:80"}, {"tcp", "[::1]:443"}, {"tcp4", "[::1]:443"}, {"tcp6", "1.2.3.4:5"},
		{"tcp", "host:http"}, {"tcp", "host:"}, {"tcp", ":0"}, {"tcp", "[fe80::1%lo]:1"},
		{"udp", "x:1"}, {"", ""}, {"tcp", "a:99999"}, {"tcp", "[::ffff:127.0.0.1]:1"}, {"tcp", "\x00:1"},
	} {
		f.Add(seed[0], seed[1])
	}
	refused := errors.New("refused by the fuzz seam")
	d := &dial.Dialer{
		Resolver: echoResolver{},
		DialFunc: func(context.Context, string, string) (net.Conn, error) { return nil, refused },
		Timeout:  time.Second,
	}
	f.Fuzz(func(t *testing.T, network, address string) {
		conn, err := d.DialContext(context.Background(), network, address)
		if conn != nil || err == nil {
			t.Fatalf("DialContext(%q, %q) = %v, %v; want no conn and an error", network, address, conn, err)
		}
		var de *dial.Error
		if !errors.As(err, &de) {
			t.Fatalf("DialContext(%q, %q) error %T is not a *dial.Error: %v", network, address, err, err)
		}
		if de.Phase != dial.PhaseDNS && de.Phase != dial.PhaseConnect {
			t.Fatalf("DialContext(%q, %q): phase %v", network, address, de.Phase)
		}
		_ = err.Error()
		_ = de.ErrorType()
	})
}
