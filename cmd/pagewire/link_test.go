package main_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/certs"
)

// TestSendRecvTLS sends a corpus image over mutual TLS with a bandwidth
// cap; a sender whose certificate another CA signed is refused, and both
// ends say why.
func TestSendRecvTLS(t *testing.T) {
	src, im := firstImage(t)
	a, err := certs.Make(t.TempDir(), []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := certs.Make(t.TempDir(), []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	server := []string{"--tls-cert", a.ServerCert, "--tls-key", a.ServerKey, "--tls-ca", a.CA}

	out := filepath.Join(t.TempDir(), "out.img")
	r, addr := startRecv(t, append([]string{"recv", "--listen", "tcp:127.0.0.1:0", "--out", out}, server...)...)
	s := start(t, "send", "--to", addr, "--method", "zstd", "--max-bandwidth", "2Gi",
		"--tls-cert", a.ClientCert, "--tls-key", a.ClientKey, "--tls-ca", a.CA, src)
	if code := s.wait(t); code != 0 {
		t.Fatalf("send exited %d: %s", code, s.stderr)
	}
	if code := r.wait(t); code != 0 {
		t.Fatalf("recv exited %d: %s", code, r.stderr)
	}
	if got := fileSHA(t, out); got != im.SHA256 {
		t.Fatalf("received image sha256 %s, want %s", got, im.SHA256)
	}

	// A sender whose certificate another CA signed is refused; the
	// receiver says so and goes on listening for the right one.
	r, addr = startRecv(t, append([]string{"recv", "--listen", "tcp:127.0.0.1:0", "--out", out + "2"}, server...)...)
	s = start(t, "send", "--to", addr, "--tls-cert", b.ClientCert, "--tls-key", b.ClientKey, "--tls-ca", a.CA, src)
	if code := s.wait(t); code != 1 || !strings.Contains(s.stderr.String(), "tls") {
		t.Errorf("send exited %d: %s", code, s.stderr)
	}
	select {
	case <-r.done:
		t.Errorf("recv exited after refusing one connection: %s", r.stderr)
	case <-time.After(time.Second):
		r.cmd.Process.Kill()
		r.wait(t)
		if !strings.Contains(r.stderr.String(), "refused a connection from") {
			t.Errorf("recv did not report the refused handshake: %s", r.stderr)
		}
	}
}
