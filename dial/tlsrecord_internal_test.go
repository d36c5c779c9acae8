package dial

import (
	"crypto/tls"
	"encoding/hex"
	"testing"
)

// TestChaCha20BlockVector is RFC 8439 §2.3.2's test vector.
func TestChaCha20BlockVector(t *testing.T) {
	key, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	nonce, _ := hex.DecodeString("000000090000004a00000000")
	c := newChaCha20(key)
	var out [64]byte
	c.block(&out, 1, nonce)
	want := "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e" +
		"d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"
	if got := hex.EncodeToString(out[:]); got != want {
		t.Fatalf("chacha20 block\n got %s\nwant %s", got, want)
	}
}

// FuzzRecordWatch feeds a hostile server's bytes to the watch after a
// TLS 1.3 handshake (AES and ChaCha20) and a TLS 1.2 one (CBC, with keys,
// and GCM): it never panics, whatever the records say.
func FuzzRecordWatch(f *testing.F) {
	f.Add([]byte{23, 3, 3, 0, 17, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}, uint8(0))
	f.Add([]byte{22, 3, 3, 0, 4, 0, 0, 0, 0, 20, 3, 3, 0, 1, 1, 23, 3, 3, 0, 32}, uint8(2))
	f.Add([]byte{23, 3, 3, 0, 0, 23, 3, 3, 0, 16}, uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		w := &recordWatch{}
		secret := make([]byte, 32)
		switch mode % 4 {
		case 0:
			w.keys.secret = secret
			w.start(tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256)
		case 1:
			w.keys.secret = secret
			w.start(tls.VersionTLS13, tls.TLS_CHACHA20_POLY1305_SHA256)
		case 2:
			w.keys.master, w.keys.clientRandom = make([]byte, 48), make([]byte, 32)
			w.hello = make([]byte, serverHelloRandomEnd)
			w.start(tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA)
			if w.cbc == nil {
				t.Fatal("no CBC keys")
			}
		case 3:
			w.start(tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)
		}
		for len(data) > 0 {
			b := w.limit(data)
			k := min(len(b), 1+len(data)%7)
			w.feed(data[:k])
			_ = w.ownWrite(data[:k])
			data = data[k:]
		}
	})
}
