package pool

import (
	"sync"
	"sync/atomic"
)

// poolMu is the pool's lock (Pool.mu), which also delivers the records a
// Logger gets of the upstream's changes of state. The gate reports a change
// on the goroutine that made it, and the pool asks its gate under mu (the
// look for dials that hang, Reset's fresh start): a record written there
// would run the Logger's handler — user code — with the pool locked, so a
// slow handler would stall every Acquire and Release, and one that calls
// the pool (Stats, to say how full it is) would deadlock it for good.
// [poolMu.later] queues the record instead, and it is written with mu
// free: at once when nobody holds mu, else by the Unlock of whoever does.
// Records are written in order, one goroutine at a time; a goroutine that
// finds another writing leaves its records to it and does not wait.
type poolMu struct {
	sync.Mutex
	pending atomic.Bool // q is not empty

	qmu     sync.Mutex // guards q and writing; never held across a write
	q       []func()
	writing bool
}

// Unlock releases the lock, then writes the records queued while it was
// held.
func (m *poolMu) Unlock() {
	m.Mutex.Unlock()
	if m.pending.Load() {
		m.write()
	}
}

// later queues write to run with the lock free: now, when nobody holds it;
// otherwise by its holder's Unlock. (The holder may be this goroutine.)
// Whoever holds it when the TryLock fails unlocks after the record is
// queued, and every Unlock looks at pending after it unlocks.
func (m *poolMu) later(write func()) {
	m.qmu.Lock()
	m.q = append(m.q, write)
	m.pending.Store(true)
	m.qmu.Unlock()
	if m.TryLock() {
		m.Unlock()
	}
}

// write runs the queued records in order, unless another goroutine is
// doing so (it takes the new ones too).
func (m *poolMu) write() {
	m.qmu.Lock()
	if m.writing {
		m.qmu.Unlock()
		return
	}
	m.writing = true
	for len(m.q) > 0 {
		q := m.q
		m.q = nil
		m.pending.Store(false)
		m.qmu.Unlock()
		for _, w := range q {
			w()
		}
		m.qmu.Lock()
	}
	m.writing = false
	m.qmu.Unlock()
}
