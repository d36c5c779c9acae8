package interop_test

import (
	"context"
	"errors"
	"log"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
)

// pgxRecipe is docs/dial.md's pgx snippet (docs/dial.md, "### In real clients";
// TestReadmeRecipesInSync keeps the two identical): it connects with cfg
// through d and returns the *dial.Error it found in a failure.
func pgxRecipe(ctx context.Context, d *dial.Dialer, cfg *pgx.ConnConfig) (*pgx.Conn, *dial.Error, error) {
	// README recipe: pgx
	cfg.DialFunc = d.DialContext
	cfg.LookupFunc = func(ctx context.Context, host string) ([]string, error) {
		return []string{host}, nil // lifeline resolves the name and races its addresses
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	var de *dial.Error
	if errors.As(err, &de) { // reaches through pgx's *pgconn.ConnectError
		log.Printf("postgres: dial failed in phase %s at %s", de.Phase, de.Peer)
	}
	// README recipe end
	return conn, de, err
}

// pgxConfig parses a connection string for user and database postgres at
// host:port, without TLS (the test server has none).
func pgxConfig(t *testing.T, host string, port int) *pgx.ConnConfig {
	t.Helper()
	cfg, err := pgx.ParseConfig("postgres://postgres@" + net.JoinHostPort(host, strconv.Itoa(port)) + "/postgres?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestRecipePgx runs docs/dial.md's pgx recipe against a real PostgreSQL on
// loopback: SELECT 1 answers 1 over a connection from lifeline's race over
// a name only lifeline's Resolver knows (pgx's own lookup would fail).
func TestRecipePgx(t *testing.T) {
	s := startPostgres(t)
	port := portOf(t, s.Addr)
	d := newDialer(nil)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	conn, de, err := pgxRecipe(ctx, d, pgxConfig(t, "postgres.test", int(port)))
	if err != nil {
		t.Fatalf("connect: %v (dial error %v)", err, de)
	}
	defer func() {
		if err := conn.Close(context.WithoutCancel(ctx)); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("SELECT 1: %v", err)
	}
	if one != 1 {
		t.Fatalf("SELECT 1 = %d", one)
	}
	checkRaced(t, d, port)
}

// TestRecipePgxDialError runs the same recipe against a loopback port where
// nothing listens: the *dial.Error is found through pgx's ConnectError and
// says the connect phase failed, at which peer, with the refusal as cause.
func TestRecipePgxDialError(t *testing.T) {
	// Reserved while the test runs, nothing listening: connections are refused.
	port := int(netip.MustParseAddrPort(faultnet.RefusedAddr(t, "tcp")).Port())
	d := newDialer(nil)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	conn, de, err := pgxRecipe(ctx, d, pgxConfig(t, "127.0.0.1", port))
	if err == nil {
		conn.Close(ctx)
		t.Fatal("connected to a port where nothing listens")
	}
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) {
		t.Errorf("error %T is not a *pgconn.ConnectError: %v", err, err)
	}
	if de == nil {
		t.Fatalf("no *dial.Error in %v", err)
	}
	if de.Phase != dial.PhaseConnect || de.Peer.Port() != uint16(port) || !de.Peer.Addr().IsLoopback() {
		t.Errorf("dial error phase %s peer %v, want connect at 127.0.0.1:%d", de.Phase, de.Peer, port)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("error does not match ECONNREFUSED: %v", err)
	}
}
