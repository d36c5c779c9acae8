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
	aead   cipher.AEAD
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
		k.aead = newChaCha20Poly1305(key)
		return nil
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	if k.aead, err = cipher.NewGCM(block); err != nil {
		// FIPS 140-only mode (GODEBUG=fips140=only) refuses GCM with
		// nonces of the caller's: decrypt without the tag check. A record
		// forged on the path then decrypts to noise here, and tls.Conn,
		// which checks the tag, fails the Read.
		k.aead = gcmUnchecked{block}
	}
	return nil
}

// gcmUnchecked decrypts AES-GCM records without checking their tag: the
// counter mode under GCM (NIST SP 800-38D: the first block of data is
// counter 2). Only Open is used.
type gcmUnchecked struct{ block cipher.Block }

func (gcmUnchecked) NonceSize() int { return 12 }
func (gcmUnchecked) Overhead() int  { return 16 }

func (gcmUnchecked) Seal([]byte, []byte, []byte, []byte) []byte {
	panic("dial: gcmUnchecked.Seal is not implemented")
}

func (g gcmUnchecked) Open(dst, nonce, sealed, _ []byte) ([]byte, error) {
	var iv [16]byte
	copy(iv[:], nonce)
	iv[15] = 2
	out := append(dst[:0], sealed[:len(sealed)-16]...)
	cipher.NewCTR(g.block, iv[:]).XORKeyStream(out, out)
	return out, nil
}

// update moves to the next traffic secret (a KeyUpdate, RFC 8446 §7.2).
func (k *recordKeys) update() error {
	next, err := expandLabel(k.hash, k.secret, "traffic upd", len(k.secret))
	if err != nil {
		return err
	}
	return k.setSecret(next)
}

// open decrypts and authenticates one record (header hdr, body) into dst
// and returns the inner content and its type (RFC 8446 §5.2). ok is false
// when the record does not open with these keys.
func (k *recordKeys) open(dst []byte, hdr, body []byte) (content []byte, typ byte, ok bool) {
	k.nonce = k.iv
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], k.seq)
	subtle.XORBytes(k.nonce[4:], k.nonce[4:], seq[:])
	if len(body) < k.aead.Overhead() {
		return nil, 0, false
	}
	plain, err := k.aead.Open(dst[:0], k.nonce[:], body, hdr)
	if err != nil {
		return nil, 0, false
	}
	k.seq++
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

// chacha20Poly1305 is the AEAD of RFC 8439 §2.8, which the standard
// library uses inside crypto/tls but does not export. Only Open is used.
type chacha20Poly1305 struct{ key [8]uint32 }

func newChaCha20Poly1305(key []byte) *chacha20Poly1305 {
	c := &chacha20Poly1305{}
	for i := range c.key {
		c.key[i] = binary.LittleEndian.Uint32(key[4*i:])
	}
	return c
}

func (c *chacha20Poly1305) NonceSize() int { return 12 }
func (c *chacha20Poly1305) Overhead() int  { return 16 }

func (c *chacha20Poly1305) Seal([]byte, []byte, []byte, []byte) []byte {
	panic("dial: chacha20Poly1305.Seal is not implemented")
}

var errOpen = errors.New("dial: record authentication failed")

func (c *chacha20Poly1305) Open(dst, nonce, sealed, ad []byte) ([]byte, error) {
	ct, tag := sealed[:len(sealed)-16], sealed[len(sealed)-16:]
	var block [64]byte
	c.block(&block, 0, nonce)
	var p poly1305
	p.init(block[:32])
	p.write(ad)
	p.pad()
	p.write(ct)
	p.pad()
	var lens [16]byte
	binary.LittleEndian.PutUint64(lens[:], uint64(len(ad)))
	binary.LittleEndian.PutUint64(lens[8:], uint64(len(ct)))
	p.write(lens[:])
	var sum [16]byte
	p.sum(&sum)
	if subtle.ConstantTimeCompare(sum[:], tag) != 1 {
		return nil, errOpen
	}
	out := append(dst[:0], ct...)
	for i, ctr := 0, uint32(1); i < len(out); i, ctr = i+64, ctr+1 {
		c.block(&block, ctr, nonce)
		subtle.XORBytes(out[i:], out[i:], block[:])
	}
	return out, nil
}

// block computes one ChaCha20 keystream block (RFC 8439 §2.3).
func (c *chacha20Poly1305) block(out *[64]byte, counter uint32, nonce []byte) {
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

// poly1305 is the one-time authenticator of RFC 8439 §2.5, with the
// accumulator in three 64-bit limbs (h2 holds the bits above 128).
type poly1305 struct {
	r0, r1     uint64
	s0, s1     uint64
	h0, h1, h2 uint64
	buf        [16]byte
	n          int
}

func (p *poly1305) init(key []byte) {
	p.r0 = binary.LittleEndian.Uint64(key[0:]) & 0x0FFFFFFC0FFFFFFF
	p.r1 = binary.LittleEndian.Uint64(key[8:]) & 0x0FFFFFFC0FFFFFFC
	p.s0 = binary.LittleEndian.Uint64(key[16:])
	p.s1 = binary.LittleEndian.Uint64(key[24:])
}

func (p *poly1305) write(b []byte) {
	if p.n > 0 {
		k := copy(p.buf[p.n:], b)
		p.n += k
		b = b[k:]
		if p.n < 16 {
			return
		}
		p.blockFull(p.buf[:])
		p.n = 0
	}
	for len(b) >= 16 {
		p.blockFull(b[:16])
		b = b[16:]
	}
	p.n = copy(p.buf[:], b)
}

// pad completes a partial block with zeros (the AEAD's padding to 16).
func (p *poly1305) pad() {
	if p.n == 0 {
		return
	}
	clear(p.buf[p.n:])
	p.blockFull(p.buf[:])
	p.n = 0
}

func (p *poly1305) blockFull(m []byte) { p.blockBits(m, 1) }

// blockBits adds a 16-byte block (with the high bit hi set above it) and
// multiplies by r modulo 2^130-5.
func (p *poly1305) blockBits(m []byte, hi uint64) {
	var c uint64
	p.h0, c = bits.Add64(p.h0, binary.LittleEndian.Uint64(m[0:]), 0)
	p.h1, c = bits.Add64(p.h1, binary.LittleEndian.Uint64(m[8:]), c)
	p.h2 += c + hi

	h0r0hi, h0r0lo := bits.Mul64(p.h0, p.r0)
	h1r0hi, h1r0lo := bits.Mul64(p.h1, p.r0)
	h0r1hi, h0r1lo := bits.Mul64(p.h0, p.r1)
	h1r1hi, h1r1lo := bits.Mul64(p.h1, p.r1)
	h2r0 := p.h2 * p.r0
	h2r1 := p.h2 * p.r1

	m1lo, c := bits.Add64(h1r0lo, h0r1lo, 0)
	m1hi, _ := bits.Add64(h1r0hi, h0r1hi, c)
	m2lo, c := bits.Add64(h1r1lo, h2r0, 0)
	m2hi, _ := bits.Add64(h1r1hi, 0, c)

	t0 := h0r0lo
	t1, c := bits.Add64(h0r0hi, m1lo, 0)
	t2, c := bits.Add64(m2lo, m1hi, c)
	t3, _ := bits.Add64(m2hi, h2r1, c)

	// t = t3:t2:t1:t0; h = t mod 2^130-5 = low 130 bits + 5 * (t >> 130).
	p.h0, p.h1, p.h2 = t0, t1, t2&3
	cc0, cc1 := t2&^3, t3 // (t >> 130) * 4
	p.h0, c = bits.Add64(p.h0, cc0, 0)
	p.h1, c = bits.Add64(p.h1, cc1, c)
	p.h2 += c
	cc0 = cc0>>2 | cc1<<62 // (t >> 130)
	cc1 >>= 2
	p.h0, c = bits.Add64(p.h0, cc0, 0)
	p.h1, c = bits.Add64(p.h1, cc1, c)
	p.h2 += c
}

func (p *poly1305) sum(out *[16]byte) {
	if p.n > 0 {
		// The final partial block gets its 1 bit right after the message.
		p.buf[p.n] = 1
		clear(p.buf[p.n+1:])
		p.blockBits(p.buf[:], 0)
		p.n = 0
	}
	// h mod p: subtract p = 2^130-5 if h >= p.
	t0, b := bits.Sub64(p.h0, 0xFFFFFFFFFFFFFFFB, 0)
	t1, b := bits.Sub64(p.h1, 0xFFFFFFFFFFFFFFFF, b)
	_, b = bits.Sub64(p.h2, 3, b)
	h0, h1 := p.h0, p.h1
	if b == 0 {
		h0, h1 = t0, t1
	}
	var c uint64
	h0, c = bits.Add64(h0, p.s0, 0)
	h1, _ = bits.Add64(h1, p.s1, c)
	binary.LittleEndian.PutUint64(out[0:], h0)
	binary.LittleEndian.PutUint64(out[8:], h1)
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
