package vmbus_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/pagewire/pagewire/vmbus"
)

// The DPDK ring vectors (../shared/vectors/vmbus-dpdk, README.md there):
// ring images and results of DPDK 22.11's VMBus ring code, replayed step by
// step against a Ring attached to the same memory as writer and reader.

type vecManifest struct {
	Format    string `json:"format"`
	Scenarios []struct {
		Name     string `json:"name"`
		Scenario string `json:"scenario"`
		Files    []struct {
			Path   string `json:"path"`
			Bytes  int    `json:"bytes"`
			Sha256 string `json:"sha256"`
		} `json:"files"`
	} `json:"scenarios"`
}

type vecScenario struct {
	Name         string    `json:"name"`
	RingTotalLen int       `json:"ring_total_len"`
	DataSize     int       `json:"data_size"`
	InitialImage string    `json:"initial_image"`
	InitialSha   string    `json:"initial_image_sha256"`
	Steps        []vecStep `json:"steps"`
}

type vecHeader struct {
	WriteIndex    uint32 `json:"write_index"`
	ReadIndex     uint32 `json:"read_index"`
	InterruptMask uint32 `json:"interrupt_mask"`
	PendingSendSz uint32 `json:"pending_send_sz"`
	FeatureBits   uint32 `json:"feature_bits"`
}

type vecStep struct {
	Step   int    `json:"step"`
	Op     string `json:"op"`
	Inputs struct {
		Type        uint16 `json:"type"`
		Flags       uint16 `json:"flags"`
		Xactid      uint64 `json:"xactid"`
		Dlen        int    `json:"dlen"`
		Payload     string `json:"payload"`
		PayloadSeed *int   `json:"payload_seed"`
		GPA         []struct {
			Len  uint32 `json:"len"`
			Ofs  uint32 `json:"ofs"`
			Page uint64 `json:"page"`
		} `json:"gpa"`
		Buflen     int    `json:"buflen"`
		BytesRead  uint32 `json:"bytes_read"`
		Field      string `json:"field"`
		Value      uint64 `json:"value"`
		DataOffset uint64 `json:"data_offset"`
		Bytes      string `json:"bytes"`
	} `json:"inputs"`
	Outputs struct {
		Rc        int     `json:"rc"`
		NeedSig   *bool   `json:"need_sig"`
		Signaled  *bool   `json:"signaled"`
		Len       int     `json:"len"`
		RequestID uint64  `json:"request_id"`
		Data      *string `json:"data"`
		Result    *bool   `json:"result"`
		DataSize  int     `json:"data_size"`
		Pkt       *struct {
			Type   uint16 `json:"type"`
			Hlen   uint16 `json:"hlen"`
			Tlen   uint16 `json:"tlen"`
			Flags  uint16 `json:"flags"`
			Xactid uint64 `json:"xactid"`
		} `json:"pkt"`
	} `json:"outputs"`
	HeaderAfter  vecHeader `json:"header_after"`
	WriterPriv   *uint32   `json:"writer_private_write_index"`
	ImageAfter   string    `json:"image_after"`
	ImageAfterSh string    `json:"image_after_sha256"`
}

const (
	eIO     = -5
	eAGAIN  = -11
	eNOBUFS = -105
)

// vectorsDir finds the vectors: $PAGEWIRE_VMBUS_VECTORS, else
// ../shared/vectors/vmbus-dpdk beside the module root.
func vectorsDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("PAGEWIRE_VMBUS_VECTORS")
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				dir = filepath.Join(d, "..", "shared", "vectors", "vmbus-dpdk")
				break
			}
			if filepath.Dir(d) == d {
				t.Fatalf("no go.mod above %s, and PAGEWIRE_VMBUS_VECTORS is not set", wd)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST.json")); err != nil {
		t.Fatalf("vmbus ring vectors missing (set PAGEWIRE_VMBUS_VECTORS): %v", err)
	}
	return dir
}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// loadImage reads an image and checks its sha256.
func loadImage(t testing.TB, path, sum string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := sha256.Sum256(b); sum != "" && hex.EncodeToString(got[:]) != sum {
		t.Fatalf("%s: sha256 %x, manifest says %s", path, got, sum)
	}
	return b
}

// seedPayload is the vectors' payload generator.
func seedPayload(seed, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(seed*31 + i*7 + i>>8)
	}
	return b
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func headerOf(mem []byte) vecHeader {
	le := binary.LittleEndian
	return vecHeader{le.Uint32(mem[0:]), le.Uint32(mem[4:]), le.Uint32(mem[8:]), le.Uint32(mem[12:]), le.Uint32(mem[64:])}
}

// validByRules says whether the packet at read_index passes spec section 4,
// computed from the raw image independently of the package.
func validByRules(mem []byte) bool {
	h, data := headerOf(mem), mem[vmbus.HeaderSize:]
	size := uint32(len(data))
	if h.WriteIndex >= size || h.WriteIndex%8 != 0 {
		return false
	}
	avail := (h.WriteIndex + size - h.ReadIndex) % size
	if avail < 16 {
		return false
	}
	var d [16]byte
	for i := range d {
		d[i] = data[(h.ReadIndex+uint32(i))%size]
	}
	hlen, tlen := binary.LittleEndian.Uint16(d[2:]), binary.LittleEndian.Uint16(d[4:])
	return tlen >= 2 && hlen >= 2 && hlen <= tlen && uint32(tlen)*8+8 <= avail
}

func TestDPDKVectors(t *testing.T) {
	dir := vectorsDir(t)
	var m vecManifest
	readJSON(t, filepath.Join(dir, "MANIFEST.json"), &m)
	if len(m.Scenarios) == 0 {
		t.Fatal("MANIFEST.json lists no scenarios")
	}
	sums := map[string]string{}
	for _, s := range m.Scenarios {
		for _, f := range s.Files {
			sums[filepath.ToSlash(f.Path)] = f.Sha256
		}
	}
	ops := map[string]int{}
	for _, s := range m.Scenarios {
		t.Run(s.Name, func(t *testing.T) {
			var sc vecScenario
			readJSON(t, filepath.Join(dir, s.Scenario), &sc)
			replay(t, filepath.Join(dir, filepath.Dir(s.Scenario)), filepath.Dir(s.Scenario), sc, sums, ops)
		})
	}
	names := make([]string, 0, len(ops))
	for k := range ops {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		t.Logf("replayed %4d %s steps", ops[k], k)
	}
}

func replay(t *testing.T, dir, rel string, sc vecScenario, sums map[string]string, ops map[string]int) {
	images := map[string][]byte{}
	image := func(name, sum string) []byte {
		if b, ok := images[name]; ok {
			return b
		}
		if s, ok := sums[rel+"/"+name]; ok && sum == "" {
			sum = s
		}
		b := loadImage(t, filepath.Join(dir, name), sum)
		if len(b) != sc.RingTotalLen {
			t.Fatalf("%s: %d bytes, ring_total_len %d", name, len(b), sc.RingTotalLen)
		}
		images[name] = b
		return b
	}
	mem := make([]byte, sc.RingTotalLen)
	copy(mem, image(sc.InitialImage, sc.InitialSha))
	toReader, toWriter := vmbus.NewDoorbell(), vmbus.NewDoorbell()
	ring, err := vmbus.NewRing(mem, vmbus.Config{
		MaxPacketSize: vmbus.MaxPacketLen,
		NotifyReader:  toReader,
		NotifyWriter:  toWriter,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Close()
	size := uint64(ring.DataSize())

	for _, st := range sc.Steps {
		in, out := st.Inputs, st.Outputs
		before := headerOf(mem)
		rd0, wr0 := toReader.Count(), toWriter.Count()
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("step %d (%s): "+format, append([]any{st.Step, st.Op}, args...)...)
		}
		ops[st.Op]++
		switch st.Op {
		case "init":
			if !bytes.Equal(mem, image(st.ImageAfter, st.ImageAfterSh)) {
				fail("initial image differs from the step's image")
			}
			if out.DataSize != 0 && out.DataSize != ring.DataSize() {
				fail("data size %d, want %d", ring.DataSize(), out.DataSize)
			}

		case "send", "sendsg":
			payload := mustHex(t, in.Payload)
			if len(payload) != in.Dlen {
				fail("payload of %d bytes, dlen %d", len(payload), in.Dlen)
			}
			if in.PayloadSeed != nil && !bytes.Equal(payload, seedPayload(*in.PayloadSeed, in.Dlen)) {
				fail("payload does not match payload_seed")
			}
			h := vmbus.Header{Type: vmbus.PacketType(in.Type), Flags: in.Flags, TransID: in.Xactid}
			if st.Op == "sendsg" {
				// rte_vmbus_chan_send_sglist: GPA direct, completion requested,
				// u32 reserved, u32 gpa_cnt, then {u32 len, u32 ofs, u64 page}.
				h.Type, h.Flags = vmbus.PacketDataUsingGPADirect, vmbus.FlagCompletionRequested
				h.Ext = binary.LittleEndian.AppendUint32(h.Ext, 0)
				h.Ext = binary.LittleEndian.AppendUint32(h.Ext, uint32(len(in.GPA)))
				for _, g := range in.GPA {
					h.Ext = binary.LittleEndian.AppendUint32(h.Ext, g.Len)
					h.Ext = binary.LittleEndian.AppendUint32(h.Ext, g.Ofs)
					h.Ext = binary.LittleEndian.AppendUint64(h.Ext, g.Page)
				}
			}
			err := ring.TryWrite(h, payload)
			switch out.Rc {
			case 0:
				if err != nil {
					fail("write: %v, DPDK wrote it", err)
				}
			case eAGAIN:
				if !errors.Is(err, vmbus.ErrWouldBlock) {
					fail("write: %v, DPDK said -EAGAIN", err)
				}
			default:
				fail("unknown rc %d", out.Rc)
			}
			want := out.NeedSig
			if want == nil {
				want = out.Signaled
			}
			if got := toReader.Count() - rd0; want != nil && got != b2u(*want) {
				fail("writer signaled %d times, DPDK's decision %v", got, *want)
			}

		case "poke":
			off := map[string]int{"write_index": 0, "read_index": 4, "interrupt_mask": 8, "pending_send_sz": 12, "feature_bits": 64}
			o, ok := off[in.Field]
			if !ok || in.Value > 1<<32-1 {
				fail("bad poke %q = %d", in.Field, in.Value)
			}
			binary.LittleEndian.PutUint32(mem[o:], uint32(in.Value))
			if in.Field == "read_index" {
				ring.Resync()
			}

		case "pokebytes":
			data := mem[vmbus.HeaderSize:]
			for i, c := range mustHex(t, in.Bytes) {
				data[(in.DataOffset+uint64(i))%size] = c
			}

		case "recv", "recv_raw":
			buf := make([]byte, in.Buflen)
			valid := validByRules(mem)
			var (
				d   vmbus.Descriptor
				n   int
				err error
			)
			if st.Op == "recv" {
				d, n, err = ring.TryRead(buf)
			} else {
				d, n, err = ring.TryReadRaw(buf)
			}
			ok := out.Rc == 0 || (st.Op == "recv_raw" && out.Rc > 0)
			switch {
			case ok:
				if err != nil && !(errors.Is(err, vmbus.ErrBadPending) && before.PendingSendSz > uint32(size)) {
					fail("read: %v, DPDK read %d bytes", err, out.Len)
				}
				if n != out.Len {
					fail("read %d bytes, DPDK %d", n, out.Len)
				}
				if st.Op == "recv_raw" && out.Rc != n+vmbus.TrailerSize {
					fail("DPDK's recv_raw rc %d is not len+8 = %d", out.Rc, n+8)
				}
				if out.Data == nil || !bytes.Equal(buf[:n], mustHex(t, *out.Data)) {
					fail("payload differs from DPDK's")
				}
				if st.Op == "recv" && d.TransID != out.RequestID {
					fail("trans_id %d, DPDK request_id %d", d.TransID, out.RequestID)
				}
			case out.Rc == eNOBUFS:
				if !(errors.Is(err, vmbus.ErrShortBuffer) && n == out.Len) && !(errors.Is(err, vmbus.ErrProtocol) && !valid) {
					fail("read: (%d, %v), DPDK -ENOBUFS needing %d", n, err, out.Len)
				}
			case out.Rc == eAGAIN && before.ReadIndex == before.WriteIndex:
				if err != vmbus.ErrWouldBlock {
					fail("read on an empty ring: %v, want ErrWouldBlock", err)
				}
			case out.Rc == eAGAIN || out.Rc == eIO:
				// DPDK's -EAGAIN on a non-empty ring is a packet that is not
				// completely published; -EIO a bad descriptor. Both are lies.
				if !errors.Is(err, vmbus.ErrProtocol) {
					fail("read: %v, want a protocol error (DPDK rc %d)", err, out.Rc)
				}
				if out.Rc == eIO && !errors.Is(err, vmbus.ErrBadDescriptor) {
					fail("read: %v, want ErrBadDescriptor (DPDK -EIO)", err)
				}
				if valid {
					fail("the test's own check finds the packet valid")
				}
				t.Logf("step %d (%s): DPDK rc %d, pagewire: %v", st.Step, st.Op, out.Rc, err)
			default:
				fail("unknown rc %d", out.Rc)
			}
			if st.Op == "recv" && out.Signaled != nil && toWriter.Count()-wr0 != b2u(*out.Signaled) {
				fail("reader signaled %d times, DPDK %v", toWriter.Count()-wr0, *out.Signaled)
			}

		case "peek":
			d, err := ring.Peek()
			switch {
			case out.Rc == 0 && out.Pkt != nil:
				p := out.Pkt
				if err != nil {
					if !errors.Is(err, vmbus.ErrProtocol) || validByRules(mem) {
						fail("peek: %v, DPDK saw %+v", err, *p)
					}
					break
				}
				if uint16(d.Type) != p.Type || d.Offset8 != p.Hlen || d.Len8 != p.Tlen || d.Flags != p.Flags || d.TransID != p.Xactid {
					fail("peek %+v, DPDK %+v", d, *p)
				}
			case out.Rc == eAGAIN && before.ReadIndex == before.WriteIndex:
				if err != vmbus.ErrWouldBlock {
					fail("peek on an empty ring: %v", err)
				}
			case out.Rc == eAGAIN:
				if !errors.Is(err, vmbus.ErrProtocol) {
					fail("peek: %v, want a protocol error for a partly published packet", err)
				}
			default:
				fail("unknown rc %d", out.Rc)
			}

		case "signal_read":
			got, err := ring.WriterNeedsSignal(in.BytesRead)
			if err != nil || out.Signaled == nil || got != *out.Signaled {
				fail("decision (%v, %v), DPDK %v", got, err, out.Signaled)
			}

		case "signal_tx":
			if out.Signaled == nil || !ring.ReaderMasked() != *out.Signaled {
				fail("masked %v, DPDK signaled %v", ring.ReaderMasked(), out.Signaled)
			}

		case "rx_empty":
			n, err := ring.Readable()
			if out.Result == nil || (err == nil && n == 0) != *out.Result {
				fail("readable (%d, %v), DPDK rx_empty %v", n, err, out.Result)
			}

		default:
			fail("unknown op")
		}

		// Every step: the same ring, byte for byte, and the same indices.
		want := image(st.ImageAfter, st.ImageAfterSh)
		if i := firstDiff(mem, want); i >= 0 {
			fail("ring differs from DPDK's at byte %d (header %+v, DPDK %+v)", i, headerOf(mem), st.HeaderAfter)
		}
		if headerOf(mem) != st.HeaderAfter {
			fail("header %+v, DPDK %+v", headerOf(mem), st.HeaderAfter)
		}
		if st.WriterPriv != nil && ring.WriterIndex() != *st.WriterPriv {
			fail("writer index %d, DPDK's private %d", ring.WriterIndex(), *st.WriterPriv)
		}
		if ring.ReaderIndex() != st.HeaderAfter.ReadIndex {
			fail("reader index %d, read_index %d", ring.ReaderIndex(), st.HeaderAfter.ReadIndex)
		}
		if st.Op != "send" && st.Op != "sendsg" && toReader.Count() != rd0 {
			fail("the writer signaled outside a write")
		}
		if st.Op != "recv" && st.Op != "recv_raw" && toWriter.Count() != wr0 {
			fail("the reader signaled outside a read")
		}
	}
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

func firstDiff(a, b []byte) int {
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}
