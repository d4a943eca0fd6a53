package channels_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/internal/certs"
)

func tlsPair(t *testing.T, serverCA, clientCA string) (net.Listener, channels.Dialer) {
	t.Helper()
	a, err := certs.Make(t.TempDir(), []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := certs.Make(t.TempDir(), []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pick := func(which string) string {
		if which == "b" {
			return b.CA
		}
		return a.CA
	}
	scfg, err := channels.ServerTLS(channels.TLSFiles{Cert: a.ServerCert, Key: a.ServerKey, CA: pick(serverCA)})
	if err != nil {
		t.Fatal(err)
	}
	ccfg, err := channels.ClientTLS(channels.TLSFiles{Cert: a.ClientCert, Key: a.ClientKey, CA: pick(clientCA)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := channels.Listen("tcp:127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	addr := channels.Addr(ln.Addr())
	d, err := channels.NewDialer(addr)
	if err != nil {
		t.Fatal(err)
	}
	td, err := channels.TLSDialer(d, addr, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	return channels.TLSListener(ln, scfg, func(_ net.Addr, err error) { refusals <- err }), td
}

// refusals receives what the test listeners refused.
var refusals = make(chan error, 16)

// TestTLS: a stream over mutual TLS 1.3 carries bytes both ways.
func TestTLS(t *testing.T) {
	ln, d := tlsPair(t, "a", "a")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(c, io.LimitReader(c, 5))
		done <- err
	}()
	c, err := d.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("hello"))
	got := make([]byte, 5)
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, []byte("hello")) {
		t.Fatalf("%q %v", got, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestTLSOtherCA: a client whose certificate another CA signed is
// refused by the listener (which goes on accepting), and a server another
// CA signed by the client.
func TestTLSOtherCA(t *testing.T) {
	for _, tc := range []struct{ server, client, want string }{
		{"b", "a", "certificate"}, // the server trusts only CA b: the client's cert is refused
		{"a", "b", "certificate signed by unknown authority"},
	} {
		ln, d := tlsPair(t, tc.server, tc.client)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		acc := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				c.Close()
			}
			acc <- err
		}()
		c, err := d.Dial(ctx)
		if err == nil {
			c.Close()
		}
		cancel()
		if !errors.Is(err, channels.ErrTLS) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("server CA %s, client CA %s: dial: %v, want %q", tc.server, tc.client, err, tc.want)
		}
		select {
		case rerr := <-refusals:
			if !errors.Is(rerr, channels.ErrTLS) {
				t.Errorf("server CA %s, client CA %s: refused: %v, want ErrTLS", tc.server, tc.client, rerr)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("server CA %s, client CA %s: the listener reported no refusal", tc.server, tc.client)
		}
		ln.Close()
		if err := <-acc; !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v", err)
		}
	}
}

// TestTLSSilentPeer: a peer that connects and says nothing holds up no
// one else, and is dropped after the handshake timeout.
func TestTLSSilentPeer(t *testing.T) {
	ln, d := tlsPair(t, "a", "a")
	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		got <- err
	}()
	c, err := d.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("a silent peer held up Accept")
	}
}

// TestTLSFiles: missing or unusable files are clear errors.
func TestTLSFiles(t *testing.T) {
	a, err := certs.Make(t.TempDir(), []string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		f    channels.TLSFiles
		want string
	}{
		{channels.TLSFiles{}, "need a certificate, its key and a CA"},
		{channels.TLSFiles{Cert: a.ServerCert, Key: a.ClientKey, CA: a.CA}, "private key does not match"},
		{channels.TLSFiles{Cert: a.ServerCert, Key: a.ServerKey, CA: a.ServerKey}, "holds no PEM certificate"},
		{channels.TLSFiles{Cert: a.ServerCert, Key: a.ServerKey, CA: "/nonexistent"}, "no such file"},
	} {
		_, err := channels.ServerTLS(tc.f)
		if !errors.Is(err, channels.ErrTLS) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.f, err, tc.want)
		}
	}
}

// TestLimit: streams of a limited dialer write at the cap together.
func TestLimit(t *testing.T) {
	ln, err := channels.Listen("tcp:127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, _ := channels.NewDialer(channels.Addr(ln.Addr()))
	const rate, total = 4 << 20, 3 << 20 // 3 MiB at 4 MiB/s over two streams
	ld := channels.Limit(d, rate)
	go func() {
		for range 2 {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	errs := make(chan error, 2)
	for range 2 {
		c, err := ld.Dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			defer c.Close()
			_, err := c.Write(make([]byte, total/2))
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// The first burst (0.4 MiB) is free: at least (3-0.4)/4 s.
	if el := time.Since(start); el < 600*time.Millisecond {
		t.Errorf("3 MiB at 4 MiB/s took %v", el)
	}
}
