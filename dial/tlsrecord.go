package dial

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"math/bits"
)

// This file lets the first-byte watch, which sits under a *tls.Conn, learn
// the true content type of each record the server sends after the
// handshake. In TLS 1.2 the record header says it. In TLS 1.3 every record
// is sent as application_data and the real type is inside the encryption
// (RFC 8446 §5.2): a session ticket, a KeyUpdate, an empty record and the
// reply all look alike from outside. The watch therefore opens each record
// itself, with the server's application traffic secret that crypto/tls
// hands to a KeyLogWriter (chained with the caller's), and follows
// KeyUpdates (RFC 8446 §7.2). Only records that arrive while the watch
// waits are opened; after the reply nothing is.

// serverTrafficLabel is the key log label of the server's first
// application traffic secret (NSS key log format, RFC 9850).
const serverTrafficLabel = "SERVER_TRAFFIC_SECRET_0 "

// keyLog is the KeyLogWriter of one watched TLS attempt: it keeps the
// server's application traffic secret and passes every line to the
// caller's KeyLogWriter, if any. crypto/tls calls it during the handshake,
// on the handshaking goroutine, before the watch reads secret.
type keyLog struct {
	inner  io.Writer
	secret []byte
	// TLS 1.2: the master secret and the client random it belongs to.
	master, clientRandom []byte
}

func (k *keyLog) Write(line []byte) (int, error) {
	if rest, ok := bytes.CutPrefix(line, []byte(serverTrafficLabel)); ok {
		if _, sec, ok := bytes.Cut(rest, []byte{' '}); ok {
			sec = bytes.TrimRight(sec, "\r\n")
			if s, err := hex.AppendDecode(nil, sec); err == nil {
				k.secret = s
			}
		}
	} else if rest, ok := bytes.CutPrefix(line, []byte(clientRandomLabel)); ok {
		if cr, sec, ok := bytes.Cut(rest, []byte{' '}); ok {
			cr, err1 := hex.AppendDecode(nil, cr)
			m, err2 := hex.AppendDecode(nil, bytes.TrimRight(sec, "\r\n"))
			if err1 == nil && err2 == nil {
				k.clientRandom, k.master = cr, m
			}
		}
	}
	if k.inner != nil {
		return k.inner.Write(line)
	}
	return len(line), nil
}

// recordKeys opens the TLS 1.3 records of one direction: the AEAD of the
// negotiated suite keyed from the current traffic secret, and the record
// sequence number (RFC 8446 §5.3).
type recordKeys struct {
	hash   func() hash.Hash
	keyLen int
	chacha bool
	secret []byte
	dec    decrypter
	iv     [12]byte
	seq    uint64
	nonce  [12]byte
}

var errUnknownSuite = errors.New("dial: unknown TLS 1.3 cipher suite")

func newRecordKeys(suite uint16, secret []byte) (*recordKeys, error) {
	k := &recordKeys{}
	switch suite {
	case tls.TLS_AES_128_GCM_SHA256:
		k.hash, k.keyLen = sha256.New, 16
	case tls.TLS_AES_256_GCM_SHA384:
		k.hash, k.keyLen = sha512.New384, 32
	case tls.TLS_CHACHA20_POLY1305_SHA256:
		k.hash, k.keyLen, k.chacha = sha256.New, 32, true
	default:
		return nil, errUnknownSuite
	}
	if len(secret) != k.hash().Size() {
		return nil, errors.New("dial: traffic secret of the wrong size")
	}
	return k, k.setSecret(secret)
}

// setSecret keys the AEAD from a traffic secret and restarts the sequence.
func (k *recordKeys) setSecret(secret []byte) error {
	k.secret = secret
	key, err := expandLabel(k.hash, secret, "key", k.keyLen)
	if err != nil {
		return err
	}
	iv, err := expandLabel(k.hash, secret, "iv", len(k.iv))
	if err != nil {
		return err
	}
	copy(k.iv[:], iv)
	k.seq = 0
	if k.chacha {
		k.dec = newChaCha20(key)
		return nil
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	k.dec = gcmStream{block}
	return nil
}

// A record decrypter: the stream cipher under the suite's AEAD. The tag is
// not checked: tls.Conn checks it and fails the Read on a record that does
// not verify, so what the watch makes of such a record bounds nothing
// (TestFirstByteTLS13ForgedRecordFailsRead).
type decrypter interface {
	decrypt(dst, nonce, ct []byte) []byte
}

// gcmStream is the counter mode under AES-GCM (NIST SP 800-38D: the first
// block of data is counter 2).
type gcmStream struct{ block cipher.Block }

func (g gcmStream) decrypt(dst, nonce, ct []byte) []byte {
	var iv [16]byte
	copy(iv[:], nonce)
	iv[15] = 2
	out := append(dst[:0], ct...)
	cipher.NewCTR(g.block, iv[:]).XORKeyStream(out, out)
	return out
}

// update moves to the next traffic secret (a KeyUpdate, RFC 8446 §7.2).
func (k *recordKeys) update() error {
	next, err := expandLabel(k.hash, k.secret, "traffic upd", len(k.secret))
	if err != nil {
		return err
	}
	return k.setSecret(next)
}

// open decrypts one record body into dst and returns the inner content
// and its type (RFC 8446 §5.2). ok is false when the record is too short
// or all padding.
func (k *recordKeys) open(dst []byte, body []byte) (content []byte, typ byte, ok bool) {
	k.nonce = k.iv
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], k.seq)
	subtle.XORBytes(k.nonce[4:], k.nonce[4:], seq[:])
	if len(body) < tagLen {
		return nil, 0, false
	}
	k.seq++
	plain := k.dec.decrypt(dst[:0], k.nonce[:], body[:len(body)-tagLen])
	i := len(plain) - 1
	for i >= 0 && plain[i] == 0 {
		i-- // padding
	}
	if i < 0 {
		return nil, 0, false
	}
	return plain[:i], plain[i], true
}

// expandLabel is HKDF-Expand-Label with an empty context (RFC 8446 §7.1).
func expandLabel(h func() hash.Hash, secret []byte, label string, n int) ([]byte, error) {
	var info [2 + 1 + 6 + 16 + 1]byte
	b := append(info[:0], byte(n>>8), byte(n), byte(6+len(label)))
	b = append(b, "tls13 "...)
	b = append(b, label...)
	b = append(b, 0)
	return hkdf.Expand(h, secret, string(b), n)
}

// tagLen is the length of the AEAD tag that ends every TLS 1.3 record.
const tagLen = 16

// chacha20 is the cipher of RFC 8439 §2.4, which the standard library uses
// inside crypto/tls but does not export.
type chacha20 struct{ key [8]uint32 }

func newChaCha20(key []byte) *chacha20 {
	c := &chacha20{}
	for i := range c.key {
		c.key[i] = binary.LittleEndian.Uint32(key[4*i:])
	}
	return c
}

// decrypt XORs ct with the keystream from block 1 (block 0 keys the
// Poly1305 tag, RFC 8439 §2.8).
func (c *chacha20) decrypt(dst, nonce, ct []byte) []byte {
	out := append(dst[:0], ct...)
	var block [64]byte
	for i, ctr := 0, uint32(1); i < len(out); i, ctr = i+64, ctr+1 {
		c.block(&block, ctr, nonce)
		subtle.XORBytes(out[i:], out[i:], block[:])
	}
	return out
}

// block computes one ChaCha20 keystream block (RFC 8439 §2.3).
func (c *chacha20) block(out *[64]byte, counter uint32, nonce []byte) {
	var s, x [16]uint32
	s[0], s[1], s[2], s[3] = 0x61707865, 0x3320646e, 0x79622d32, 0x6b206574
	copy(s[4:12], c.key[:])
	s[12] = counter
	s[13] = binary.LittleEndian.Uint32(nonce[0:])
	s[14] = binary.LittleEndian.Uint32(nonce[4:])
	s[15] = binary.LittleEndian.Uint32(nonce[8:])
	x = s
	qr := func(a, b, c, d int) {
		x[a] += x[b]
		x[d] = bits.RotateLeft32(x[d]^x[a], 16)
		x[c] += x[d]
		x[b] = bits.RotateLeft32(x[b]^x[c], 12)
		x[a] += x[b]
		x[d] = bits.RotateLeft32(x[d]^x[a], 8)
		x[c] += x[d]
		x[b] = bits.RotateLeft32(x[b]^x[c], 7)
	}
	for range 10 {
		qr(0, 4, 8, 12)
		qr(1, 5, 9, 13)
		qr(2, 6, 10, 14)
		qr(3, 7, 11, 15)
		qr(0, 5, 10, 15)
		qr(1, 6, 11, 12)
		qr(2, 7, 8, 13)
		qr(3, 4, 9, 14)
	}
	for i := range x {
		binary.LittleEndian.PutUint32(out[4*i:], x[i]+s[i])
	}
}

// clientRandomLabel is the key log label of a TLS 1.2 master secret.
const clientRandomLabel = "CLIENT_RANDOM "

// cbcKeys tells the content length of the server's TLS 1.2 CBC records,
// which their length alone does not (padding hides up to a block): the
// last block, decrypted with the server write key, gives the padding
// length (RFC 5246 §6.2.3.2). The MAC is not checked; tls.Conn does.
type cbcKeys struct {
	block  cipher.Block
	macLen int
}

// newCBCKeys derives the server write key of a TLS 1.2 CBC suite from the
// master secret and the two hellos' randoms (RFC 5246 §6.3). ok is false
// for any other suite or input.
func newCBCKeys(suite uint16, master, clientRandom, serverRandom []byte) (*cbcKeys, bool) {
	var keyLen, macLen int
	newBlock := aes.NewCipher
	switch suite {
	case tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA:
		keyLen, macLen = 16, 20
	case tls.TLS_RSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA:
		keyLen, macLen = 32, 20
	case tls.TLS_RSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256:
		keyLen, macLen = 16, 32
	case tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA:
		keyLen, macLen, newBlock = 24, 20, des.NewTripleDESCipher
	default:
		return nil, false
	}
	if len(master) != 48 || len(clientRandom) != 32 || len(serverRandom) != 32 {
		return nil, false
	}
	seed := append(append([]byte("key expansion"), serverRandom...), clientRandom...)
	kb := prf12(master, seed, 2*macLen+2*keyLen)
	block, err := newBlock(kb[2*macLen+keyLen:])
	if err != nil {
		return nil, false
	}
	return &cbcKeys{block: block, macLen: macLen}, true
}

// contentLen is the plaintext length of a CBC record body (explicit IV,
// then the ciphertext), or -1 when the body is malformed.
func (k *cbcKeys) contentLen(body []byte) int {
	bs := k.block.BlockSize()
	if len(body) < 2*bs || len(body)%bs != 0 {
		return -1
	}
	var last [16]byte
	k.block.Decrypt(last[:bs], body[len(body)-bs:])
	pad := int(last[bs-1] ^ body[len(body)-bs-1])
	return len(body) - bs - k.macLen - pad - 1
}

// prf12 is the TLS 1.2 PRF with SHA-256 (RFC 5246 §5), the PRF of every
// CBC suite crypto/tls offers.
func prf12(secret, seed []byte, n int) []byte {
	out := make([]byte, 0, n+sha256.Size)
	a := seed
	for len(out) < n {
		h := hmac.New(sha256.New, secret)
		h.Write(a)
		a = h.Sum(nil)
		h.Reset()
		h.Write(a)
		h.Write(seed)
		out = h.Sum(out)
	}
	return out[:n]
}
