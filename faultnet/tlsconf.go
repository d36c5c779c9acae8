package faultnet

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

// SelfSigned returns a matching pair of TLS configs for tests: server holds
// a fresh self-signed ECDSA certificate valid for "localhost", 127.0.0.1 and
// ::1; client trusts exactly that certificate. Errors are tb.Fatal. Each
// call makes a new certificate; the configs are independent copies.
func SelfSigned(tb testing.TB) (server, client *tls.Config) {
	tb.Helper()
	server, client, err := NewSelfSigned("localhost", "127.0.0.1", "::1")
	if err != nil {
		tb.Fatalf("faultnet: SelfSigned: %v", err)
	}
	return server, client
}

// isDNSName reports whether h is a DNS name a certificate can hold:
// dot-separated labels of 1-63 letters, digits and hyphens (not at either
// end), at most 253 characters; the first label may be "*".
func isDNSName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for i, label := range strings.Split(h, ".") {
		if i == 0 && label == "*" {
			continue
		}
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// NewSelfSigned is SelfSigned for programs without a testing.TB (examples,
// demos): the certificate is valid for hosts, each a DNS name or an IP
// literal, and client trusts only it, with ServerName set to the first host
// when that is a name. At least one host is required; one that is neither
// an IP literal nor a DNS name is an error.
func NewSelfSigned(hosts ...string) (server, client *tls.Config, err error) {
	if len(hosts) == 0 {
		return nil, nil, errors.New("faultnet: NewSelfSigned: no hosts")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "faultnet test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, h := range hosts {
		if net.ParseIP(h) == nil && !isDNSName(h) {
			return nil, nil, fmt.Errorf("faultnet: NewSelfSigned: host %q is neither an IP literal nor a DNS name", h)
		}
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}}
	client = &tls.Config{RootCAs: pool}
	if net.ParseIP(hosts[0]) == nil {
		client.ServerName = hosts[0]
	}
	return server, client, nil
}
