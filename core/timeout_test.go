package core_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/pagewire/pagewire/core"
)

// slowDialer's connections sleep before every write: a slow link.
type slowDialer struct {
	core.Dialer
	pause time.Duration
}

func (d slowDialer) Dial(ctx context.Context) (net.Conn, error) {
	c, err := d.Dialer.Dial(ctx)
	if err != nil {
		return nil, err
	}
	return slowConn{c, d.pause}, nil
}

type slowConn struct {
	net.Conn
	pause time.Duration
}

func (c slowConn) Write(b []byte) (int, error) {
	time.Sleep(c.pause)
	return c.Conn.Write(b)
}

// TestTimeoutBoundsStallsNotTransfers: a receiver's Timeout of 300ms
// does not fail a healthy transfer that runs for seconds with its
// control channel idle (no sync point until Close), and does fail a
// transfer in which nothing moves for longer, on both ends, with an
// error that matches os.ErrDeadlineExceeded.
func TestTimeoutBoundsStallsNotTransfers(t *testing.T) {
	const timeout = 300 * time.Millisecond
	img := make([]byte, 16<<20)
	for i := range img {
		img[i] = byte(i>>12) | 1
	}
	t.Run("healthy", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ln, d := tcpTransport(t)
		rc := receive(ctx, ln, core.ReceiverConfig{Timeout: timeout})
		// 32 packets of 512 KiB, each written in two pieces after 50ms
		// each, on 2 channels: about 1.6s of steady traffic.
		s, err := core.NewSender(ctx, slowDialer{d, 50 * time.Millisecond}, core.Blocks{{Name: "pc.ram", Data: img}}, core.SenderConfig{Channels: 2})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := s.SendBlock("pc.ram"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Close(); err != nil {
			t.Fatalf("sender: %v", err)
		}
		res := wait(t, rc)
		if res.err != nil {
			t.Fatalf("receiver after %v: %v", time.Since(start), res.err)
		}
		if el := time.Since(start); el < 3*timeout {
			t.Fatalf("the transfer took %v: too short to show anything", el)
		}
		if !bytes.Equal(blockData(t, res.mem, "pc.ram"), img) {
			t.Fatal("received image differs")
		}
	})
	t.Run("stalled", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ln, d := tcpTransport(t)
		rc := receive(ctx, ln, core.ReceiverConfig{Timeout: timeout})
		s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: img}}, core.SenderConfig{Channels: 2})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SendBlock("pc.ram"); err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		res := wait(t, rc) // the sender says nothing more
		el := time.Since(start)
		if !errors.Is(res.err, os.ErrDeadlineExceeded) || errors.Is(res.err, core.ErrPeerGone) {
			t.Errorf("receiver: %v, want a stall (os.ErrDeadlineExceeded), not a hang-up", res.err)
		}
		if el < timeout || el > 10*timeout {
			t.Errorf("receiver gave up after %v, want about %v", el, timeout)
		}
		_, err = s.Close()
		var re *core.RemoteError
		if !errors.As(err, &re) || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("sender: %v, want the receiver's stall", err)
		}
	})
}

// TestSenderStall: a sender whose receiver stops reading (its OnSync
// hook holds every channel) fails within its Timeout as a stall that
// matches os.ErrDeadlineExceeded, not as a peer that hung up.
func TestSenderStall(t *testing.T) {
	img := make([]byte, 32<<20)
	for i := range img {
		img[i] = byte(i>>12) | 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ln, d := tcpTransport(t)
	release := make(chan struct{})
	rc := receive(ctx, ln, core.ReceiverConfig{OnSync: func(*core.SyncPoint) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}})
	s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: img}}, core.SenderConfig{Channels: 2, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SendBlock("pc.ram"); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil { // the receiver parks at this sync point
		t.Fatal(err)
	}
	start := time.Now()
	err = s.SendBlock("pc.ram")
	if err == nil {
		err = s.Sync()
	}
	el := time.Since(start)
	close(release)
	s.Close()
	wait(t, rc)
	if !errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, core.ErrPeerGone) {
		t.Errorf("sender: %v, want a stall", err)
	}
	if el > 10*time.Second {
		t.Errorf("the sender noticed after %v", el)
	}
}
