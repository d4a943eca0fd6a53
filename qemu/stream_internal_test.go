package qemu

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"github.com/pagewire/pagewire/core"
	"io"
	"runtime"
	"strings"
	"testing"
)

// The QEMU main-stream parser on its own: a stub sink that checks every
// call against the announced block list, hand-built streams (valid, bad,
// truncated), and a fuzzer.

// errQFSink is what qfSink returns when told to fail.
var errQFSink = errors.New("qfSink: injected failure")

// qfZero is one zero-page call.
type qfZero struct {
	block string
	off   uint64
	fill  byte
}

// qfSink records what the parser asks of the destination and reports,
// through tb, every call a correct parser would never make.
type qfSink struct {
	tb       testing.TB
	sizes    map[string]uint64 // from blocks
	infos    []core.BlockInfo
	blockN   int // blocks calls
	zeros    []qfZero
	pages    map[string][]byte // block/offset -> content
	pageN    int
	eosN     int
	failFill int // zero with this fill value fails with errQFSink; -1: never
	failEOS  int // the failEOS-th eos fails with errQFSink; 0: never
	failBlk  bool
	failPage bool
}

func newQFSink(tb testing.TB) *qfSink {
	return &qfSink{tb: tb, pages: map[string][]byte{}, failFill: -1}
}

func (s *qfSink) Blocks(infos []core.BlockInfo) error {
	s.blockN++
	if s.blockN > 1 {
		s.tb.Errorf("blocks called %d times", s.blockN)
	}
	s.sizes = map[string]uint64{}
	for _, b := range infos {
		if b.Name == "" || b.Size == 0 || b.Size%core.DefaultPageSize != 0 || b.Size > maxBlockSize {
			s.tb.Errorf("blocks: bad block %+v", b)
		}
		if _, dup := s.sizes[b.Name]; dup {
			s.tb.Errorf("blocks: %q twice", b.Name)
		}
		s.sizes[b.Name] = b.Size
	}
	if len(infos) > maxRAMBlocks {
		s.tb.Errorf("blocks: %d blocks", len(infos))
	}
	s.infos = append([]core.BlockInfo(nil), infos...)
	if s.failBlk {
		return errQFSink
	}
	return nil
}

// check is the bounds check every page record must pass before reaching
// the destination.
func (s *qfSink) check(what, block string, off uint64) {
	size, ok := s.sizes[block]
	switch {
	case s.sizes == nil:
		s.tb.Errorf("%s %q@%#x before the block list", what, block, off)
	case !ok:
		s.tb.Errorf("%s in unknown block %q", what, block)
	case off%core.DefaultPageSize != 0:
		s.tb.Errorf("%s %q@%#x: offset not page aligned", what, block, off)
	case off >= size || off+core.DefaultPageSize > size:
		s.tb.Errorf("%s %q@%#x: beyond the block's %#x bytes", what, block, off, size)
	}
}

func (s *qfSink) Zero(block string, off uint64, fill byte) error {
	s.check("zero", block, off)
	s.zeros = append(s.zeros, qfZero{block, off, fill})
	if int(fill) == s.failFill {
		return errQFSink
	}
	return nil
}

func (s *qfSink) Page(block string, off uint64, r io.Reader) error {
	s.check("page", block, off)
	s.pageN++
	b := make([]byte, core.DefaultPageSize+1)
	n, err := io.ReadFull(r, b)
	switch {
	case n > core.DefaultPageSize:
		s.tb.Errorf("page %q@%#x: the reader gives more than a page", block, off)
	case n < core.DefaultPageSize:
		// As engine.Stream: a short page is the stream's fault.
		return fmt.Errorf("%w: page record: stream ends early", ErrBadStream)
	case err != io.ErrUnexpectedEOF:
		s.tb.Errorf("page %q@%#x: ReadFull: %v", block, off, err)
	}
	s.pages[fmt.Sprintf("%s@%#x", block, off)] = b[:core.DefaultPageSize]
	if s.failPage {
		return errQFSink
	}
	return nil
}

func (s *qfSink) Sync() error {
	s.eosN++
	if s.eosN == s.failEOS {
		return errQFSink
	}
	return nil
}

// qfParse runs the parser over b.
func qfParse(b []byte, s *qfSink) (*qemuFile, error) {
	q := &qemuFile{r: bufio.NewReader(bytes.NewReader(b)), sink: s}
	return q, q.run()
}

// qfBuf builds streams.
type qfBuf struct{ b []byte }

func (w *qfBuf) u8(v ...byte) *qfBuf     { w.b = append(w.b, v...); return w }
func (w *qfBuf) u16(v uint16) *qfBuf     { w.b = be.AppendUint16(w.b, v); return w }
func (w *qfBuf) u32(v uint32) *qfBuf     { w.b = be.AppendUint32(w.b, v); return w }
func (w *qfBuf) u64(v uint64) *qfBuf     { w.b = be.AppendUint64(w.b, v); return w }
func (w *qfBuf) raw(p []byte) *qfBuf     { w.b = append(w.b, p...); return w }
func (w *qfBuf) str(s string) *qfBuf     { return w.u8(byte(len(s))).raw([]byte(s)) }
func (w *qfBuf) header() *qfBuf          { return w.u32(qemuFileMagic).u32(qemuFileVersion) }
func (w *qfBuf) eos() *qfBuf             { return w.u64(ramFlagEOS) }
func (w *qfBuf) footer(id uint32) *qfBuf { return w.u8(vmSectionFooter).u32(id) }

func (w *qfBuf) config(machine string) *qfBuf {
	return w.u8(vmConfiguration).u32(uint32(len(machine))).raw([]byte(machine))
}

func (w *qfBuf) subsection(name string) *qfBuf {
	return w.u8(vmSubsection).str(name).u32(1)
}

// start opens a section with a full header (START or FULL).
func (w *qfBuf) start(typ byte, id uint32, name string, instance, version uint32) *qfBuf {
	return w.u8(typ).u32(id).str(name).u32(instance).u32(version)
}

func (w *qfBuf) memSize(blocks ...core.BlockInfo) *qfBuf {
	var total uint64
	for _, b := range blocks {
		total += b.Size
	}
	w.u64(total | ramFlagMemSize)
	for _, b := range blocks {
		w.str(b.Name).u64(b.Size)
	}
	return w
}

// zero writes a ZERO record; block "" is CONTINUE.
func (w *qfBuf) zero(block string, off uint64, fill byte) *qfBuf {
	if block == "" {
		return w.u64(off | ramFlagZero | ramFlagContinue).u8(fill)
	}
	return w.u64(off | ramFlagZero).str(block).u8(fill)
}

// page writes a PAGE record; block "" is CONTINUE.
func (w *qfBuf) page(block string, off uint64, data []byte) *qfBuf {
	if block == "" {
		w.u64(off | ramFlagPage | ramFlagContinue)
	} else {
		w.u64(off | ramFlagPage).str(block)
	}
	return w.raw(data)
}

const qfRAMID = 2

var qfBlocks = []core.BlockInfo{
	{Name: "pc.ram", Size: 1 << 20},
	{Name: "vga.vram", Size: 64 << 10},
	{Name: "/rom@etc/acpi/tables", Size: 128 << 10},
}

const qfMachine = "pc-i440fx-7.2"

// qfPrefix is a valid stream up to and with the START "ram" section.
func qfPrefix() *qfBuf {
	w := new(qfBuf).header().config(qfMachine)
	return w.start(vmSectionStart, qfRAMID, "ram", 0, ramSectionVersion).memSize(qfBlocks...).eos().footer(qfRAMID)
}

// qfEnd closes RAM with an END section holding one zero page.
func qfEnd(w *qfBuf) *qfBuf {
	return w.u8(vmSectionEnd).u32(qfRAMID).zero("/rom@etc/acpi/tables", 0x1f000, 0).eos().footer(qfRAMID)
}

func qfPageData(seed byte) []byte {
	b := make([]byte, core.DefaultPageSize)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

const qfVMDesc = `{"page_size":4096,"devices":[{"name":"timer","instance_id":0,"vmsd_name":"timer","version":2,"fields":[]}]}`

type qfValid struct {
	name        string
	subsections bool // configuration subsections
	command     bool // a PING command between sections
	pages       bool // PAGE records (postcopy-style) in a PART section
	device      bool // a FULL device section after the END
	vmdesc      bool

	b         []byte
	tailStart int // offset where the parser stops interpreting
	eos       uint64
	zeros     []qfZero
	pageData  map[string][]byte
}

func (v *qfValid) build() {
	w := new(qfBuf).header().config(qfMachine)
	if v.subsections {
		w.subsection("configuration/target-page-bits").u32(12)
		w.subsection("configuration/capabilities").u32(1).str("x-ignore-shared")
		w.subsection("configuration/uuid").raw(bytes.Repeat([]byte{0xab}, 16))
	}
	w.start(vmSectionStart, qfRAMID, "ram", 0, ramSectionVersion).memSize(qfBlocks...).eos().footer(qfRAMID)
	v.eos = 1
	v.pageData = map[string][]byte{}
	// PART: zero pages, named and CONTINUE, the first and last page of
	// two blocks.
	w.u8(vmSectionPart).u32(qfRAMID)
	for _, z := range []qfZero{
		{"pc.ram", 0, 0}, {"", 0x1000, 0}, {"", 0xff000, 0},
		{"vga.vram", 0, 0}, {"", 0xf000, 0},
	} {
		w.zero(z.block, z.off, z.fill)
		if z.block == "" {
			z.block = v.zeros[len(v.zeros)-1].block
		}
		v.zeros = append(v.zeros, z)
	}
	if v.pages {
		p1, p2 := qfPageData(1), qfPageData(2)
		w.page("pc.ram", 0x2000, p1).page("", 0x3000, p2)
		v.pageData["pc.ram@0x2000"], v.pageData["pc.ram@0x3000"] = p1, p2
	}
	w.eos().footer(qfRAMID)
	v.eos++
	if v.command {
		w.u8(vmCommand).u16(2).u16(4).u32(1) // MIG_CMD_PING 1
	}
	// An empty PART, then END.
	w.u8(vmSectionPart).u32(qfRAMID).eos().footer(qfRAMID)
	v.eos++
	qfEnd(w)
	v.zeros = append(v.zeros, qfZero{"/rom@etc/acpi/tables", 0x1f000, 0})
	v.eos++
	if v.device {
		w.start(vmSectionFull, 3, "timer", 0, 2)
		v.tailStart = len(w.b)
		w.u64(0x1234).u64(0x5678).footer(3).u8(vmEOF)
	} else {
		w.u8(vmEOF)
		v.tailStart = len(w.b)
	}
	if v.vmdesc {
		w.u8(vmVMDescription).u32(uint32(len(qfVMDesc))).raw([]byte(qfVMDesc))
	}
	v.b = w.b
}

func qfValidStreams() []*qfValid {
	vs := []*qfValid{
		{name: "minimal"},
		{name: "vmdesc", vmdesc: true},
		{name: "device", device: true},
		{name: "device+vmdesc", device: true, vmdesc: true},
		{name: "subsections", subsections: true, device: true, vmdesc: true},
		{name: "pages", pages: true, device: true, vmdesc: true},
		{name: "everything", subsections: true, command: true, pages: true, device: true, vmdesc: true},
	}
	for _, v := range vs {
		v.build()
	}
	return vs
}

func TestQEMUFileTable(t *testing.T) {
	for _, v := range qfValidStreams() {
		t.Run(v.name, func(t *testing.T) {
			s := newQFSink(t)
			q, err := qfParse(v.b, s)
			if err != nil {
				t.Fatal(err)
			}
			if q.Machine != qfMachine {
				t.Errorf("Machine %q, want %q", q.Machine, qfMachine)
			}
			if got := q.EOSMarkers.Load(); got != v.eos || s.eosN != int(v.eos) {
				t.Errorf("EOSMarkers %d, sink saw %d, want %d", got, s.eosN, v.eos)
			}
			if got := q.ZeroPages.Load(); got != uint64(len(v.zeros)) {
				t.Errorf("ZeroPages %d, want %d", got, len(v.zeros))
			}
			if got := q.Pages.Load(); got != uint64(len(v.pageData)) || s.pageN != len(v.pageData) {
				t.Errorf("Pages %d, sink saw %d, want %d", got, s.pageN, len(v.pageData))
			}
			if want := int64(len(v.b) - v.tailStart); q.TailBytes != want {
				t.Errorf("TailBytes %d, want %d", q.TailBytes, want)
			}
			if q.VMDesc != v.vmdesc {
				t.Errorf("VMDesc %v, want %v", q.VMDesc, v.vmdesc)
			}
			if q.off != int64(len(v.b)) {
				t.Errorf("consumed %d bytes of %d", q.off, len(v.b))
			}
			if !q.ramDone || q.ramSection != qfRAMID {
				t.Errorf("ramDone %v, ramSection %d", q.ramDone, q.ramSection)
			}
			if s.blockN != 1 || fmt.Sprint(s.infos) != fmt.Sprint(qfBlocks) {
				t.Errorf("blocks %d calls, %v; want %v", s.blockN, s.infos, qfBlocks)
			}
			if fmt.Sprint(s.zeros) != fmt.Sprint(v.zeros) {
				t.Errorf("zero pages\n%v\nwant\n%v", s.zeros, v.zeros)
			}
			for k, want := range v.pageData {
				if !bytes.Equal(s.pages[k], want) {
					t.Errorf("page %s differs", k)
				}
			}
		})
	}

	// Bad streams. Every one is an error wrapping ErrBadStream, with a
	// message that says what is wrong.
	ram := func() *qfBuf { return qfPrefix() }
	part := func() *qfBuf { return ram().u8(vmSectionPart).u32(qfRAMID) }
	ramStart := func(blocks ...core.BlockInfo) *qfBuf {
		return new(qfBuf).header().config(qfMachine).start(vmSectionStart, qfRAMID, "ram", 0, ramSectionVersion).memSize(blocks...)
	}
	memSizeRaw := func(total uint64) *qfBuf {
		return new(qfBuf).header().config(qfMachine).start(vmSectionStart, qfRAMID, "ram", 0, ramSectionVersion).u64(total | ramFlagMemSize)
	}
	bad := []struct {
		name string
		b    []byte
		msg  string
	}{
		{"bad magic", new(qfBuf).u32(0x5145564e).u32(3).b, "magic"},
		{"not QEVM at all", []byte("GET / HTTP/1.1\r\n\r\n"), "magic"},
		{"version 2", new(qfBuf).u32(qemuFileMagic).u32(2).b, "file version 2"},
		{"unknown section type", new(qfBuf).header().config(qfMachine).u8(0x09).b, "unknown section type 0x9"},
		{"subsection at top level", new(qfBuf).header().u8(vmSubsection).b, "unknown section type 0x5"},
		{"vmdesc before EOF", new(qfBuf).header().u8(vmVMDescription).b, "unknown section type 0x6"},
		{"machine name too long", new(qfBuf).header().config(strings.Repeat("m", 257)).b, "machine type name of 257 bytes"},
		{"unknown config subsection", new(qfBuf).header().config(qfMachine).subsection("configuration/foo").b, "unknown configuration subsection"},
		{"target page bits 16", new(qfBuf).header().config(qfMachine).subsection("configuration/target-page-bits").u32(16).b, "target page bits 16"},
		{"too many capabilities", new(qfBuf).header().config(qfMachine).subsection("configuration/capabilities").u32(65).b, "65 capabilities"},
		{"live START not ram", new(qfBuf).header().config(qfMachine).start(vmSectionStart, 1, "block", 0, 1).b, `live section "block"`},
		{"live START dirty-bitmap after ram", ram().start(vmSectionStart, 5, "dirty-bitmap", 0, 1).b, `live section "dirty-bitmap"`},
		{"ram version 3", new(qfBuf).header().config(qfMachine).start(vmSectionStart, qfRAMID, "ram", 0, 3).b, `"ram" section version 3, want 4`},
		{"ram as FULL", new(qfBuf).header().config(qfMachine).start(vmSectionFull, qfRAMID, "ram", 0, 4).b, `unexpected "ram" section type 4`},
		{"second ram START", ram().start(vmSectionStart, 7, "ram", 0, 4).b, `unexpected "ram" section type 1`},
		{"device section before END of ram", ram().start(vmSectionFull, 3, "timer", 0, 2).u64(0).b, `device section "timer" before the end of RAM`},
		{"device section before any ram", new(qfBuf).header().config(qfMachine).start(vmSectionFull, 3, "timer", 0, 2).b, "before the end of RAM"},
		{"EOF before END of ram", ram().u8(vmEOF).b, "end of stream before the end of RAM"},
		{"EOF without ram", new(qfBuf).header().config(qfMachine).u8(vmEOF).b, "end of stream before the end of RAM"},
		{"PART of another section", ram().u8(vmSectionPart).u32(9).b, "section 9 (type 2) is not an open"},
		{"PART before START", new(qfBuf).header().u8(vmSectionPart).u32(qfRAMID).b, "is not an open"},
		{"PART after END", qfEnd(ram()).u8(vmSectionPart).u32(qfRAMID).b, "is not an open"},
		{"truncated command", ram().u8(vmCommand).u16(2).u16(4).u8(0, 0).b, "command 2: stream ends early"},
		{"CONTINUE without a previous block", part().zero("", 0, 0).b, "CONTINUE record without a previous block"},
		{"CONTINUE page without a previous block", part().page("", 0, qfPageData(0)).b, "CONTINUE record without a previous block"},
		{"unknown block name", part().zero("pc.rom", 0, 0).b, `unknown RAM block "pc.rom"`},
		{"zero before the block list", new(qfBuf).header().start(vmSectionStart, qfRAMID, "ram", 0, 4).zero("pc.ram", 0, 0).b, `unknown RAM block "pc.ram"`},
		{"offset beyond block", part().zero("vga.vram", 64<<10, 0).b, `page offset 0x10000 beyond block "vga.vram" of 65536 bytes`},
		{"CONTINUE offset beyond block", part().zero("vga.vram", 0, 0).zero("", 1<<20, 0).b, `beyond block "vga.vram"`},
		{"page offset beyond block", part().page("pc.ram", 1<<20, qfPageData(0)).b, `beyond block "pc.ram"`},
		{"huge offset", part().zero("pc.ram", 0xfffffffffffff000, 0).b, "beyond block"},
		{"MEM_SIZE blocks past the total", memSizeRaw(0x1000).str("pc.ram").u64(0x2000).b, "add up to more than the announced 4096 bytes"},
		{"MEM_SIZE second block past the total", memSizeRaw(0x3000).str("a").u64(0x2000).str("b").u64(0x2000).b, "add up to more than"},
		{"duplicate block", memSizeRaw(0x2000).str("pc.ram").u64(0x1000).str("pc.ram").u64(0x1000).b, `RAM block "pc.ram" listed twice`},
		{"block size 0", memSizeRaw(0x1000).str("pc.ram").u64(0).b, `RAM block "pc.ram" of 0 bytes`},
		{"block size not a page multiple", memSizeRaw(0x2000).str("pc.ram").u64(0x1800).b, `RAM block "pc.ram" of 6144 bytes`},
		{"block beyond 16 TiB", memSizeRaw(0xfffffffffffff000).str("pc.ram").u64(maxBlockSize + core.DefaultPageSize).b, "RAM block \"pc.ram\" of"},
		{"block without a name", memSizeRaw(0x1000).str("").u64(0x1000).b, "RAM block without a name"},
		{"second MEM_SIZE", ram().u8(vmSectionPart).u32(qfRAMID).memSize(qfBlocks...).b, "second MEM_SIZE record"},
		{"MEM_SIZE with ZERO flag", ram().u8(vmSectionPart).u32(qfRAMID).u64(ramFlagMemSize | ramFlagZero).b, "MEM_SIZE record with flags 0x6"},
		{"EOS with CONTINUE flag", part().u64(ramFlagEOS | ramFlagContinue).b, "EOS record with flags 0x30"},
		{"ZERO and PAGE", part().u64(ramFlagZero | ramFlagPage).str("pc.ram").b, "page record with flags 0xa"},
		{"ZERO with MULTIFD_FLUSH", part().u64(ramFlagZero | ramFlagMultifdFlush).str("pc.ram").b, "MULTIFD_FLUSH record with flags 0x202"},
		{"bad footer byte", ramStart(qfBlocks...).eos().u8(0x7f).u32(qfRAMID).b, "section footer 0x7f, want 0x7e"},
		{"no footer", ramStart(qfBlocks...).eos().u8(vmSectionPart).u32(qfRAMID).b, "section footer 0x2, want 0x7e"},
		{"footer with the wrong section id", ramStart(qfBlocks...).eos().footer(9).b, "footer of section 9 closes section 2"},
		{"PART footer with the wrong section id", part().eos().footer(3).b, "footer of section 3 closes section 2"},
		{"MULTIFD_FLUSH after a 7.2 sync", part().u64(ramFlagMultifdFlush).b, "RAM_SAVE_FLAG_MULTIFD_FLUSH: not the QEMU 7.2 dialect"},
		{"XBZRLE", part().u64(ramFlagXBZRLE).str("pc.ram").b, "XBZRLE"},
		{"COMPRESS_PAGE", part().u64(ramFlagCompress | ramFlagContinue).b, "flags 0x120"},
		{"HOOK", part().u64(ramFlagHook).b, "RDMA"},
		{"FULL flag", part().u64(0x01).b, "RAM record with unknown flags 0x1"},
		{"no flags", part().u64(0x5000).b, "RAM record with unknown flags 0x0"},
		{"CONTINUE alone", part().u64(ramFlagContinue).b, "unknown flags 0x20"},
	}
	// More than maxRAMBlocks blocks, under a huge total.
	many := memSizeRaw(0xfffffffffffff000)
	for i := range maxRAMBlocks + 1 {
		many.str(fmt.Sprintf("b%d", i)).u64(core.DefaultPageSize)
	}
	bad = append(bad, struct {
		name string
		b    []byte
		msg  string
	}{"more than 1024 blocks", many.b, "more than 1024 RAM blocks"})

	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			q, err := qfParse(c.b, newQFSink(t))
			if !errors.Is(err, ErrBadStream) {
				t.Fatalf("run: %v, want ErrBadStream", err)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q does not say %q", err, c.msg)
			}
			if q.off > int64(len(c.b)) {
				t.Errorf("consumed %d bytes of %d", q.off, len(c.b))
			}
		})
	}
}

// TestQEMUFileTruncated cuts every valid stream at every length. Before
// the device-state tail every cut is an error. Inside the tail, the end
// check (QEMU_VM_EOF and vmdesc, spec 8.6) refuses every cut, except where
// the cut happens to leave a 0x00 byte last: that is what a stream without
// vmdesc looks like, and the spec's check cannot tell it apart.
func TestQEMUFileTruncated(t *testing.T) {
	for _, v := range qfValidStreams() {
		t.Run(v.name, func(t *testing.T) {
			for n := range len(v.b) {
				q, err := qfParse(v.b[:n], newQFSink(t))
				if n < v.tailStart {
					if !errors.Is(err, ErrBadStream) || !strings.Contains(err.Error(), "ends early") {
						t.Fatalf("cut at %d of %d: %v, want ErrBadStream: ... ends early", n, len(v.b), err)
					}
					continue
				}
				if v.b[n-1] != vmEOF {
					if !errors.Is(err, ErrBadStream) || !strings.Contains(err.Error(), "ends inside the device state") {
						t.Fatalf("cut at %d in the tail (from %d): %v, want ErrBadStream: ... ends inside the device state", n, v.tailStart, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("cut at %d after a 0x00 byte: %v", n, err)
				}
				if q.TailBytes != int64(n-v.tailStart) {
					t.Fatalf("cut at %d: TailBytes %d, want %d", n, q.TailBytes, n-v.tailStart)
				}
			}
		})
	}
}

// TestQEMUFileSinkErrors: the sink's errors end the parse unchanged.
func TestQEMUFileSinkErrors(t *testing.T) {
	var v *qfValid
	for _, vv := range qfValidStreams() {
		if vv.name == "everything" {
			v = vv
		}
	}
	for name, set := range map[string]func(*qfSink){
		"blocks":    func(s *qfSink) { s.failBlk = true },
		"zero":      func(s *qfSink) { s.failFill = 0 },
		"page":      func(s *qfSink) { s.failPage = true },
		"first eos": func(s *qfSink) { s.failEOS = 1 },
		"last eos":  func(s *qfSink) { s.failEOS = int(v.eos) },
	} {
		t.Run(name, func(t *testing.T) {
			s := newQFSink(t)
			set(s)
			if _, err := qfParse(v.b, s); !errors.Is(err, errQFSink) {
				t.Fatalf("run: %v, want the sink's error", err)
			}
		})
	}
}

// TestQEMUFileHugeMemSize: a MEM_SIZE record announcing far more RAM than
// the bytes that follow costs no more memory than the bytes do.
func TestQEMUFileHugeMemSize(t *testing.T) {
	const total = 0xfffffffffffff000
	few := new(qfBuf).header().start(vmSectionStart, qfRAMID, "ram", 0, 4).u64(total | ramFlagMemSize).str("pc.ram").u64(maxBlockSize).b
	many := new(qfBuf).header().start(vmSectionStart, qfRAMID, "ram", 0, 4).u64(total | ramFlagMemSize)
	for i := range maxRAMBlocks + 10 {
		many.str(fmt.Sprintf("%0255d", i)).u64(maxBlockSize)
	}
	for _, c := range []struct {
		name string
		b    []byte
		msg  string
	}{
		{"few bytes", few, "ends early"},
		{"many blocks", many.b, "more than 1024 RAM blocks"},
		{"no block", new(qfBuf).header().start(vmSectionStart, qfRAMID, "ram", 0, 4).u64(total | ramFlagMemSize).b, "ends early"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err := qfParse(c.b, newQFSink(t))
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrBadStream) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("run: %v, want ErrBadStream: ... %s", err, c.msg)
			}
			// The block list itself (names, map, slice) plus the reader.
			limit := uint64(4*len(c.b) + 256<<10)
			if got := after.TotalAlloc - before.TotalAlloc; got > limit {
				t.Errorf("allocated %d bytes for a %d-byte stream, want at most %d", got, len(c.b), limit)
			}
		})
	}
}

// FuzzQEMUFile feeds the parser any stream. The valid streams with PAGE
// records are left out of the seeds: every input of more than a page
// takes the minimizer up to -fuzzminimizetime whenever it is interesting,
// and the table tests cover them; a PAGE record the stream cuts short
// stays in.
func FuzzQEMUFile(f *testing.F) {
	for _, v := range qfValidStreams() {
		if len(v.pageData) == 0 {
			f.Add(v.b)
		}
	}
	f.Add(qfPrefix().u8(vmSectionPart).u32(qfRAMID).page("pc.ram", 0x2000, []byte{1, 2, 3}).b)
	f.Add(qfPrefix().b)
	f.Add(qfEnd(qfPrefix()).b)
	f.Add(qfPrefix().u8(vmSectionPart).u32(qfRAMID).zero("pc.ram", 0, 0xee).eos().footer(qfRAMID).b) // sink error
	f.Add(qfPrefix().u8(vmSectionPart).u32(qfRAMID).u64(ramFlagMultifdFlush).b)
	f.Add(new(qfBuf).header().start(vmSectionStart, qfRAMID, "ram", 0, 4).u64(0xfffffffffffff000 | ramFlagMemSize).str("pc.ram").u64(0x1000).b)
	f.Fuzz(func(t *testing.T, b []byte) {
		s := newQFSink(t)
		s.failFill = 0xee
		q, err := qfParse(b, s)
		if err != nil && !errors.Is(err, ErrBadStream) && !errors.Is(err, errQFSink) {
			t.Fatalf("error %q wraps neither ErrBadStream nor the sink's error", err)
		}
		// The counters count the sink's calls.
		// Sync points (EOS in 7.2, MULTIFD_FLUSH in 10.0) are the sink's eos calls.
		if q.ZeroPages.Load() != uint64(len(s.zeros)) || q.Pages.Load() != uint64(s.pageN) || q.SyncPoints.Load() != uint64(s.eosN) {
			t.Fatalf("counters %d zero, %d pages, %d sync points; the sink saw %d, %d, %d",
				q.ZeroPages.Load(), q.Pages.Load(), q.SyncPoints.Load(), len(s.zeros), s.pageN, s.eosN)
		}
		if q.off > int64(len(b)) || q.off < 0 {
			t.Fatalf("consumed %d bytes of %d", q.off, len(b))
		}
		if err != nil {
			return
		}
		switch {
		case !q.ramSeen || !q.ramDone:
			t.Fatalf("accepted a stream without a closed \"ram\" section (seen %v, done %v)", q.ramSeen, q.ramDone)
		case q.off != int64(len(b)):
			t.Fatalf("accepted after consuming %d bytes of %d", q.off, len(b))
		case q.TailBytes < 0 || q.TailBytes > int64(len(b)):
			t.Fatalf("TailBytes %d of %d", q.TailBytes, len(b))
		case q.VMDesc && (q.TailBytes == 0 || b[len(b)-1] != '}' || !bytes.Contains(b, []byte{vmEOF, vmVMDescription})):
			// 7.2's vmdesc is compact JSON from {"page_size":, 10.0's is
			// spaced; both end the stream with 00 06 be32(n) {...}.
			t.Fatalf("VMDesc on a tail of %d bytes without a vmdesc record", q.TailBytes)
		case !q.VMDesc && b[len(b)-1] != vmEOF:
			t.Fatalf("accepted a tail ending %q, neither vmdesc nor QEMU_VM_EOF", b[len(b)-1:])
		case len(q.Machine) > 256:
			t.Fatalf("machine name of %d bytes", len(q.Machine))
		}
	})
}
