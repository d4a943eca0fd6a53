package vmbus_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pagewire/pagewire/vmbus"
)

// openPair opens relid 1 on a fresh guest-host pair: the guest's end and
// the host's.
func openPair(t *testing.T, cfg vmbus.ChannelConfig) (gch, hch *vmbus.Channel) {
	t.Helper()
	g, h := pair(t, vmbus.GuestConfig{Channel: cfg}, vmbus.HostConfig{Offers: offers(0)})
	ctx := ctxT(t)
	gch, err := g.Open(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gch.Close() })
	hch, err = h.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hch.Close() })
	return gch, hch
}

// waitFor polls cond for up to 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestCloseAfterReaderSawEmptyRing: the guest's end of stream and its
// CLOSECHANNEL both arrive after the host's Read found the ring empty and
// before it acts on that. The Read must look at the ring again: every byte,
// then io.EOF, not ErrPeerGone (TestTwoProcesses failed so under load).
func TestCloseAfterReaderSawEmptyRing(t *testing.T) {
	gch, hch := openPair(t, vmbus.ChannelConfig{})
	var once sync.Once
	hch.OnEmpty(func() {
		once.Do(func() {
			if err := gch.Close(); err != nil {
				t.Error(err)
			}
			waitFor(t, "the host to see CLOSECHANNEL", func() bool { return hch.Failure() != nil })
		})
	})
	src := pattern(3, 100_000)
	if _, err := gch.Write(src); err != nil {
		t.Fatal(err)
	}
	hch.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(hch)
	if err != nil || !bytes.Equal(got, src) {
		t.Fatalf("read %d bytes, %v; want the %d bytes written, then io.EOF", len(got), err, len(src))
	}
	if !errors.Is(hch.Failure(), vmbus.ErrPeerGone) {
		t.Fatalf("the close did not reach the host first: %v", hch.Failure())
	}
}

// TestCloseWhileWriteReturns: Close called while a Write that has written
// all its bytes still holds the write lock waits for it and sends the end
// of stream: the peer reads every byte, then io.EOF, not ErrPeerGone (Close
// used to skip the end of stream whenever a Write held the lock).
func TestCloseWhileWriteReturns(t *testing.T) {
	gch, hch := openPair(t, vmbus.ChannelConfig{})
	wrote := make(chan struct{})
	gch.OnWrote(func(stopping <-chan struct{}) {
		close(wrote)
		select {
		case <-stopping:
		case <-time.After(10 * time.Second):
			t.Error("Close did not stop the Write")
		}
	})
	src := pattern(4, 100_000)
	werr := make(chan error, 1)
	go func() {
		_, err := gch.Write(src)
		werr <- err
	}()
	<-wrote
	if err := gch.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	hch.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(hch)
	if err != nil || !bytes.Equal(got, src) {
		t.Fatalf("read %d bytes, %v; want the %d bytes written, then io.EOF", len(got), err, len(src))
	}
}

// TestCloseStopsBlockedWrite: Close does not wait for a Write blocked on a
// full ring. The Write returns net.ErrClosed; the stream is cut short, so
// no end of stream is sent and the peer reads what is in the ring, then
// ErrPeerGone.
func TestCloseStopsBlockedWrite(t *testing.T) {
	small := vmbus.ChannelConfig{SendSize: 3 * vmbus.PageSize, RecvSize: 3 * vmbus.PageSize}
	gch, hch := openPair(t, small)
	werr := make(chan error, 1)
	go func() {
		_, err := gch.Write(make([]byte, 1<<20)) // many times the ring
		werr <- err
	}()
	waitFor(t, "the Write to start", func() bool { n, _ := hch.In().Readable(); return n > 0 })
	start := time.Now()
	if err := gch.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v", d)
	}
	if err := <-werr; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write: %v, want net.ErrClosed", err)
	}
	hch.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(hch)
	if len(got) == 0 || len(got) >= 1<<20 || !errors.Is(err, vmbus.ErrPeerGone) {
		t.Fatalf("read %d bytes, %v; want part of the stream, then ErrPeerGone", len(got), err)
	}
}
