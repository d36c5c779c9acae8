// Command cshim is lifeline's C ABI: built with -buildmode=c-shared
// (liblifeline.so) or -buildmode=c-archive (liblifeline.a), it gives hosts
// in other languages — C, C++, Python through ctypes, anything with an FFI —
// lifeline's guarantees: HTTP requests and TCP/TLS dials in which every
// phase is bounded, cancellable from any thread, with errors that say where
// they broke.
//
// The public interface is the hand-written header lifeline.h in this
// directory; the header cgo generates next to the library (it declares the
// lifelinego_* exports) is not public. The functions the header declares
// are C wrappers in shim.c: they check for a forked child before anything
// enters the Go runtime, and free what the library allocated without
// entering it. Behind them, exports.go converts C arguments and results;
// the rest of the package is plain Go (handle table, configuration keys,
// clients, operations, error classification) and is tested as such.
//
// Built as an ordinary program, cshim does nothing: main is empty.
package main

func main() {}
