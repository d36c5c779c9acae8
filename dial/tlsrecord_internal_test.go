package dial

import (
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
