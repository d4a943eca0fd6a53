package vmbus_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/pagewire/pagewire/vmbus"
)

// streamPackets moves n packets of random sizes (up to maxPayload) from a
// writer goroutine to a reader goroutine through r, which both use. Each
// payload starts with its length and sequence number; both sides CRC every
// payload. The reader mixes Read, WaitReadable+Next+Commit batches and
// NextView. Everything is bounded by a deadline.
func streamPackets(t *testing.T, r *vmbus.Ring, n int, maxPayload int, seed uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var wsum uint32
	var werr error
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(seed, 1))
		buf := make([]byte, maxPayload)
		for i := range n {
			size := 12 + rng.IntN(maxPayload-12+1)
			p := buf[:size]
			binary.LittleEndian.PutUint32(p, uint32(size))
			binary.LittleEndian.PutUint64(p[4:], uint64(i))
			for j := 12; j < size; j++ {
				p[j] = byte(rng.Uint32())
			}
			wsum = crc32.Update(wsum, crc32.IEEETable, p)
			if err := r.Write(ctx, inband(uint64(i)), p); err != nil {
				werr = fmt.Errorf("write %d: %w", i, err)
				cancel()
				return
			}
		}
	})
	rsum, rerr := readPackets(ctx, r, n, maxPayload, seed)
	if rerr != nil {
		cancel()
	}
	wg.Wait()
	if werr != nil || rerr != nil {
		t.Fatalf("writer: %v; reader: %v", werr, rerr)
	}
	if rsum != wsum {
		t.Fatalf("checksum %08x read, %08x written", rsum, wsum)
	}
}

func readPackets(ctx context.Context, r *vmbus.Ring, n, maxPayload int, seed uint64) (uint32, error) {
	rng := rand.New(rand.NewPCG(seed, 2))
	buf := make([]byte, pad8(maxPayload))
	var sum uint32
	check := func(i int, d vmbus.Descriptor, p []byte) error {
		if len(p) < 12 {
			return fmt.Errorf("packet %d: %d bytes", i, len(p))
		}
		size := int(binary.LittleEndian.Uint32(p))
		if d.TransID != uint64(i) || binary.LittleEndian.Uint64(p[4:]) != uint64(i) || len(p) != pad8(size) {
			return fmt.Errorf("packet %d: id %d, seq %d, %d bytes for size %d", i, d.TransID, binary.LittleEndian.Uint64(p[4:]), len(p), size)
		}
		sum = crc32.Update(sum, crc32.IEEETable, p[:size])
		return nil
	}
	for i := 0; i < n; {
		switch rng.IntN(3) {
		case 0: // one packet at a time
			d, m, err := r.Read(ctx, buf)
			if err != nil {
				return sum, fmt.Errorf("read %d: %w", i, err)
			}
			if err := check(i, d, buf[:m]); err != nil {
				return sum, err
			}
			i++
		case 1: // a batch, committed once
			if err := r.WaitReadable(ctx); err != nil {
				return sum, fmt.Errorf("wait %d: %w", i, err)
			}
			for k := 1 + rng.IntN(8); k > 0 && i < n; k-- {
				d, m, err := r.Next(buf)
				if errors.Is(err, vmbus.ErrWouldBlock) {
					break
				}
				if err != nil {
					return sum, fmt.Errorf("next %d: %w", i, err)
				}
				if err := check(i, d, buf[:m]); err != nil {
					return sum, err
				}
				i++
			}
			if err := r.Commit(); err != nil {
				return sum, err
			}
		case 2: // zero copy
			if err := r.WaitReadable(ctx); err != nil {
				return sum, fmt.Errorf("wait %d: %w", i, err)
			}
			d, a, b, err := r.NextView()
			if errors.Is(err, vmbus.ErrWouldBlock) {
				continue
			}
			if err != nil {
				return sum, fmt.Errorf("view %d: %w", i, err)
			}
			m := copy(buf, a)
			m += copy(buf[m:], b)
			if err := check(i, d, buf[:m]); err != nil {
				return sum, err
			}
			i++
			if err := r.Commit(); err != nil {
				return sum, err
			}
		}
	}
	return sum, nil
}

// Two goroutines move many packets of random sizes through small rings (so
// they wrap and block all the time), relying on signals alone: a lost
// wake-up hangs until the deadline and fails.
func TestStress(t *testing.T) {
	n := 20000
	if raceEnabled || testing.Short() {
		n = 5000
	}
	for _, tc := range []struct {
		ring, maxPayload int
	}{
		{8192, 1000},
		{16384, 6000},
		{65536 + 4096, 60000},
	} {
		t.Run(fmt.Sprintf("ring%d-max%d", tc.ring, tc.maxPayload), func(t *testing.T) {
			g := newRig(t, tc.ring, uint32(tc.ring-vmbus.HeaderSize-8), vmbus.Config{MaxPacketSize: tc.maxPayload + 16, PollInterval: -1})
			m := n
			if tc.maxPayload > 10000 {
				m = n / 10
			}
			streamPackets(t, g.ring, m, tc.maxPayload, uint64(tc.ring))
			c := g.ring.Counters()
			t.Logf("%d packets: %d data signals, %d reader unmasks, %d sleeps; %d space signals, %d writer blocks",
				m, g.toReader.Count(), c.ReaderUnmasks, c.ReaderSleeps, g.toWriter.Count(), c.WriterBlocks)
		})
	}
}

// Streaming: the reader drains in batches; the writer signals at most once
// per time the reader unmasked, and the reader signals the writer at most
// twice per block (once for the crossing, once more at most if a commit
// straddles the writer's return).
func TestStreamSignals(t *testing.T) {
	g := newRig(t, 16384, 0, vmbus.Config{MaxPacketSize: 2016, PollInterval: -1})
	g.ring.BeginRead() // as the interrupt handler does before the first drain
	const n = 5000
	streamPackets(t, g.ring, n, 2000, 7)
	c := g.ring.Counters()
	data, space := g.toReader.Count(), g.toWriter.Count()
	t.Logf("%d packets: %d data signals (%d unmasks, %d sleeps), %d space signals (%d writer blocks)",
		n, data, c.ReaderUnmasks, c.ReaderSleeps, space, c.WriterBlocks)
	if data > c.ReaderUnmasks {
		t.Errorf("%d data signals for %d unmasked windows", data, c.ReaderUnmasks)
	}
	if space > 2*c.WriterBlocks {
		t.Errorf("%d space signals for %d writer blocks", space, c.WriterBlocks)
	}
	if c.ReaderSleeps > data {
		t.Errorf("%d sleeps ended by %d signals (polling is off)", c.ReaderSleeps, data)
	}
}

// Ping-pong over two rings: every message lands in an empty ring, so at most
// one signal per message, never a space signal, and no sleep without a
// signal.
func TestPingPongSignals(t *testing.T) {
	cfg := vmbus.Config{PollInterval: -1}
	ab, ba := newRig(t, 8192, 0, cfg), newRig(t, 8192, 0, cfg)
	const rounds = 2000
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var echoErr error
	wg.Go(func() {
		buf := make([]byte, 256)
		for i := range rounds {
			d, n, err := ab.ring.Read(ctx, buf)
			if err == nil {
				err = ba.ring.Write(ctx, inband(d.TransID), buf[:n])
			}
			if err != nil {
				echoErr = fmt.Errorf("echo %d: %w", i, err)
				cancel()
				return
			}
		}
	})
	buf := make([]byte, 256)
	for i := range rounds {
		p := pattern(i, 1+i%200)
		if err := ab.ring.Write(ctx, inband(uint64(i)), p); err != nil {
			cancel()
			wg.Wait()
			t.Fatal(err, echoErr)
		}
		d, n, err := ba.ring.Read(ctx, buf)
		if err != nil {
			cancel()
			wg.Wait()
			t.Fatal(err, echoErr)
		}
		checkPacket(t, d, buf[:n], uint64(i), p)
	}
	wg.Wait()
	if echoErr != nil {
		t.Fatal(echoErr)
	}
	for _, g := range []*rig{ab, ba} {
		c := g.ring.Counters()
		t.Logf("%d messages: %d signals, %d sleeps, %d unmasks", rounds, g.toReader.Count(), c.ReaderSleeps, c.ReaderUnmasks)
		if g.toReader.Count() > rounds || g.toWriter.Count() != 0 {
			t.Errorf("%d data and %d space signals for %d messages", g.toReader.Count(), g.toWriter.Count(), rounds)
		}
		if c.ReaderSleeps > g.toReader.Count() {
			t.Errorf("%d sleeps, %d signals", c.ReaderSleeps, g.toReader.Count())
		}
		if g.toReader.Count() == 0 {
			t.Error("no signals at all")
		}
	}
}
