package vmbus_test

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pagewire/pagewire/vmbus"
)

// Fuzz input: byte 0 picks the ring size (8 or 12 KiB) and whether the
// header indices are taken raw or made valid; bytes 1-20 are the header
// words (write_index, read_index, interrupt_mask, pending_send_sz,
// feature_bits); byte 21 is the number of operations (at most
// fuzzMaxOps), then two bytes per operation; the rest is the data area.
const (
	fuzzHeader = 22
	fuzzMaxOps = 64
)

// fuzzInput builds an input from a ring image and operations.
func fuzzInput(img []byte, rawIndices bool, ops ...byte) []byte {
	b := []byte{byte((len(img) - 8192) / 4096)}
	if rawIndices {
		b[0] |= 2
	}
	b = append(b, img[0:16]...)
	b = append(b, img[64:68]...)
	b = append(b, byte(len(ops)/2))
	b = append(b, ops...)
	return append(b, img[vmbus.HeaderSize:]...)
}

func fuzzSeeds(f *testing.F) {
	// Honest rings: packets of several sizes, some wrapping.
	for _, start := range []uint32{0, 4088, 4000} {
		g := newRig(f, 8192, start, vmbus.Config{})
		for i, n := range []int{0, 1, 100, 700} {
			mustWrite(f, g.ring, uint64(i), pattern(i, n))
		}
		f.Add(fuzzInput(g.mem, true, 0, 255, 1, 0, 3, 255, 5, 0, 4, 0, 2, 255, 7, 30, 0, 1, 9, 0))
	}
	f.Add([]byte{})
	f.Add(make([]byte, fuzzHeader+8192))
	// The DPDK vectors' images, if present (the replay test insists on them).
	dir := os.Getenv("PAGEWIRE_VMBUS_VECTORS")
	if dir == "" {
		dir = filepath.Join("..", "..", "shared", "vectors", "vmbus-dpdk")
	}
	imgs, _ := filepath.Glob(filepath.Join(dir, "*", "images", "step-*.bin"))
	for i, p := range imgs {
		if i%4 != 0 {
			continue
		}
		if img, err := os.ReadFile(p); err == nil && (len(img) == 8192 || len(img) == 12288) {
			f.Add(fuzzInput(img, true, 0, 255, 0, 255, 0, 255, 7, 10, 0, 255))
		}
	}
}

// FuzzRingReader runs a bounded sequence of reads (and some writes and
// peer stores) over arbitrary ring memory. It must never panic or hang,
// only return the documented errors, and never consume more than the peer
// published.
func FuzzRingReader(f *testing.F) {
	fuzzSeeds(f)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < fuzzHeader {
			return
		}
		size := 8192 + 4096*int(in[0]&1)
		d := uint32(size - vmbus.HeaderSize)
		mem := make([]byte, size)
		le := binary.LittleEndian
		w, r := le.Uint32(in[1:]), le.Uint32(in[5:])
		if in[0]&2 == 0 {
			w, r = w%d&^7, r%d&^7
		}
		le.PutUint32(mem[0:], w)
		le.PutUint32(mem[4:], r)
		copy(mem[8:16], in[9:17])
		copy(mem[64:68], in[17:21])
		nops := min(int(in[21]), fuzzMaxOps, (len(in)-fuzzHeader)/2)
		ops := in[fuzzHeader : fuzzHeader+2*nops]
		copy(mem[vmbus.HeaderSize:], in[fuzzHeader+2*nops:])

		ring, err := vmbus.NewRing(mem, vmbus.Config{MaxPacketSize: 2048})
		if err != nil {
			t.Fatalf("NewRing: %v", err)
		}
		defer ring.Close()
		buf := make([]byte, 4096)
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i]%11, int(ops[i+1])
			b := buf[:arg*16]
			privBefore, wBefore, rBefore := ring.ReaderIndex(), le.Uint32(mem[0:]), le.Uint32(mem[4:])
			var (
				desc   vmbus.Descriptor
				n      int
				err    error
				read   bool // a read form that returns a packet
				raw    bool
				commit bool
			)
			switch op {
			case 0:
				desc, n, err = ring.TryRead(b)
				read, commit = true, true
			case 1:
				desc, err = ring.Peek()
				if err == nil {
					n, read = desc.PayloadLen(), true
				}
			case 2:
				desc, n, err = ring.TryReadRaw(b)
				read, raw, commit = true, true, true
			case 3:
				desc, n, err = ring.Next(b)
				read = true
			case 4:
				var p1, p2 []byte
				desc, p1, p2, err = ring.NextView()
				n, read = len(p1)+len(p2), true
			case 5:
				err = ring.Commit()
				commit = true
			case 6:
				switch arg % 3 {
				case 0:
					_, err = ring.Readable()
				case 1:
					ring.BeginRead()
				default:
					_, err = ring.EndRead()
				}
			case 7:
				err = ring.TryWrite(vmbus.Header{Type: vmbus.PacketDataInband, TransID: uint64(i)}, buf[:arg*8])
				if err == nil && ring.WriterIndex() != le.Uint32(mem[0:]) {
					t.Fatal("write_index not published")
				}
			case 8: // the peer publishes, honestly or not
				if arg&1 == 0 {
					le.PutUint32(mem[0:], (wBefore+uint32(arg)*8)%d)
				} else {
					le.PutUint32(mem[0:], wBefore^uint32(arg)<<(arg%24))
				}
			case 9:
				if arg&1 == 0 {
					desc, n, err = ring.Read(canceled, b)
					read, commit = true, true
				} else {
					err = ring.WaitReadable(canceled)
					commit = true
				}
			case 10: // the peer stores another word
				le.PutUint32(mem[4+4*(arg%3):], uint32(arg)*uint32(arg)*97)
			}
			if err != nil && !errors.Is(err, vmbus.ErrWouldBlock) && !errors.Is(err, vmbus.ErrShortBuffer) &&
				!errors.Is(err, vmbus.ErrProtocol) && !errors.Is(err, vmbus.ErrTooLarge) && !errors.Is(err, context.Canceled) {
				t.Fatalf("op %d: unexpected error %v", op, err)
			}
			if ri := ring.ReaderIndex(); (ri >= d || ri%8 != 0) && ri != privBefore {
				t.Fatalf("op %d: reader index %d", op, ri)
			}
			consumed := ring.ReaderIndex() != privBefore
			if read && (err == nil || errors.Is(err, vmbus.ErrBadPending) && consumed) {
				if desc.Len8 < 2 || desc.Offset8 < 2 || desc.Offset8 > desc.Len8 || desc.Len() > ring.MaxPacketSize() {
					t.Fatalf("op %d: accepted descriptor %+v", op, desc)
				}
				want := desc.PayloadLen()
				if raw {
					want = desc.Len()
				}
				if n != want || (op != 1 && op != 4 && n > len(b)) {
					t.Fatalf("op %d: %d bytes for %+v, buffer %d", op, n, desc, len(b))
				}
				// Never past what the peer published.
				avail := (wBefore + d - privBefore) % d
				if op != 1 && uint32(desc.Len())+vmbus.TrailerSize > avail {
					t.Fatalf("op %d: consumed %d bytes of %d published", op, desc.Len()+8, avail)
				}
			} else if consumed {
				t.Fatalf("op %d: moved the reader on error %v", op, err)
			}
			if !commit && op != 10 && le.Uint32(mem[4:]) != rBefore {
				t.Fatalf("op %d stored read_index", op)
			}
		}
	})
}
