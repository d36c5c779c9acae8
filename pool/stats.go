package pool

import "time"

// Stats is a snapshot of a [Pool], from [Pool.Stats]; a plain value, safe to
// copy and compare (the zero Stats is an empty pool that did nothing). The
// first six fields are gauges at the moment of the call (Open = Dialing +
// Idle + InUse + Closing, never more than MaxConns; InUse includes a conn in
// the middle of its Release); the rest are totals since [New].
type Stats struct {
	Open    int // connections counted against MaxConns: Dialing + Idle + InUse + Closing
	Idle    int // connections ready for reuse
	InUse   int // connections checked out
	Dialing int // dials in flight, including those waiting for the dial rate
	Waiting int // Acquire calls queued for a connection
	Closing int // connections evicted or destroyed whose Close has not returned yet

	Dialed       int64 // connections dialed successfully
	DialFailures int64 // dials that failed (not counting those canceled by Close)

	EvictedIdle     int64 // closed after MaxIdleTime idle
	EvictedLifetime int64 // closed after MaxLifetime ± jitter
	EvictedBroken   int64 // destroyed on Release after an I/O error or MarkBroken
	EvictedDead     int64 // failed the liveness probe on Acquire
	EvictedReset    int64 // closed by Reset (idle, released afterwards, or dialed before it)
	EvictedExcess   int64 // released while MaxIdleConns were already idle

	AcquireCount     int64         // successful Acquire calls
	AcquireFailures  int64         // Acquire calls that returned an error
	Unavailable      int64         // of AcquireFailures: failed fast, the upstream known down (*UnavailableError)
	AcquireWaitCount int64         // Acquire calls that had to queue (successful or not)
	AcquireWaitTime  time.Duration // total time those calls spent in Acquire
}

// Evicted is the total of the Evicted* counters.
func (s Stats) Evicted() int64 {
	return s.EvictedIdle + s.EvictedLifetime + s.EvictedBroken + s.EvictedDead + s.EvictedReset + s.EvictedExcess
}

// reason is why a connection left the pool; reasonNone is a caller's
// Conn.Close, which is not an eviction.
type reason uint8

const (
	reasonNone reason = iota
	reasonIdle
	reasonLifetime
	reasonBroken
	reasonDead
	reasonReset
	reasonExcess
	numReasons
)

// String is the lifeline.pool.evict_reason attribute value.
func (r reason) String() string {
	return [...]string{"none", "idle", "lifetime", "broken", "dead", "reset", "excess"}[r]
}

func (s *Stats) countEviction(r reason) {
	switch r {
	case reasonIdle:
		s.EvictedIdle++
	case reasonLifetime:
		s.EvictedLifetime++
	case reasonBroken:
		s.EvictedBroken++
	case reasonDead:
		s.EvictedDead++
	case reasonReset:
		s.EvictedReset++
	case reasonExcess:
		s.EvictedExcess++
	}
}
