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
// a pair of them), for the memoSize providers most recently added. Reads
// take no lock: they scan an immutable slice that writers replace. A
// provider whose dynamic type is not comparable is never cached: build runs
// each time. The zero Memo is ready; it is safe for concurrent use.
type Memo[V any] struct {
	mu      sync.Mutex // serialises writers; readers only load entries
	entries atomic.Pointer[[]memoEntry[V]]
}

type memoEntry[V any] struct {
	key any
	val V
}

// Get returns the value cached for key, building and caching it on a miss.
// Two goroutines missing at once may both build; one value is kept.
func (m *Memo[V]) Get(key any, build func() V) V {
	if !comparable(key) {
		return build()
	}
	if v, ok := m.load(key); ok {
		return v
	}
	v := build()
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.load(key); ok {
		return old
	}
	var next []memoEntry[V]
	if p := m.entries.Load(); p != nil {
		next = *p
	}
	if len(next) >= memoSize {
		next = next[len(next)-memoSize+1:] // forget the oldest
	}
	next = append(append(make([]memoEntry[V], 0, len(next)+1), next...), memoEntry[V]{key, v})
	m.entries.Store(&next)
	return v
}

func (m *Memo[V]) load(key any) (V, bool) {
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
func (m *Memo[V]) Len() int {
	if p := m.entries.Load(); p != nil {
		return len(*p)
	}
	return 0
}

// comparable reports whether key can be a map key without panicking: its
// dynamic type, and for pairs each element's, is comparable.
func comparable(key any) bool {
	if key == nil {
		return false
	}
	if p, ok := key.(ProviderPair); ok {
		return comparable(p.Tracer) && comparable(p.Meter)
	}
	return reflect.TypeOf(key).Comparable()
}

// ProviderPair keys a Memo by a tracer and a meter provider together.
type ProviderPair struct{ Tracer, Meter any }
