package transport

import (
	"net/url"
	"strconv"
	"testing"
	"time"
)

// BenchmarkAdvUpstreamOfManyHosts: a Transport that calls 1,000 hosts in
// turn (a webhook sender, a crawler): what finding each call's upstream
// costs once more hosts are called than are tracked.
func BenchmarkAdvUpstreamOfManyHosts(b *testing.B) {
	st := (&Transport{}).get()
	us := make([]*url.URL, 1000)
	for i := range us {
		us[i] = &url.URL{Scheme: "https", Host: "h" + strconv.Itoa(i) + ".example"}
	}
	now := time.Now().UnixNano()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		st.ups.upstreamOf(us[i%len(us)], now+int64(i)*int64(2*time.Millisecond))
		i++
	}
}
