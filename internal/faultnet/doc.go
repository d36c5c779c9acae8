// Package faultnet injects network faults for lifeline's tests, examples and
// benchmarks: loopback servers that go silent, stall TLS, reset, close or
// dribble; addresses that refuse or black-hole connects; a proxy that holds or
// delays replies; and kernel-level faults (nftables) inside a network
// namespace the test creates. Only loopback addresses (127.0.0.0/8, ::1) and
// namespaces made by the test are ever targets.
//
// All types are safe for concurrent use; every Close is idempotent and waits
// for the goroutines the value owns.
package faultnet
