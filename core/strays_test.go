package core_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/sdk"
)

// strayBound is how long a transfer among strays may take: far below the
// handshake timeout (30s) that an idle stray used to run into.
const strayBound = 15 * time.Second

// sendImage moves img through d and checks what the receiver got.
func sendImage(t *testing.T, ctx context.Context, d core.Dialer, rc <-chan result, img []byte, during func()) {
	t.Helper()
	s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: img}}, core.SenderConfig{Channels: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SendBlock("pc.ram"); err != nil {
		t.Fatal(err)
	}
	if during != nil {
		during()
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Close(); err != nil {
		t.Fatalf("sender: %v", err)
	}
	res := wait(t, rc)
	if res.err != nil {
		t.Fatalf("receiver: %v", res.err)
	}
	if !bytes.Equal(blockData(t, res.mem, "pc.ram"), img) {
		t.Fatal("received image differs")
	}
}

func strayImage() []byte {
	img := make([]byte, 8<<20)
	for i := range img {
		img[i] = byte(i>>12) | 1
	}
	return img
}

// TestStrays: 2,000 idle connections, junk (HTTP, a TLS hello, one that
// closes at once) and a stray that hangs up in the middle of the
// transfer neither delay nor fail a real sender on the same listener.
func TestStrays(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*strayBound)
	defer cancel()
	ln, d := tcpTransport(t)
	addr := ln.Addr().String()
	rc := receive(ctx, ln, core.ReceiverConfig{})
	var strays []net.Conn
	defer func() {
		for _, c := range strays {
			c.Close()
		}
	}()
	dial := func(junk string) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("stray %d: %v", len(strays), err)
		}
		if junk != "" {
			c.Write([]byte(junk))
		}
		strays = append(strays, c)
		return c
	}
	for range 2000 {
		dial("")
	}
	dial("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	dial("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
	dial("").Close()
	late := dial("")

	start := time.Now()
	sendImage(t, ctx, d, rc, strayImage(), func() { late.Close() })
	if el := time.Since(start); el > strayBound {
		t.Errorf("the transfer took %v among strays", el)
	}
}

// TestUnixProbe: a second receiver that finds the socket path taken
// probes it and gives up; the first receiver's transfer goes on.
func TestUnixProbe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*strayBound)
	defer cancel()
	addr := "unix:" + filepath.Join(t.TempDir(), "pw.sock")
	ln, err := channels.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	rc := receive(ctx, ln, core.ReceiverConfig{})
	if ln2, err := channels.Listen(addr); err == nil {
		ln2.Close()
		t.Fatal("a second listener on a live socket")
	} else if !strings.Contains(err.Error(), "already listening") {
		t.Errorf("second listener: %v", err)
	}
	d, err := channels.NewDialer(addr)
	if err != nil {
		t.Fatal(err)
	}
	sendImage(t, ctx, d, rc, strayImage(), nil)
}

// TestFinishFails: a receiver whose Finish fails (the image cannot be
// put in place) fails the transfer on both ends; the sender does not
// hear success.
func TestFinishFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ln, d := tcpTransport(t)
	finished := false
	rc := receive(ctx, ln, core.ReceiverConfig{Finish: func(mem core.Memory) error {
		if !bytes.Equal(blockData(t, mem, "pc.ram"), strayImage()) {
			t.Error("Finish ran before every page landed")
		}
		finished = true
		return errors.New("rename out.img: file exists")
	}})
	s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: strayImage()}}, core.SenderConfig{Channels: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SendBlock("pc.ram"); err != nil {
		t.Fatal(err)
	}
	_, err = s.Close()
	var re *core.RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Msg, "finishing the destination: rename out.img: file exists") {
		t.Errorf("sender: %v, want the receiver's failure to finish", err)
	}
	if res := wait(t, rc); res.err == nil || !finished {
		t.Errorf("receiver: %v (Finish ran: %v)", res.err, finished)
	}
}

// sendSetupFails is nocomp whose send setup fails on channel 1 (of 3):
// after the receiver accepted the transfer, before channel 2 connects.
type sendSetupFails struct{ sdk.Method }

func (m sendSetupFails) NewSender(ch int, o sdk.Options) (sdk.Sender, error) {
	if ch == 1 {
		return nil, errors.New("plugin out of memory")
	}
	return m.Method.NewSender(ch, o)
}

// TestSenderSetupFailsAfterAccept: the receiver hears at once, not at its
// handshake timeout, that the sender failed to set up a channel after
// the transfer was accepted.
func TestSenderSetupFailsAfterAccept(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ln, d := tcpTransport(t)
	rc := receive(ctx, ln, core.ReceiverConfig{}) // a 30 s handshake timeout
	start := time.Now()
	_, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: strayImage()}}, core.SenderConfig{Channels: 3, Method: sendSetupFails{core.Nocomp()}})
	if !errors.Is(err, core.ErrMethod) {
		t.Fatalf("sender: %v, want its method's failure", err)
	}
	res := wait(t, rc)
	var re *core.RemoteError
	if !errors.As(res.err, &re) || !errors.Is(res.err, core.ErrMethod) || !strings.Contains(re.Msg, "plugin out of memory") {
		t.Errorf("receiver: %v, want the sender's reason", res.err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("the receiver took %v to hear it", el)
	}
}
