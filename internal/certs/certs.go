// Package certs makes a private CA and certificates signed by it for
// pagewire's mutual TLS: for tests, and for operators trying the
// encrypted link ('pagewire certs').
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Files are the PEM files Make wrote into a directory.
type Files struct {
	CA                    string // ca.pem: the CA's certificate
	ServerCert, ServerKey string // server.pem, server-key.pem
	ClientCert, ClientKey string // client.pem, client-key.pem
}

// Make writes a new CA and a server and a client certificate signed by
// it into dir, valid for validity; the server's names hosts (DNS names or
// IP addresses).
func Make(dir string, hosts []string, validity time.Duration) (Files, error) {
	f, _, err := MakeClients(dir, hosts, validity, 0)
	return f, err
}

// Pair is a certificate and its key.
type Pair struct{ Cert, Key string }

// MakeClients is Make, and extra more client certificates signed by the
// same CA (client-2.pem + client-2-key.pem, ...): other identities that
// the CA vouches for, as a test of who may do what needs.
func MakeClients(dir string, hosts []string, validity time.Duration, extra int) (f Files, others []Pair, err error) {
	f = Files{
		CA:         filepath.Join(dir, "ca.pem"),
		ServerCert: filepath.Join(dir, "server.pem"), ServerKey: filepath.Join(dir, "server-key.pem"),
		ClientCert: filepath.Join(dir, "client.pem"), ClientKey: filepath.Join(dir, "client-key.pem"),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return f, nil, err
	}
	now := time.Now().Add(-time.Minute)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return f, nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "pagewire CA"},
		NotBefore: now, NotAfter: now.Add(validity),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return f, nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return f, nil, err
	}
	if err := writePEM(f.CA, "CERTIFICATE", caDER, 0o644); err != nil {
		return f, nil, err
	}
	type leafSpec struct {
		cert, key, name string
		usage           x509.ExtKeyUsage
	}
	leaves := []leafSpec{
		{f.ServerCert, f.ServerKey, "pagewire server", x509.ExtKeyUsageServerAuth},
		{f.ClientCert, f.ClientKey, "pagewire client", x509.ExtKeyUsageClientAuth},
	}
	for i := 2; i < extra+2; i++ {
		p := Pair{filepath.Join(dir, fmt.Sprintf("client-%d.pem", i)), filepath.Join(dir, fmt.Sprintf("client-%d-key.pem", i))}
		others = append(others, p)
		leaves = append(leaves, leafSpec{p.Cert, p.Key, fmt.Sprintf("pagewire client %d", i), x509.ExtKeyUsageClientAuth})
	}
	for _, leaf := range leaves {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return f, nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(), Subject: pkix.Name{CommonName: leaf.name},
			NotBefore: now, NotAfter: now.Add(validity),
			// Key encipherment too: QEMU's TLS (GnuTLS) refuses a
			// certificate without it, and the same files may serve
			// QEMU's own tls-creds-x509.
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{leaf.usage},
		}
		if leaf.usage == x509.ExtKeyUsageServerAuth {
			for _, h := range hosts {
				if ip := net.ParseIP(h); ip != nil {
					tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
				} else {
					tmpl.DNSNames = append(tmpl.DNSNames, h)
				}
			}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return f, nil, err
		}
		kb, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return f, nil, err
		}
		if err := writePEM(leaf.cert, "CERTIFICATE", der, 0o644); err != nil {
			return f, nil, err
		}
		if err := writePEM(leaf.key, "PRIVATE KEY", kb, 0o600); err != nil {
			return f, nil, err
		}
	}
	return f, others, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, mode); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}
