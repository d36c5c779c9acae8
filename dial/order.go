package dial

import "net/netip"

// interleave returns addrs ordered by alternating address families, starting
// with the family of the first address (RFC 8305 §4 with a "First Address
// Family Count" of 1): a resolver answer v6a, v6b, v4a, v4b becomes v6a,
// v4a, v6b, v4b, and a family that runs out leaves the rest of the other at
// the end. The order within each family is kept. addrs is not modified.
func interleave(addrs []netip.AddrPort) []netip.AddrPort {
	if len(addrs) < 2 {
		return addrs
	}
	first4 := addrs[0].Addr().Is4()
	mixed := false
	for _, a := range addrs[1:] {
		if a.Addr().Is4() != first4 {
			mixed = true
			break
		}
	}
	if !mixed {
		return addrs
	}
	var primary, secondary []netip.AddrPort
	for _, a := range addrs {
		if a.Addr().Is4() == first4 {
			primary = append(primary, a)
		} else {
			secondary = append(secondary, a)
		}
	}
	out := make([]netip.AddrPort, 0, len(addrs))
	for i := 0; i < len(primary) || i < len(secondary); i++ {
		if i < len(primary) {
			out = append(out, primary[i])
		}
		if i < len(secondary) {
			out = append(out, secondary[i])
		}
	}
	return out
}
