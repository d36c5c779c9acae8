package interop_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/dial"
)

// docs/dial.md's "### In real clients" shows one snippet per client. Each is
// the code between a `// README recipe: <name>` line and the next
// `// README recipe end` line in this package's recipe_*_test.go files,
// which run it against a real server; TestReadmeRecipesInSync fails when a
// snippet and its test code differ.

// recipes names docs/dial.md's snippets in the order they appear there.
var recipes = []string{"net/http", "grpc", "go-redis", "pgx", "gorilla/websocket"}

const (
	recipeStart = "// README recipe: "
	recipeEnd   = "// README recipe end"
)

// newDialer is the Dialer the recipes plug in: the strictest settings the
// docs/dial.md recommends (a first-byte limit, a shared Health), so each client is
// shown to work with them on. Its Resolver answers every name with a dead
// address before the live one (see deadThenLive), so a recipe test that
// succeeds and then finds both in Health (checkRaced) shows that lifeline,
// not the client, resolved the name and raced its addresses.
func newDialer(tlsConfig *tls.Config) *dial.Dialer {
	return &dial.Dialer{
		Resolver:         deadThenLive{},
		TLSConfig:        tlsConfig,
		FirstByteTimeout: 10 * time.Second,
		Health:           new(dial.Health),
	}
}

var (
	deadIP = netip.MustParseAddr("127.0.0.2") // the test servers listen on 127.0.0.1 only: refused
	liveIP = netip.MustParseAddr("127.0.0.1")
)

// deadThenLive resolves every name to 127.0.0.2 and then 127.0.0.1 (A
// records only), like DNS naming a load balancer node that is down first.
type deadThenLive struct{}

func (deadThenLive) LookupNetIP(_ context.Context, network, _ string) ([]netip.Addr, error) {
	if network == "ip6" {
		return nil, nil
	}
	return []netip.Addr{deadIP, liveIP}, nil
}

// checkRaced fails the test unless d's Health saw the dead address refuse
// and the live one succeed on port: the client's connection came from
// lifeline's race over the name's addresses.
func checkRaced(t *testing.T, d *dial.Dialer, port uint16) {
	t.Helper()
	dead, _ := d.Health.Stats(netip.AddrPortFrom(deadIP, port))
	live, _ := d.Health.Stats(netip.AddrPortFrom(liveIP, port))
	if dead.Refusals == 0 || live.Successes == 0 {
		t.Errorf("the client did not dial through lifeline's race: %v refusals %d, %v successes %d",
			deadIP, dead.Refusals, liveIP, live.Successes)
	}
}

// portOf is the port of a "host:port" address.
func portOf(t *testing.T, addr string) uint16 {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return ap.Port()
}

// trust is a TLS config that trusts srv's certificate (httptest's is valid
// for 127.0.0.1, ::1 and example.com) and nothing else.
func trust(srv *httptest.Server) *tls.Config {
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	return &tls.Config{RootCAs: roots}
}

// TestReadmeRecipesInSync checks that every ```go block of docs/dial.md's
// "### In real clients" section is, byte for byte (after removing the
// indentation the test code has), the code a recipe test runs.
func TestReadmeRecipesInSync(t *testing.T) {
	readme, err := os.ReadFile("../../docs/dial.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n### In real clients\n")
	if !ok {
		t.Fatal(`docs/dial.md has no "### In real clients" section`)
	}
	section, _, ok = strings.Cut(section, "\n### ")
	if !ok {
		t.Fatal(`docs/dial.md: "### In real clients" is not followed by another ### section`)
	}
	var blocks []string
	for rest := section; ; {
		var block string
		_, rest, ok = strings.Cut(rest, "```go\n")
		if !ok {
			break
		}
		block, rest, ok = strings.Cut(rest, "```\n")
		if !ok {
			t.Fatal("README.md: unterminated ```go block in \"### In real clients\"")
		}
		blocks = append(blocks, block)
	}

	regions := recipeRegions(t)
	if len(blocks) != len(recipes) {
		t.Fatalf("README has %d go blocks in \"### In real clients\", want %d (%q)", len(blocks), len(recipes), recipes)
	}
	for i, name := range recipes {
		code, ok := regions[name]
		if !ok {
			t.Errorf("no test code marked %q", recipeStart+name)
			continue
		}
		if blocks[i] != code {
			t.Errorf("README snippet %d (%s) differs from the code its test runs:\nREADME:\n%s\ntest:\n%s", i+1, name, blocks[i], code)
		}
	}
	for name := range regions {
		if !slices.Contains(recipes, name) {
			t.Errorf("test code marked %q is not a README recipe", recipeStart+name)
		}
	}
}

// recipeRegions reads the marked regions of recipe_*_test.go, dedented by
// their first line's indentation, each line ending in a newline.
func recipeRegions(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob("recipe_*_test.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no recipe test files: %v", err)
	}
	regions := make(map[string]string)
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(src), "\n")
		for i := 0; i < len(lines); i++ {
			name, ok := strings.CutPrefix(strings.TrimSpace(lines[i]), recipeStart)
			if !ok {
				continue
			}
			if _, dup := regions[name]; dup {
				t.Fatalf("%s: recipe %q marked twice", f, name)
			}
			var b strings.Builder
			indent := ""
			for i++; ; i++ {
				if i == len(lines) {
					t.Fatalf("%s: recipe %q has no %q line", f, name, recipeEnd)
				}
				line := lines[i]
				if strings.TrimSpace(line) == recipeEnd {
					break
				}
				if b.Len() == 0 {
					indent = line[:len(line)-len(strings.TrimLeft(line, "\t"))]
				}
				if line != "" && !strings.HasPrefix(line, indent) {
					t.Fatalf("%s:%d: recipe %q line is indented less than its first line", f, i+1, name)
				}
				b.WriteString(strings.TrimPrefix(line, indent))
				b.WriteString("\n")
			}
			regions[name] = b.String()
		}
	}
	return regions
}
