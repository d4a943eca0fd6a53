package certs

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"testing"
	"time"
)

// TestKeyUsage: the leaf certificates allow key encipherment besides
// digital signatures: QEMU's TLS (GnuTLS) refuses a server certificate
// without it ("usage does not permit key encipherment"), and the lab
// gives the same files to QEMU's tls-creds-x509.
func TestKeyUsage(t *testing.T) {
	f, err := Make(t.TempDir(), []string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{f.ServerCert, f.ClientCert} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			t.Fatalf("%s: no PEM block", path)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		want := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
		if c.KeyUsage&want != want {
			t.Errorf("%s: key usage %#x, want digital signature and key encipherment", path, c.KeyUsage)
		}
	}
}
