package vmbus_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/pagewire/pagewire/vmbus"
)

// The peer owns half of the ring: every lie it can tell through the header
// or a descriptor is a specific *ProtocolError, leaves the ring untouched
// (read_index not advanced), and is reported the same way by every read
// form.
func TestHostileReader(t *testing.T) {
	const size = 8192
	const d = size - vmbus.HeaderSize
	type setup struct {
		g     *rig
		start uint32 // where the packet under test begins
		w     uint32 // write_index after the honest writes
	}
	// honest writes one 40-byte packet (64 bytes with descriptor, padding
	// and trailer) at start.
	honest := func(t *testing.T, start uint32) setup {
		g := newRig(t, size, start, vmbus.Config{})
		mustWrite(t, g.ring, 1, pattern(1, 40))
		return setup{g, start, g.writeIndex()}
	}
	desc := func(s setup, field int, v uint16) { // descriptor u16 field at byte offset field
		for i := range 2 {
			s.g.mem[vmbus.HeaderSize+int((s.start+uint32(field+i))%d)] = byte(v >> (8 * i))
		}
	}
	for _, tc := range []struct {
		name    string
		start   uint32
		corrupt func(setup)
		err     error
		field   string
	}{
		{"write_index past the data area", 0, func(s setup) { s.g.setWord(0, d) }, vmbus.ErrBadIndex, "write_index"},
		{"write_index huge", 0, func(s setup) { s.g.setWord(0, 0xfffffff8) }, vmbus.ErrBadIndex, "write_index"},
		{"write_index unaligned", 0, func(s setup) { s.g.setWord(0, s.w+4) }, vmbus.ErrBadIndex, "write_index"},
		{"write_index behind a batch being read", 0, func(s setup) {
			mustWrite(t, s.g.ring, 2, pattern(2, 40))
			if _, _, err := s.g.ring.Next(make([]byte, 64)); err != nil { // read, not committed
				t.Fatal(err)
			}
			s.g.setWord(0, 32)
		}, vmbus.ErrBadIndex, "write_index"},
		{"unread packet taken back", 0, func(s setup) { s.g.setWord(0, 0) }, vmbus.ErrWouldBlock, ""},
		{"8 bytes published", 0, func(s setup) { s.g.setWord(0, 8) }, vmbus.ErrTruncated, "write_index"},
		{"descriptor only published", 0, func(s setup) { s.g.setWord(0, 16) }, vmbus.ErrTruncated, "len8"},
		{"trailer not published", 0, func(s setup) { s.g.setWord(0, s.w-8) }, vmbus.ErrTruncated, "len8"},
		{"len8 0", 0, func(s setup) { desc(s, 4, 0) }, vmbus.ErrBadDescriptor, "len8"},
		{"len8 1", 0, func(s setup) { desc(s, 4, 1) }, vmbus.ErrBadDescriptor, "len8"},
		{"offset8 0", 0, func(s setup) { desc(s, 2, 0) }, vmbus.ErrBadDescriptor, "offset8"},
		{"offset8 1", 0, func(s setup) { desc(s, 2, 1) }, vmbus.ErrBadDescriptor, "offset8"},
		{"offset8 past len8", 0, func(s setup) { desc(s, 2, 8) }, vmbus.ErrBadDescriptor, "offset8"},
		{"offset8 max", 0, func(s setup) { desc(s, 2, 0xffff) }, vmbus.ErrBadDescriptor, "offset8"},
		{"len8 one unit beyond", 0, func(s setup) { desc(s, 4, 8) }, vmbus.ErrTruncated, "len8"},
		{"len8 max", 0, func(s setup) { desc(s, 4, 0xffff) }, vmbus.ErrTruncated, "len8"},
		{"split descriptor, bad len8", d - 8, func(s setup) { desc(s, 4, 0x4000) }, vmbus.ErrTruncated, "len8"},
		{"split descriptor, bad offset8", d - 8, func(s setup) { desc(s, 2, 9) }, vmbus.ErrBadDescriptor, "offset8"},
		{"split descriptor, published half", d - 8, func(s setup) { s.g.setWord(0, 0) }, vmbus.ErrTruncated, "write_index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := honest(t, tc.start)
			tc.corrupt(s)
			before := bytes.Clone(s.g.mem)
			r := s.g.ring
			at := r.ReaderIndex()
			buf := make([]byte, 4096)
			_, err0 := r.Peek()
			_, _, err1 := r.TryRead(buf)
			_, _, err2 := r.TryReadRaw(buf)
			_, _, err3 := r.Next(buf)
			_, _, _, err4 := r.NextView()
			errs := []error{err0, err1, err2, err3, err4}
			if tc.err == vmbus.ErrWouldBlock {
				for i, err := range errs {
					if err != vmbus.ErrWouldBlock {
						t.Fatalf("read form %d: %v, want ErrWouldBlock", i, err)
					}
				}
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_, _, err5 := r.Read(ctx, buf) // an error, not a wait
				for i, err := range append(errs, err5) {
					var pe *vmbus.ProtocolError
					if !errors.As(err, &pe) || !errors.Is(err, vmbus.ErrProtocol) || !errors.Is(err, tc.err) || pe.Field != tc.field {
						t.Fatalf("read form %d: %v; want a ProtocolError on %s matching %v", i, err, tc.field, tc.err)
					}
					if pe.Offset != at {
						t.Fatalf("error offset %d, want %d", pe.Offset, at)
					}
				}
			}
			if !bytes.Equal(before, s.g.mem) || r.ReaderIndex() != at {
				t.Fatal("a rejected read changed the ring or moved the reader")
			}
			if s.g.toWriter.Count() != 0 {
				t.Fatal("a rejected read signaled")
			}
		})
	}
}

// A packet the ring publishes completely but that exceeds the reader's
// MaxPacketSize.
func TestHostileTooLarge(t *testing.T) {
	g := newRig(t, 16384, 0, vmbus.Config{MaxPacketSize: vmbus.MaxPacketLen})
	mustWrite(t, g.ring, 1, pattern(1, 5000))
	reader, err := vmbus.NewRing(g.mem, vmbus.Config{}) // 4096, as Linux
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = reader.TryRead(make([]byte, 8192))
	var pe *vmbus.ProtocolError
	if !errors.As(err, &pe) || !errors.Is(err, vmbus.ErrTooLarge) || pe.Field != "len8" || g.readIndex() != 0 {
		t.Fatalf("err %v, want ErrTooLarge on len8 and nothing consumed", err)
	}
}

// pending_send_sz is the writer's; a value larger than the ring is a lie
// the reader reports after committing (the packet is delivered).
func TestHostilePending(t *testing.T) {
	g := newRig(t, 8192, 0, vmbus.Config{})
	mustWrite(t, g.ring, 1, pattern(1, 40))
	g.setWord(12, 4097)
	buf := make([]byte, 64)
	d, n, err := g.ring.TryRead(buf)
	var pe *vmbus.ProtocolError
	if !errors.As(err, &pe) || !errors.Is(err, vmbus.ErrBadPending) || pe.Field != "pending_send_sz" || pe.Value != 4097 {
		t.Fatalf("err %v, want ErrBadPending", err)
	}
	checkPacket(t, d, buf[:n], 1, pattern(1, 40))
	if g.readIndex() != 64 || g.toWriter.Count() != 0 {
		t.Fatal("the packet was not consumed, or the lie was signaled")
	}
}

// The writer checks the reader's read_index before every write.
func TestHostileWriter(t *testing.T) {
	const d = 4096
	for _, tc := range []struct {
		name string
		r    func(w uint32) uint32
	}{
		{"past the data area", func(uint32) uint32 { return d }},
		{"huge", func(uint32) uint32 { return 0xfffffff8 }},
		{"unaligned", func(w uint32) uint32 { return w - 4 }},
		{"past write_index", func(w uint32) uint32 { return w + 8 }},
		{"moved back", func(w uint32) uint32 { return d - 8 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newRig(t, 8192, 0, vmbus.Config{})
			mustWrite(t, g.ring, 1, pattern(1, 40))
			mustWrite(t, g.ring, 2, pattern(2, 40))
			mustRead(t, g.ring, 1, pattern(1, 40)) // read_index 64, write_index 128
			g.setWord(4, tc.r(g.writeIndex()))
			before := bytes.Clone(g.mem)
			_, err1 := g.ring.Writable()
			err2 := g.ring.TryWrite(inband(3), pattern(3, 40))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err3 := g.ring.Write(ctx, inband(3), pattern(3, 40))
			for i, err := range []error{err1, err2, err3} {
				var pe *vmbus.ProtocolError
				if !errors.As(err, &pe) || !errors.Is(err, vmbus.ErrBadIndex) || pe.Field != "read_index" {
					t.Fatalf("form %d: %v, want ErrBadIndex on read_index", i, err)
				}
			}
			if !bytes.Equal(before, g.mem) {
				t.Fatal("a refused write changed the ring")
			}
		})
	}
}

// A peer that moves the indices at random while this end runs: every call
// returns a packet that passed the checks or an error, and nothing hangs.
// The peer stores only header words (atomically), so the race detector
// sees no race on the data area.
func TestHostileChurn(t *testing.T) {
	const size = 16384
	mem := make([]byte, size)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := vmbus.HeaderSize; i < size; i++ {
		mem[i] = byte(rng.Uint32())
	}
	// Mostly a chain of valid 64-byte packets, some plausible liars.
	for off := vmbus.HeaderSize; off+16 <= size; off += 64 {
		binary.LittleEndian.PutUint16(mem[off+2:], uint16(2+rng.IntN(3)))
		binary.LittleEndian.PutUint16(mem[off+4:], 7)
		if rng.IntN(8) == 0 {
			binary.LittleEndian.PutUint16(mem[off+4:], uint16(rng.IntN(16)))
		}
	}
	binary.LittleEndian.PutUint32(mem[64:], 1)
	w := (*uint32)(unsafe.Pointer(&mem[0]))
	pend := (*uint32)(unsafe.Pointer(&mem[12]))
	reader, err := vmbus.NewRing(mem, vmbus.Config{PollInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(5, 6))
		for !stop.Load() {
			switch k := rng.IntN(20); {
			case k == 0:
				atomic.StoreUint32(w, rng.Uint32())
			case k == 1:
				atomic.StoreUint32(w, uint32(rng.IntN(size-vmbus.HeaderSize))&^7)
			case k == 2:
				atomic.StoreUint32(pend, uint32(rng.IntN(2*size)))
			default: // mostly a writer going forward
				atomic.StoreUint32(w, (atomic.LoadUint32(w)+uint32(8*rng.IntN(24)))%(size-vmbus.HeaderSize))
			}
			time.Sleep(time.Microsecond)
		}
	})
	buf := make([]byte, 4096)
	deadline := time.Now().Add(300 * time.Millisecond)
	var ok, bad int
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		d, n, err := reader.Read(ctx, buf)
		cancel()
		switch {
		case err == nil || errors.Is(err, vmbus.ErrBadPending):
			if n != d.PayloadLen() || d.Len8 < 2 || d.Offset8 < 2 || d.Offset8 > d.Len8 {
				t.Fatalf("accepted %+v with %d bytes", d, n)
			}
			ok++
		case errors.Is(err, vmbus.ErrProtocol), errors.Is(err, context.DeadlineExceeded):
			bad++
			// Start again at a packet boundary (as if reattached).
			at := uint32(64 * rng.IntN((size-vmbus.HeaderSize)/64))
			atomic.StoreUint32((*uint32)(unsafe.Pointer(&mem[4])), at)
			atomic.StoreUint32(w, at)
			reader.Resync()
		default:
			t.Fatalf("unexpected error %v", err)
		}
		if ri := reader.ReaderIndex(); ri >= size-vmbus.HeaderSize || ri%8 != 0 {
			t.Fatalf("reader index %d", ri)
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d packets passed the checks, %d calls failed", ok, bad)
}
