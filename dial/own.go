package dial

import (
	"reflect"
	"runtime"
	"sync"
	"unsafe"
	"weak"
)

// The Healths kept for their owners (HealthFor): a Dialer without a Health
// of its own is the common owner. Design (issue 23, item 4):
//
//   - The map is keyed by the owner's address and type, never by a pointer
//     the collector follows, so it does not keep an owner alive.
//   - Each entry holds a weak pointer to its owner. An address is reused
//     once its owner is collected, possibly before that owner's cleanup
//     has run: the weak pointer tells the new owner from the dead one
//     (whose Value is nil), and the new owner gets a Health of its own.
//   - A runtime cleanup (runtime.AddCleanup) on the owner deletes its entry
//     when the owner is collected, so memory follows the owners that live:
//     a Dialer built per call leaves nothing behind. The cleanup runs on
//     the runtime's cleanup goroutine; lifeline starts none.
//
// Weak keys alone would need a sweep of dead entries (at some growth, on
// some schedule); a cleanup alone, keyed by address, could hand a new owner
// the Health of a dead one that happened to live at the same address. The
// two together are exact. The lookup of a Dialer's Health costs one read
// lock and one map lookup per dial, and no allocation.
var owned struct {
	mu sync.RWMutex
	m  map[ownKey]ownEntry
}

type ownKey struct {
	addr uintptr
	typ  reflect.Type // owners of two types may share an address (a struct and its first field)
}

type ownEntry struct {
	owner any // weak.Pointer[T] to the owner
	h     *Health
}

// HealthFor returns the Health kept for owner: made at the first call with
// owner, the same for every later call with the same pointer, and
// forgotten when owner is garbage collected. A nil owner returns nil.
//
// A [Dialer] whose Health field is nil dials with HealthFor(itself) (see
// [Dialer.Scoreboard]), so it learns from its own dials without sharing
// what it learns with any other Dialer. A type that makes a fresh Dialer
// for each call from its own fields (transport.WebSocketDialer is one)
// gives each the Health kept for itself, so that what one call learns
// orients the next. The Health has the zero value's bounds (MaxPeers
// 1024, HalfLife 1m).
//
// The owner is identified by its address (a copy of a struct is another
// owner) and is never kept alive by this: the entry goes with it, through
// a runtime cleanup (runtime.AddCleanup), without a goroutine of
// lifeline's. owner should point into a value larger than 16 bytes (any
// struct that holds a Dialer is): the runtime may batch tiny objects, whose
// cleanups need not run. HealthFor is safe for concurrent use.
func HealthFor[T any](owner *T) *Health {
	if owner == nil {
		return nil
	}
	k := ownKey{addr: uintptr(unsafe.Pointer(owner)), typ: reflect.TypeFor[T]()}
	owned.mu.RLock()
	e, ok := owned.m[k]
	owned.mu.RUnlock()
	if ok {
		if w, _ := e.owner.(weak.Pointer[T]); w.Value() == owner {
			return e.h
		}
	}
	return newHealthFor(owner, k)
}

// newHealthFor makes owner's Health, unless another goroutine just did.
func newHealthFor[T any](owner *T, k ownKey) *Health {
	w := weak.Make(owner)
	owned.mu.Lock()
	defer owned.mu.Unlock()
	if e, ok := owned.m[k]; ok {
		if ew, _ := e.owner.(weak.Pointer[T]); ew == w {
			return e.h
		}
		// The entry of a collected owner that lived at this address and
		// whose cleanup has not run yet: replaced here, and that cleanup
		// will leave this owner's entry alone (forgetOwned compares).
	}
	h := &Health{}
	if owned.m == nil {
		owned.m = make(map[ownKey]ownEntry)
	}
	owned.m[k] = ownEntry{owner: w, h: h}
	runtime.AddCleanup(owner, forgetOwned, ownedRef{k: k, h: h})
	return h
}

// ownedRef is what an owner's cleanup needs: its key and its Health, to
// delete the entry only if it is still that owner's.
type ownedRef struct {
	k ownKey
	h *Health
}

func forgetOwned(r ownedRef) {
	owned.mu.Lock()
	defer owned.mu.Unlock()
	if e, ok := owned.m[r.k]; ok && e.h == r.h {
		delete(owned.m, r.k)
	}
}

// Scoreboard returns the Health that d's dials record how each peer fared
// in, and order the addresses by: d.Health when set; otherwise the Health
// kept for d itself ([HealthFor](d)), made at d's first dial and kept for
// d's life, so that an address that failed is demoted for the next dial
// too and masked failures name their peer. A nil *Dialer returns the Health
// of the zero Dialer that stands in for every nil *Dialer. Use it to read
// (Snapshot, Stats) what a Dialer without a Health has learnt, or to give
// a layer above the dial (a transport's own stalls) the same scoreboard.
func (d *Dialer) Scoreboard() *Health {
	if d == nil {
		d = &zeroDialer
	}
	if d.Health != nil {
		return d.Health
	}
	return HealthFor(d)
}
