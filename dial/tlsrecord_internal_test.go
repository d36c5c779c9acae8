package dial

import (
	"encoding/hex"
	"testing"
)

// TestPoly1305Vector is RFC 8439 §2.5.2's test vector.
func TestPoly1305Vector(t *testing.T) {
	key, _ := hex.DecodeString("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b")
	var p poly1305
	p.init(key)
	p.write([]byte("Cryptographic Forum Research Group"))
	var sum [16]byte
	p.sum(&sum)
	if got := hex.EncodeToString(sum[:]); got != "a8061dc1305136c6c22b8baf0c0127a9" {
		t.Fatalf("poly1305 tag %s", got)
	}
}

// TestChaCha20BlockVector is RFC 8439 §2.3.2's test vector.
func TestChaCha20BlockVector(t *testing.T) {
	key, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	nonce, _ := hex.DecodeString("000000090000004a00000000")
	c := newChaCha20Poly1305(key)
	var out [64]byte
	c.block(&out, 1, nonce)
	want := "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e" +
		"d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"
	if got := hex.EncodeToString(out[:]); got != want {
		t.Fatalf("chacha20 block\n got %s\nwant %s", got, want)
	}
}
