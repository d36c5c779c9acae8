package otelx

import (
	"reflect"
	"sync"
	"sync/atomic"
)

// memoSize is how many providers a Memo remembers. A program passes a
// handful of providers (usually one, the global or its SDK's); tests make
// many. Remembering only the most recent few keeps the cache from pinning
// every provider ever passed in (and the instruments and exporters behind
// it) for the life of the process.
const memoSize = 8

// Memo caches one value per provider (a TracerProvider, a MeterProvider or
// a key that holds them), for the memoSize providers most recently added.
// Reads take no lock and no allocation: they scan an immutable slice that
// writers replace, comparing typed keys (no boxing into an interface). The
// zero Memo is ready; it is safe for concurrent use.
type Memo[K comparable, V any] struct {
	mu      sync.Mutex // serialises writers; readers only load entries
	entries atomic.Pointer[[]memoEntry[K, V]]
}

type memoEntry[K comparable, V any] struct {
	key K
	val V
}

// Get returns the value cached for key, building and caching it on a miss.
// Two goroutines missing at once may both build; one value is kept. The
// providers in key must have comparable dynamic types (see Comparable):
// comparing two keys that hold the same non-comparable type panics.
func (m *Memo[K, V]) Get(key K, build func() V) V {
	if v, ok := m.load(key); ok {
		return v
	}
	v := build()
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.load(key); ok {
		return old
	}
	var next []memoEntry[K, V]
	if p := m.entries.Load(); p != nil {
		next = *p
	}
	if len(next) >= memoSize {
		next = next[len(next)-memoSize+1:] // forget the oldest
	}
	next = append(append(make([]memoEntry[K, V], 0, len(next)+1), next...), memoEntry[K, V]{key, v})
	m.entries.Store(&next)
	return v
}

func (m *Memo[K, V]) load(key K) (V, bool) {
	if p := m.entries.Load(); p != nil {
		// Newest first: the provider just added is the likeliest one asked.
		for i := len(*p) - 1; i >= 0; i-- {
			if e := &(*p)[i]; e.key == key {
				return e.val, true
			}
		}
	}
	var zero V
	return zero, false
}

// Len reports how many providers are cached (for tests).
func (m *Memo[K, V]) Len() int {
	if p := m.entries.Load(); p != nil {
		return len(*p)
	}
	return 0
}

// Comparable reports whether a provider can be part of a Memo key: its
// dynamic type is comparable. A nil provider is not.
func Comparable(provider any) bool {
	return provider != nil && reflect.TypeOf(provider).Comparable()
}

// ProviderPair keys a Memo by a tracer and a meter provider together.
type ProviderPair struct{ Tracer, Meter any }
