package interop_test

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lifeline-go/lifeline/dial"
)

// redisRecipe is docs/dial.md's go-redis snippet (docs/dial.md, "### In real
// clients"; TestReadmeRecipesInSync keeps the two identical).
func redisRecipe(d *dial.Dialer, addr string) *redis.Client {
	// README recipe: go-redis
	rdb := redis.NewClient(&redis.Options{Addr: addr, Dialer: d.DialContext})
	// README recipe end
	return rdb
}

// TestRecipeGoRedis runs docs/dial.md's go-redis recipe against a real
// redis-server on loopback: SET then GET the value back, over connections
// from lifeline's race over a name only lifeline's Resolver knows.
func TestRecipeGoRedis(t *testing.T) {
	s := startRedis(t)
	port := portOf(t, s.Addr)
	d := newDialer(nil)
	rdb := redisRecipe(d, net.JoinHostPort("redis.test", strconv.Itoa(int(port))))
	defer func() {
		if err := rdb.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := rdb.Set(ctx, "lifeline:recipe", "raced", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	got, err := rdb.Get(ctx, "lifeline:recipe").Result()
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	if got != "raced" {
		t.Fatalf("GET = %q, want %q", got, "raced")
	}
	checkRaced(t, d, port)
}
