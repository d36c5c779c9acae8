package dial

import (
	"crypto/aes"
	"crypto/cipher"
	"net/netip"
	"time"
)

// Interleave exposes interleave to the tests.
var Interleave = interleave

// OrderPeers runs a Dialer's ordering (Health, then family interleaving) at now.
func OrderPeers(h *Health, peers []netip.AddrPort, now time.Time) []netip.AddrPort {
	s := &dialState{d: &Dialer{Health: h}, health: h}
	return s.order(append([]netip.AddrPort(nil), peers...), now)
}

// RecordAt records an event at a given time.
func (h *Health) RecordAt(peer netip.AddrPort, ev Event, now time.Time) { h.record(peer, ev, 0, now) }

// TLS13Sealer seals TLS 1.3 records as a server would, for tests that
// send the post-handshake records crypto/tls never sends on its own.
type TLS13Sealer struct {
	k    *recordKeys
	aead cipher.AEAD
}

// NewTLS13Sealer keys a sealer from a server application traffic secret.
func NewTLS13Sealer(suite uint16, secret []byte) (*TLS13Sealer, error) {
	k, err := newRecordKeys(suite, secret)
	if err != nil {
		return nil, err
	}
	if k.chacha {
		return nil, errUnknownSuite // Seal is not implemented for ChaCha20
	}
	s := &TLS13Sealer{k: k}
	return s, s.rekey()
}

func (s *TLS13Sealer) rekey() error {
	key, err := expandLabel(s.k.hash, s.k.secret, "key", s.k.keyLen)
	if err != nil {
		return err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	s.aead, err = cipher.NewGCM(block)
	return err
}

// Seal returns one whole record carrying content of the inner type typ.
func (s *TLS13Sealer) Seal(typ byte, content []byte) []byte {
	k := s.k
	n := len(content) + 1 + s.aead.Overhead()
	hdr := []byte{recordApplication, 3, 3, byte(n >> 8), byte(n)}
	k.nonce = k.iv
	for i := range 8 {
		k.nonce[4+i] ^= byte(k.seq >> (56 - 8*i))
	}
	k.seq++
	inner := append(append([]byte(nil), content...), typ)
	return s.aead.Seal(hdr, k.nonce[:], inner, hdr)
}

// Update moves to the next traffic secret, as after sending a KeyUpdate.
func (s *TLS13Sealer) Update() error {
	if err := s.k.update(); err != nil {
		return err
	}
	return s.rekey()
}

// ServerTrafficLabel is the key log label of the server's first
// application traffic secret.
const ServerTrafficLabel = serverTrafficLabel

// PRF12 exposes the TLS 1.2 PRF to the tests that seal CBC records.
var PRF12 = prf12

// OwnedHealths is the number of Healths HealthFor keeps for live owners
// (and for collected ones whose cleanup has not run yet).
func OwnedHealths() int {
	owned.mu.RLock()
	defer owned.mu.RUnlock()
	return len(owned.m)
}
