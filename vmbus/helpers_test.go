package vmbus_test

import (
	"encoding/binary"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/pagewire/pagewire/vmbus"
)

// rig is a ring used by both ends in one process, wired with Doorbells.
type rig struct {
	mem      []byte
	ring     *vmbus.Ring
	toReader *vmbus.Doorbell // the writer's signals
	toWriter *vmbus.Doorbell // the reader's signals
}

// newRig initialises a ring of size bytes whose indices both start at
// start, and attaches to it with cfg plus Doorbells.
func newRig(t testing.TB, size int, start uint32, cfg vmbus.Config) *rig {
	t.Helper()
	mem := make([]byte, size)
	if err := vmbus.InitRing(mem); err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint32(mem[0:], start)
	binary.LittleEndian.PutUint32(mem[4:], start)
	g := &rig{mem: mem, toReader: vmbus.NewDoorbell(), toWriter: vmbus.NewDoorbell()}
	cfg.NotifyReader, cfg.NotifyWriter = g.toReader, g.toWriter
	cfg.DataReady, cfg.SpaceReady = g.toReader.C(), g.toWriter.C()
	r, err := vmbus.NewRing(mem, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	g.ring = r
	return g
}

// word and setWord access a header word as the peer would: atomically.
func (g *rig) word(off int) uint32 { return atomic.LoadUint32(g.ptr(off)) }

func (g *rig) setWord(off int, v uint32) { atomic.StoreUint32(g.ptr(off), v) }

func (g *rig) ptr(off int) *uint32 { return (*uint32)(unsafe.Pointer(&g.mem[off])) }

func (g *rig) writeIndex() uint32 { return g.word(0) }
func (g *rig) readIndex() uint32  { return g.word(4) }

// pattern fills n bytes derived from seed.
func pattern(seed, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(seed*131 + i*7 + i>>8)
	}
	return b
}

func pad8(n int) int { return (n + 7) &^ 7 }

// inband is a plain in-band data packet header.
func inband(id uint64) vmbus.Header {
	return vmbus.Header{Type: vmbus.PacketDataInband, TransID: id}
}

func mustWrite(t testing.TB, r *vmbus.Ring, id uint64, payload []byte) {
	t.Helper()
	if err := r.TryWrite(inband(id), payload); err != nil {
		t.Fatalf("write %d (%d bytes): %v", id, len(payload), err)
	}
}

// mustRead reads one packet and checks its id and payload (padding zero).
func mustRead(t testing.TB, r *vmbus.Ring, id uint64, payload []byte) {
	t.Helper()
	buf := make([]byte, pad8(len(payload)))
	d, n, err := r.TryRead(buf)
	if err != nil {
		t.Fatalf("read %d: %v", id, err)
	}
	checkPacket(t, d, buf[:n], id, payload)
}

func checkPacket(t testing.TB, d vmbus.Descriptor, got []byte, id uint64, payload []byte) {
	t.Helper()
	if d.TransID != id || d.Type != vmbus.PacketDataInband || d.Offset8 != 2 {
		t.Fatalf("descriptor %+v, want id %d in-band offset8 2", d, id)
	}
	if len(got) != pad8(len(payload)) || string(got[:len(payload)]) != string(payload) {
		t.Fatalf("packet %d: payload of %d bytes differs (want %d bytes)", id, len(got), len(payload))
	}
	for _, c := range got[len(payload):] {
		if c != 0 {
			t.Fatalf("packet %d: padding not zero", id)
		}
	}
}
