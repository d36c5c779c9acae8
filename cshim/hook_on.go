//go:build lifeline_testhooks

package main

// #include <stdlib.h>
import "C"

import "sync/atomic"

// With the lifeline_testhooks build tag, the C tests can make the library
// panic at a chosen place, to check that the panic is recovered, that the
// library poisons itself and that callbacks still run once. This file is
// never part of a release build (the Makefile and the tests build the
// release library without the tag).

// armed is the place that panics next ("export" or "op"), or nil.
var armed atomic.Pointer[string]

func hookPanic(where string) {
	if p := armed.Load(); p != nil && *p == where && armed.CompareAndSwap(p, nil) {
		panic("lifeline test hook: deliberate panic in " + where)
	}
}

//export lifelinego_test_arm_panic
func lifelinego_test_arm_panic(where *C.char) C.int32_t {
	w := C.GoString(where)
	armed.Store(&w)
	return 0
}
