package vmbus_test

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pagewire/pagewire/vmbus"
)

func TestNewRingRejects(t *testing.T) {
	aligned := func(n int) []byte { return make([]byte, n) }
	for _, tc := range []struct {
		name string
		mem  []byte
		cfg  vmbus.Config
	}{
		{"empty", nil, vmbus.Config{}},
		{"one page", aligned(4096), vmbus.Config{}},
		{"not pages", aligned(8192 + 8), vmbus.Config{}},
		{"misaligned", aligned(8192 + 8)[4 : 4+8192], vmbus.Config{}},
		{"max packet too small", aligned(8192), vmbus.Config{MaxPacketSize: 8}},
		{"max packet too large", aligned(8192), vmbus.Config{MaxPacketSize: vmbus.MaxPacketLen + 8}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := vmbus.NewRing(tc.mem, tc.cfg); !errors.Is(err, vmbus.ErrInvalid) {
				t.Fatalf("err %v, want ErrInvalid", err)
			}
			if err := vmbus.InitRing(tc.mem); tc.cfg == (vmbus.Config{}) && !errors.Is(err, vmbus.ErrInvalid) {
				t.Fatalf("InitRing: %v, want ErrInvalid", err)
			}
		})
	}
}

// A header with bad indices attaches; the end that would use a bad index
// fails with a ProtocolError naming it, the other end works.
func TestAttachBadIndices(t *testing.T) {
	for _, tc := range []struct {
		name       string
		w, r       uint32
		readField  string // "" = reads work
		writeField string // "" = writes work
	}{
		{"write_index past data", 4096, 0, "write_index", "write_index"},
		{"write_index unaligned", 12, 0, "write_index", "write_index"},
		{"read_index past data", 0, 1 << 31, "read_index", "read_index"},
		{"read_index unaligned", 0, 4, "read_index", "read_index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := make([]byte, 8192)
			if err := vmbus.InitRing(mem); err != nil {
				t.Fatal(err)
			}
			binary.LittleEndian.PutUint32(mem[0:], tc.w)
			binary.LittleEndian.PutUint32(mem[4:], tc.r)
			r, err := vmbus.NewRing(mem, vmbus.Config{})
			if err != nil {
				t.Fatal(err)
			}
			check := func(what string, err error, field string) {
				var pe *vmbus.ProtocolError
				if !errors.As(err, &pe) || !errors.Is(err, vmbus.ErrBadIndex) || pe.Field != field {
					t.Fatalf("%s: %v, want ErrBadIndex on %s", what, err, field)
				}
			}
			_, err = r.Readable()
			check("Readable", err, tc.readField)
			_, _, err = r.TryRead(make([]byte, 64))
			check("TryRead", err, tc.readField)
			_, err = r.Writable()
			check("Writable", err, tc.writeField)
			check("TryWrite", r.TryWrite(inband(1), nil), tc.writeField)
			if binary.LittleEndian.Uint32(mem[0:]) != tc.w || binary.LittleEndian.Uint32(mem[4:]) != tc.r {
				t.Fatal("the ring changed")
			}
		})
	}
}

func TestInitRing(t *testing.T) {
	mem := make([]byte, 3*4096)
	for i := range mem {
		mem[i] = 0xa5
	}
	if err := vmbus.InitRing(mem); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < vmbus.HeaderSize; i++ {
		want := byte(0)
		if i == 64 {
			want = 1 // feature_bits = feat_pending_send_sz
		}
		if mem[i] != want {
			t.Fatalf("header byte %d = %#x, want %#x", i, mem[i], want)
		}
	}
	if mem[vmbus.HeaderSize] != 0xa5 {
		t.Fatal("InitRing touched the data area")
	}
	r, err := vmbus.NewRing(mem, vmbus.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if r.DataSize() != 8192 || r.MaxPacketSize() != vmbus.DefaultMaxPacketSize {
		t.Fatalf("data size %d, max packet %d", r.DataSize(), r.MaxPacketSize())
	}
}

// Packets cross the end of the data area at every 8-byte position of the
// descriptor, the payload and the trailer.
func TestWrapAround(t *testing.T) {
	const size = 8192
	d := uint32(size - vmbus.HeaderSize)
	for start := d - 64; start < d; start += 8 {
		for _, n := range []int{0, 1, 8, 24, 100, 1000} {
			g := newRig(t, size, start, vmbus.Config{})
			p := pattern(int(start)+n, n)
			mustWrite(t, g.ring, 7, p)
			want := (start + uint32(pad8(16+n)+8)) % d
			if g.writeIndex() != want {
				t.Fatalf("start %d, %d bytes: write_index %d, want %d", start, n, g.writeIndex(), want)
			}
			// The trailer names the packet's start.
			tr := (want + d - 8) % d
			if got := binary.LittleEndian.Uint64(g.mem[vmbus.HeaderSize+int(tr):]); got != uint64(start)<<32 {
				t.Fatalf("trailer %#x, want %#x", got, uint64(start)<<32)
			}
			pk, err := g.ring.Peek()
			if err != nil || pk.TransID != 7 || int(pk.Len8)*8 != pad8(16+n) {
				t.Fatalf("peek %+v %v", pk, err)
			}
			mustRead(t, g.ring, 7, p)
			if g.readIndex() != want {
				t.Fatalf("read_index %d, want %d", g.readIndex(), want)
			}
		}
	}
}

// Many packets of random sizes go round a small ring many times.
func TestWrapAroundMany(t *testing.T) {
	g := newRig(t, 8192, 0, vmbus.Config{})
	rng := rand.New(rand.NewPCG(1, 2))
	var sent, recvd uint64
	queue := map[uint64][]byte{}
	wraps := 0
	last := g.writeIndex()
	for recvd < 3000 {
		for {
			p := pattern(int(sent), rng.IntN(1500))
			err := g.ring.TryWrite(inband(sent), p)
			if errors.Is(err, vmbus.ErrWouldBlock) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			queue[sent] = p
			sent++
			if w := g.writeIndex(); w < last {
				wraps++
			}
			last = g.writeIndex()
		}
		for k := rng.IntN(4); k >= 0 && recvd < sent; k-- {
			mustRead(t, g.ring, recvd, queue[recvd])
			delete(queue, recvd)
			recvd++
		}
	}
	if wraps < 100 {
		t.Fatalf("only %d wraps", wraps)
	}
}

// The ring never becomes completely full (spec 1.3).
func TestNeverFull(t *testing.T) {
	const size = 8192
	d := size - vmbus.HeaderSize
	t.Run("largest", func(t *testing.T) {
		g := newRig(t, size, 0, vmbus.Config{MaxPacketSize: vmbus.MaxPacketLen})
		// D-16 bytes of packet plus its trailer leave 8 bytes free.
		mustWrite(t, g.ring, 1, pattern(1, d-16-16))
		if n, err := g.ring.Writable(); n != 8 || err != nil {
			t.Fatalf("writable %d %v, want 8", n, err)
		}
		if err := g.ring.TryWrite(inband(2), nil); err != vmbus.ErrWouldBlock {
			t.Fatalf("an empty packet in 8 free bytes: %v", err)
		}
		mustRead(t, g.ring, 1, pattern(1, d-16-16))
		mustWrite(t, g.ring, 3, pattern(3, d-16-16)) // again, now wrapping
		mustRead(t, g.ring, 3, pattern(3, d-16-16))
	})
	t.Run("one more byte never fits", func(t *testing.T) {
		g := newRig(t, size, 0, vmbus.Config{MaxPacketSize: vmbus.MaxPacketLen})
		err := g.ring.TryWrite(inband(1), pattern(1, d-16-15))
		if !errors.Is(err, vmbus.ErrWouldBlock) || !errors.Is(err, vmbus.ErrTooLarge) {
			t.Fatalf("err %v, want ErrWouldBlock and ErrTooLarge", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		if err := g.ring.Write(ctx, inband(1), pattern(1, d-16-15)); !errors.Is(err, vmbus.ErrTooLarge) {
			t.Fatalf("Write: %v", err)
		}
		if time.Since(start) > time.Second || g.word(12) != 0 {
			t.Fatal("Write waited for a packet that can never fit")
		}
	})
	t.Run("free equal to packet", func(t *testing.T) {
		g := newRig(t, size, 0, vmbus.Config{})
		for i := range 18 { // 18 * (200+16+8) = 4032, 64 free
			mustWrite(t, g.ring, uint64(i), pattern(i, 200))
		}
		if n, _ := g.ring.Writable(); n != 64 {
			t.Fatalf("writable %d", n)
		}
		if err := g.ring.TryWrite(inband(99), pattern(0, 40)); err != vmbus.ErrWouldBlock { // 56+8 = 64
			t.Fatalf("packet needing all 64 free bytes: %v", err)
		}
		mustWrite(t, g.ring, 99, pattern(0, 32)) // 48+8 = 56 < 64
	})
}

func TestTooLarge(t *testing.T) {
	g := newRig(t, 1<<20, 0, vmbus.Config{})
	if err := g.ring.TryWrite(inband(1), make([]byte, vmbus.DefaultMaxPacketSize-16+1)); !errors.Is(err, vmbus.ErrTooLarge) || errors.Is(err, vmbus.ErrWouldBlock) {
		t.Fatalf("above MaxPacketSize: %v", err)
	}
	mustWrite(t, g.ring, 1, make([]byte, vmbus.DefaultMaxPacketSize-16))
	if err := g.ring.TryWrite(vmbus.Header{Ext: make([]byte, 12)}, nil); !errors.Is(err, vmbus.ErrInvalid) {
		t.Fatalf("12-byte extension: %v", err)
	}
	big := newRig(t, 2<<20, 0, vmbus.Config{MaxPacketSize: vmbus.MaxPacketLen})
	mustWrite(t, big.ring, 1, make([]byte, vmbus.MaxPacketLen-16))
	if err := big.ring.TryWrite(inband(2), make([]byte, vmbus.MaxPacketLen-15)); !errors.Is(err, vmbus.ErrTooLarge) {
		t.Fatalf("len8 overflow: %v", err)
	}
	mustRead(t, big.ring, 1, make([]byte, vmbus.MaxPacketLen-16))
}

func TestExtHeader(t *testing.T) {
	g := newRig(t, 8192, 4064, vmbus.Config{})
	ext := pattern(5, 40)
	h := vmbus.Header{Type: vmbus.PacketDataUsingGPADirect, Flags: vmbus.FlagCompletionRequested, TransID: 9, Ext: ext}
	if err := g.ring.TryWrite(h, pattern(6, 13)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	d, err := g.ring.Peek()
	if err != nil || d.Offset8 != 7 || d.Len8 != 9 || d.Flags != 1 || d.Type != vmbus.PacketDataUsingGPADirect {
		t.Fatalf("peek %+v %v", d, err)
	}
	d, n, err := g.ring.TryReadRaw(buf)
	if err != nil || n != 72 {
		t.Fatalf("raw read %d %v", n, err)
	}
	if string(buf[16:56]) != string(ext) || string(buf[56:69]) != string(pattern(6, 13)) {
		t.Fatal("raw packet differs")
	}
	if binary.LittleEndian.Uint16(buf[2:]) != d.Offset8 || binary.LittleEndian.Uint64(buf[8:]) != 9 {
		t.Fatal("raw descriptor differs")
	}
}

func TestShortBuffer(t *testing.T) {
	g := newRig(t, 8192, 0, vmbus.Config{})
	mustWrite(t, g.ring, 77, pattern(1, 100))
	d, n, err := g.ring.TryRead(make([]byte, 103))
	if !errors.Is(err, vmbus.ErrShortBuffer) || n != 104 || d.TransID != 77 {
		t.Fatalf("(%+v, %d, %v), want ErrShortBuffer needing 104", d, n, err)
	}
	if _, n, err = g.ring.TryReadRaw(make([]byte, 10)); !errors.Is(err, vmbus.ErrShortBuffer) || n != 120 {
		t.Fatalf("raw: (%d, %v), want ErrShortBuffer needing 120", n, err)
	}
	if g.readIndex() != 0 || g.ring.ReaderIndex() != 0 {
		t.Fatal("a short read consumed the packet")
	}
	mustRead(t, g.ring, 77, pattern(1, 100))
}

// Next and NextView read a batch; Commit frees it at once and evaluates
// the writer's pending_send_sz over the whole batch.
func TestBatchCommit(t *testing.T) {
	g := newRig(t, 8192, 3000, vmbus.Config{})
	for i := range 10 {
		mustWrite(t, g.ring, uint64(i), pattern(i, 360)) // 384 bytes each
	}
	g.setWord(12, 1000) // a writer blocked needing 1000 bytes; 256 free
	buf := make([]byte, 512)
	for i := range 2 {
		d, n, err := g.ring.Next(buf)
		if err != nil {
			t.Fatal(err)
		}
		checkPacket(t, d, buf[:n], uint64(i), pattern(i, 360))
	}
	d, a, b, err := g.ring.NextView() // 3000 + 3*384 wraps at 4096: split
	if err != nil || len(b) == 0 {
		t.Fatalf("view %v, second part %d bytes", err, len(b))
	}
	checkPacket(t, d, append(append([]byte(nil), a...), b...), 2, pattern(2, 360))
	if g.readIndex() != 3000 || g.toWriter.Count() != 0 {
		t.Fatal("read_index moved before Commit")
	}
	if err := g.ring.Commit(); err != nil {
		t.Fatal(err)
	}
	if g.readIndex() != (3000+3*384)%4096 || g.toWriter.Count() != 1 {
		t.Fatalf("read_index %d, %d signals; want one signal for the batch", g.readIndex(), g.toWriter.Count())
	}
	if err := g.ring.Commit(); err != nil || g.toWriter.Count() != 1 {
		t.Fatal("an empty commit signaled")
	}
}

// The writer signals only on empty -> non-empty with interrupt_mask clear
// (spec 2.1); batched reading masks and re-checks (2.3).
func TestWriterSignals(t *testing.T) {
	g := newRig(t, 16384, 0, vmbus.Config{})
	sig := func(want uint64) {
		t.Helper()
		if got := g.toReader.Count(); got != want {
			t.Fatalf("%d signals, want %d", got, want)
		}
	}
	var id uint64
	write := func(n int) {
		for range n {
			mustWrite(t, g.ring, id, pattern(int(id), 64))
			id++
		}
	}
	var rid uint64
	read := func(n int) {
		for range n {
			mustRead(t, g.ring, rid, pattern(int(rid), 64))
			rid++
		}
	}
	write(10) // a stream into an empty ring: one signal
	sig(1)
	read(3)
	write(5) // non-empty: none
	sig(1)
	read(12)
	write(1) // empty again
	sig(2)

	g.ring.BeginRead()
	read(1)
	write(3) // empty before, but masked
	sig(2)
	read(3)
	if n, err := g.ring.EndRead(); n != 0 || err != nil {
		t.Fatalf("EndRead %d %v", n, err)
	}
	g.ring.BeginRead()
	write(2)
	if n, err := g.ring.EndRead(); n == 0 || err != nil { // arrived while masked: drain again
		t.Fatalf("EndRead %d %v, want the unsignaled bytes", n, err)
	}
	sig(2)
	read(2)
	write(1) // unmasked and empty
	sig(3)
	read(1)
	g.setWord(8, 0xdeadbeef) // any non-zero mask means masked, never an error
	write(1)
	sig(3)
}

// The reader signals a blocked writer once, when the space it frees crosses
// pending_send_sz (spec 2.2).
func TestReaderSignals(t *testing.T) {
	g := newRig(t, 8192, 0, vmbus.Config{})
	for i := range 10 {
		mustWrite(t, g.ring, uint64(i), pattern(i, 360)) // 3840 used, 256 free
	}
	g.setWord(12, 1000)
	for i, want := range []uint64{0, 1, 1, 1} { // free 640, 1024 (crosses), 1408, 1792
		mustRead(t, g.ring, uint64(i), pattern(i, 360))
		if got := g.toWriter.Count(); got != want {
			t.Fatalf("after read %d: %d signals, want %d", i, got, want)
		}
	}
	g.setWord(64, 0) // the writer does not do pending_send_sz: never signal
	g.setWord(12, 2000)
	mustRead(t, g.ring, 4, pattern(4, 360)) // free 1792 -> 2176 would cross
	if g.toWriter.Count() != 1 {
		t.Fatal("signaled without feat_pending_send_sz")
	}
	g.setWord(64, 1)
	// u32 arithmetic: bytes_read larger than free wraps, then no signal.
	if sig, err := g.ring.WriterNeedsSignal(1 << 20); sig || err != nil {
		t.Fatalf("decision %v %v for bytes_read > free", sig, err)
	}
	g.setWord(12, 2100)
	if sig, err := g.ring.WriterNeedsSignal(100); !sig || err != nil { // 2076 <= 2100 < 2176
		t.Fatalf("decision %v %v, want a signal", sig, err)
	}
	g.setWord(12, 2176) // exactly the free space is not enough
	if sig, _ := g.ring.WriterNeedsSignal(500); sig {
		t.Fatal("signaled for pending == free")
	}
}

// Write stores pending_send_sz = packet + trailer while blocked and clears
// it when done; the reader's signal wakes it.
func TestWriteWaitsForSpace(t *testing.T) {
	g := newRig(t, 8192, 0, vmbus.Config{PollInterval: -1})
	for i := range 18 {
		mustWrite(t, g.ring, uint64(i), pattern(i, 200)) // 64 free
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.ring.Write(ctx, inband(100), pattern(100, 1000)) }()
	deadline := time.Now().Add(5 * time.Second)
	for g.word(12) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if p := g.word(12); p != 1024 { // 16+1000+0 padded to 1016, +8
		t.Fatalf("pending_send_sz %d, want 1024", p)
	}
	buf := make([]byte, 4096)
	for i := range 5 { // 64 + 4*224 = 960 <= 1024; the fifth crosses
		select {
		case err := <-done:
			t.Fatalf("Write returned early (%v) after %d reads", err, i)
		default:
		}
		if _, _, err := g.ring.TryRead(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if g.toWriter.Count() != 1 || g.word(12) != 0 {
		t.Fatalf("%d space signals, pending_send_sz %d; want 1 and 0", g.toWriter.Count(), g.word(12))
	}
}

func TestBlockingBounds(t *testing.T) {
	t.Run("read deadline", func(t *testing.T) {
		g := newRig(t, 8192, 0, vmbus.Config{})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		if _, _, err := g.ring.Read(ctx, make([]byte, 64)); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Read on an empty ring: %v", err)
		}
		if g.word(8) != 0 {
			t.Fatal("interrupt_mask left set by a Read that gave up")
		}
	})
	t.Run("write deadline, peer without pending_send_sz", func(t *testing.T) {
		g := newRig(t, 8192, 0, vmbus.Config{})
		g.setWord(64, 0)
		mustWrite(t, g.ring, 1, pattern(1, 4000))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		if err := g.ring.Write(ctx, inband(2), pattern(2, 200)); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Write on a full ring: %v", err)
		}
		if g.word(12) != 0 {
			t.Fatal("pending_send_sz left set")
		}
	})
	t.Run("close releases both", func(t *testing.T) {
		rd := newRig(t, 8192, 0, vmbus.Config{PollInterval: -1})
		wr := newRig(t, 8192, 0, vmbus.Config{PollInterval: -1})
		mustWrite(t, wr.ring, 1, pattern(1, 4000))
		errs := make(chan error, 2)
		go func() { _, _, err := rd.ring.Read(context.Background(), make([]byte, 64)); errs <- err }()
		go func() { errs <- wr.ring.Write(context.Background(), inband(2), pattern(2, 200)) }()
		time.Sleep(20 * time.Millisecond)
		rd.ring.Close()
		wr.ring.Close()
		for range 2 {
			select {
			case err := <-errs:
				if !errors.Is(err, vmbus.ErrClosed) {
					t.Fatalf("blocked call returned %v, want ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Close did not release a blocked call")
			}
		}
		if wr.word(12) != 0 {
			t.Fatal("pending_send_sz left set")
		}
		r := wr.ring
		_, _, e1 := r.TryRead(nil)
		_, e2 := r.Peek()
		_, e3 := r.Readable()
		_, e4 := r.Writable()
		for i, err := range []error{r.TryWrite(inband(3), nil), e1, e2, e3, e4, r.Commit(), r.WaitReadable(context.Background()), r.Close()} {
			if i < 7 && err != vmbus.ErrClosed || i == 7 && err != nil {
				t.Fatalf("call %d after Close: %v", i, err)
			}
		}
	})
}

// Without signals or Ready channels both ends poll, with backoff.
func TestPollingWithoutSignals(t *testing.T) {
	mem := make([]byte, 8192)
	if err := vmbus.InitRing(mem); err != nil {
		t.Fatal(err)
	}
	r, err := vmbus.NewRing(mem, vmbus.Config{PollInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	streamPackets(t, r, 500, 3000, 5)
}
