package core_test

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/internal/certs"
)

// TestTLSPapercuts: the certificates 'pagewire certs' makes work over a
// unix socket; a plaintext sender on a TLS receiver, and a TLS sender on
// a plaintext receiver, each fail at once and say why, and the
// receivers go on waiting for a real sender.
func TestTLSPapercuts(t *testing.T) {
	dir := t.TempDir()
	f, err := certs.Make(dir, []string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	server, err := channels.ServerTLS(channels.TLSFiles{Cert: f.ServerCert, Key: f.ServerKey, CA: f.CA})
	if err != nil {
		t.Fatal(err)
	}
	client, err := channels.ClientTLS(channels.TLSFiles{Cert: f.ClientCert, Key: f.ClientKey, CA: f.CA})
	if err != nil {
		t.Fatal(err)
	}
	img := strayImage()
	blocks := core.Blocks{{Name: "pc.ram", Data: img}}

	t.Run("unix socket", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		addr := "unix:" + filepath.Join(t.TempDir(), "pw.sock")
		ln, err := channels.Listen(addr)
		if err != nil {
			t.Fatal(err)
		}
		rc := receive(ctx, channels.TLSListener(ln, server, nil), core.ReceiverConfig{})
		plain, err := channels.NewDialer(addr)
		if err != nil {
			t.Fatal(err)
		}
		// Plaintext first: refused at once, by the listener, in words.
		start := time.Now()
		_, err = core.NewSender(ctx, plain, blocks, core.SenderConfig{Channels: 2})
		var re *core.RemoteError
		if !errors.As(err, &re) || !strings.Contains(re.Msg, "requires TLS") || time.Since(start) > 5*time.Second {
			t.Errorf("plaintext sender on a TLS receiver: %v after %v", err, time.Since(start))
		}
		// Then TLS, with the server certificate of 'pagewire certs'.
		d, err := channels.TLSDialer(plain, addr, client)
		if err != nil {
			t.Fatal(err)
		}
		sendImage(t, ctx, d, rc, img, nil)
	})

	t.Run("TLS sender, plaintext receiver", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ln, plain := tcpTransport(t)
		rc := receive(ctx, ln, core.ReceiverConfig{})
		d, err := channels.TLSDialer(plain, "tcp:"+ln.Addr().String(), client)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = core.NewSender(ctx, d, blocks, core.SenderConfig{Channels: 2})
		if !errors.Is(err, channels.ErrTLS) || !strings.Contains(err.Error(), "does not speak TLS") || time.Since(start) > 5*time.Second {
			t.Errorf("TLS sender on a plaintext receiver: %v after %v", err, time.Since(start))
		}
		sendImage(t, ctx, plain, rc, img, nil)
	})
}

// TestWrongPeer: a sender pointed at an HTTP server says so at once,
// rather than reading "HTTP/" as a 1.4 GB message.
func TestWrongPeer(t *testing.T) {
	ln, d := tcpTransport(t)
	done := make(chan struct{})
	defer func() { ln.Close(); <-done }()
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
		io.Copy(io.Discard, c) // until the sender hangs up
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: make([]byte, 1<<20)}}, core.SenderConfig{})
	if !errors.Is(err, core.ErrBadControl) || !strings.Contains(err.Error(), "the peer is an HTTP server") {
		t.Errorf("sender: %v", err)
	}
}
