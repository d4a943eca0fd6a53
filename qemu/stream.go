package qemu

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/pagewire/pagewire/core"
)

var be = binary.BigEndian

// QEMU main migration stream (QEMUFile) constants, migration/savevm.h and
// migration/ram.c.
const (
	qemuFileMagic   = 0x5145564d // "QEVM"
	qemuFileVersion = 3

	vmEOF           = 0x00
	vmSectionStart  = 0x01
	vmSectionPart   = 0x02
	vmSectionEnd    = 0x03
	vmSectionFull   = 0x04
	vmSubsection    = 0x05
	vmVMDescription = 0x06
	vmConfiguration = 0x07
	vmCommand       = 0x08
	vmSectionFooter = 0x7e

	ramFlagZero         = 0x02
	ramFlagMemSize      = 0x04
	ramFlagPage         = 0x08
	ramFlagEOS          = 0x10
	ramFlagContinue     = 0x20
	ramFlagXBZRLE       = 0x40
	ramFlagHook         = 0x80
	ramFlagCompress     = 0x100
	ramFlagMultifdFlush = 0x200

	ramSectionVersion = 4
	maxRAMBlocks      = 1024
	maxBlockSize      = 1 << 44 // 16 TiB
)

// ramSink is what the main stream's "ram" section does to the
// destination. It is an interface so that the parser can be fuzzed alone.
type ramSink interface {
	Blocks([]core.BlockInfo) error
	Zero(block string, off uint64, fill byte) error
	Page(block string, off uint64, r io.Reader) error
	// Sync is a sync marker: the multifd channels' SYNC point.
	Sync() error
}

// qemuFile parses a QEMU 7.2 main migration stream: header,
// configuration, the "ram" sections, and the device-state tail, which it
// reads to the end but does not interpret.
type qemuFile struct {
	r    *bufio.Reader
	sink ramSink
	off  int64 // bytes consumed, for error messages

	Machine    string
	ramSection uint32
	ramSeen    bool
	ramDone    bool
	lastBlock  string
	blockSizes map[string]uint64
	Sections   int           // sections read
	EOSMarkers atomic.Uint64 // RAM end-of-section markers
	Flushes    atomic.Uint64 // RAM_SAVE_FLAG_MULTIFD_FLUSH markers
	SyncPoints atomic.Uint64 // markers that met every channel's SYNC
	dialect    atomic.Value  // Dialect, once known or insisted on
	ZeroPages  atomic.Uint64 // zero-page records on the main channel
	Pages      atomic.Uint64 // page records on the main channel
	TailBytes  int64         // device state and trailer, kept verbatim
	VMDesc     bool          // the stream ended with a vmdesc JSON
}

func (q *qemuFile) errf(format string, args ...any) error {
	return fmt.Errorf("%w at byte %d: %s", ErrBadStream, q.off, fmt.Sprintf(format, args...))
}

func (q *qemuFile) read(b []byte) error {
	n, err := io.ReadFull(q.r, b)
	q.off += int64(n)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return q.errf("stream ends early")
	}
	return err
}

func (q *qemuFile) u8() (byte, error) {
	b, err := q.r.ReadByte()
	if err == io.EOF {
		return 0, q.errf("stream ends early")
	}
	if err == nil {
		q.off++
	}
	return b, err
}

func (q *qemuFile) u16() (uint16, error) {
	var b [2]byte
	err := q.read(b[:])
	return be.Uint16(b[:]), err
}

func (q *qemuFile) u32() (uint32, error) {
	var b [4]byte
	err := q.read(b[:])
	return be.Uint32(b[:]), err
}

func (q *qemuFile) u64() (uint64, error) {
	var b [8]byte
	err := q.read(b[:])
	return be.Uint64(b[:]), err
}

// str reads a u8-length-prefixed string.
func (q *qemuFile) str() (string, error) {
	n, err := q.u8()
	if err != nil {
		return "", err
	}
	b := make([]byte, n)
	if err := q.read(b); err != nil {
		return "", err
	}
	return string(b), nil
}

// run parses the whole stream, until the source closes it.
func (q *qemuFile) run() error {
	magic, err := q.u32()
	if err != nil {
		return err
	}
	if magic != qemuFileMagic {
		return q.errf("magic %#x, want %#x (QEVM)", magic, qemuFileMagic)
	}
	v, err := q.u32()
	if err != nil {
		return err
	}
	if v != qemuFileVersion {
		return q.errf("file version %d, want %d", v, qemuFileVersion)
	}
	for {
		typ, err := q.u8()
		if err != nil {
			return err
		}
		switch typ {
		case vmConfiguration:
			if err := q.configuration(); err != nil {
				return err
			}
		case vmSectionStart, vmSectionFull:
			id, err := q.u32()
			if err != nil {
				return err
			}
			name, err := q.str()
			if err != nil {
				return err
			}
			instance, err := q.u32()
			if err != nil {
				return err
			}
			version, err := q.u32()
			if err != nil {
				return err
			}
			q.Sections++
			if name != "ram" {
				if typ == vmSectionStart {
					return q.errf("live section %q (instance %d): only \"ram\" is supported (block or dirty-bitmap migration, VFIO?)", name, instance)
				}
				// Device state: kept verbatim, not interpreted.
				if !q.ramDone {
					return q.errf("device section %q before the end of RAM", name)
				}
				return q.tail(false)
			}
			if typ == vmSectionFull || q.ramSeen {
				return q.errf("unexpected \"ram\" section type %d", typ)
			}
			if version != ramSectionVersion {
				return q.errf("\"ram\" section version %d, want %d", version, ramSectionVersion)
			}
			q.ramSeen, q.ramSection = true, id
			if err := q.ramSectionBody(id); err != nil {
				return err
			}
		case vmSectionPart, vmSectionEnd:
			id, err := q.u32()
			if err != nil {
				return err
			}
			q.Sections++
			if !q.ramSeen || id != q.ramSection || q.ramDone {
				return q.errf("section %d (type %d) is not an open \"ram\" section", id, typ)
			}
			if err := q.ramSectionBody(id); err != nil {
				return err
			}
			q.ramDone = typ == vmSectionEnd
		case vmCommand:
			cmd, err := q.u16()
			if err != nil {
				return err
			}
			n, err := q.u16()
			if err != nil {
				return err
			}
			if _, err := q.r.Discard(int(n)); err != nil {
				return q.errf("command %d: stream ends early", cmd)
			}
			q.off += int64(n)
		case vmEOF:
			if !q.ramDone {
				return q.errf("end of stream before the end of RAM")
			}
			return q.tail(true)
		default:
			return q.errf("unknown section type %#x", typ)
		}
	}
}

// configuration reads the machine type and its optional subsections.
func (q *qemuFile) configuration() error {
	n, err := q.u32()
	if err != nil {
		return err
	}
	if n > 256 {
		return q.errf("machine type name of %d bytes", n)
	}
	b := make([]byte, n)
	if err := q.read(b); err != nil {
		return err
	}
	q.Machine = string(b)
	for {
		next, err := q.r.Peek(1)
		if err != nil || next[0] != vmSubsection {
			return nil
		}
		q.u8()
		name, err := q.str()
		if err != nil {
			return err
		}
		if _, err := q.u32(); err != nil { // version_id
			return err
		}
		switch name {
		case "configuration/target-page-bits":
			bits, err := q.u32()
			if err != nil {
				return err
			}
			if bits != 12 {
				return q.errf("target page bits %d: only 4 KiB pages are supported", bits)
			}
		case "configuration/capabilities":
			count, err := q.u32()
			if err != nil {
				return err
			}
			if count > 64 {
				return q.errf("%d capabilities", count)
			}
			for range count {
				if _, err := q.str(); err != nil {
					return err
				}
			}
		case "configuration/uuid":
			var uuid [16]byte
			if err := q.read(uuid[:]); err != nil {
				return err
			}
		default:
			return q.errf("unknown configuration subsection %q", name)
		}
	}
}

// Dialect returns the stream's dialect, "" while unknown.
func (q *qemuFile) Dialect() Dialect {
	d, _ := q.dialect.Load().(Dialect)
	return d
}

// setDialect records the dialect a marker shows, or refuses the marker
// when the stream (or the user) already said otherwise.
func (q *qemuFile) setDialect(d Dialect, marker string) error {
	switch cur := q.Dialect(); {
	case cur == "":
		q.dialect.Store(d)
	case cur != d && d == Dialect10:
		return q.errf("%s: not the QEMU %s dialect", marker, cur)
	case cur != d && q.SyncPoints.Load() == 0:
		return q.errf("%s: not the QEMU %s dialect", marker, cur)
	}
	return nil
}

func (q *qemuFile) sync() error {
	q.SyncPoints.Add(1)
	return q.sink.Sync()
}

// ramSectionBody reads RAM records up to EOS, then the section footer.
func (q *qemuFile) ramSectionBody(id uint32) error {
	for {
		af, err := q.u64()
		if err != nil {
			return err
		}
		flags, addr := af&(core.DefaultPageSize-1), af&^(core.DefaultPageSize-1)
		switch {
		case flags&ramFlagMemSize != 0:
			if flags != ramFlagMemSize {
				return q.errf("MEM_SIZE record with flags %#x", flags)
			}
			if err := q.memSize(addr); err != nil {
				return err
			}
		case flags&ramFlagEOS != 0:
			if flags != ramFlagEOS {
				return q.errf("EOS record with flags %#x", flags)
			}
			q.EOSMarkers.Add(1)
			// The first sync marker tells the dialect: 7.2 syncs at every
			// EOS, QEMU 10 at MULTIFD_FLUSH, one of which comes before the
			// setup section's EOS.
			if err := q.setDialect(Dialect72, "RAM_SAVE_FLAG_EOS before any MULTIFD_FLUSH"); err != nil {
				return err
			}
			if q.Dialect() == Dialect72 {
				if err := q.sync(); err != nil {
					return err
				}
			}
			return q.footer(id)
		case flags&ramFlagMultifdFlush != 0:
			if flags != ramFlagMultifdFlush || addr != 0 {
				return q.errf("MULTIFD_FLUSH record with flags %#x", af)
			}
			if err := q.setDialect(Dialect10, "RAM_SAVE_FLAG_MULTIFD_FLUSH"); err != nil {
				return err
			}
			q.Flushes.Add(1)
			if err := q.sync(); err != nil {
				return err
			}
		case flags&(ramFlagZero|ramFlagPage) != 0:
			block, err := q.block(flags)
			if err != nil {
				return err
			}
			if addr >= q.blockSizes[block] {
				return q.errf("page offset %#x beyond block %q of %d bytes", addr, block, q.blockSizes[block])
			}
			switch flags &^ ramFlagContinue {
			case ramFlagZero:
				fill, err := q.u8()
				if err != nil {
					return err
				}
				q.ZeroPages.Add(1)
				if err := q.sink.Zero(block, addr, fill); err != nil {
					return err
				}
			case ramFlagPage:
				q.Pages.Add(1)
				if err := q.sink.Page(block, addr, io.LimitReader(q.r, core.DefaultPageSize)); err != nil {
					return err
				}
				q.off += core.DefaultPageSize
			default:
				return q.errf("page record with flags %#x", flags)
			}
		case flags&(ramFlagXBZRLE|ramFlagCompress|ramFlagHook) != 0:
			return q.errf("RAM record with flags %#x (XBZRLE, compression or RDMA) is not supported with multifd", flags)
		default:
			return q.errf("RAM record with unknown flags %#x", flags)
		}
	}
}

// block reads the block name of a page record, or takes the previous one
// for RAM_SAVE_FLAG_CONTINUE.
func (q *qemuFile) block(flags uint64) (string, error) {
	if flags&ramFlagContinue != 0 {
		if q.lastBlock == "" {
			return "", q.errf("CONTINUE record without a previous block")
		}
		return q.lastBlock, nil
	}
	name, err := q.str()
	if err != nil {
		return "", err
	}
	if _, ok := q.blockSizes[name]; !ok {
		return "", q.errf("unknown RAM block %q", name)
	}
	q.lastBlock = name
	return name, nil
}

// memSize reads the block list announced at the start of RAM.
func (q *qemuFile) memSize(total uint64) error {
	if q.blockSizes != nil {
		return q.errf("second MEM_SIZE record")
	}
	q.blockSizes = make(map[string]uint64)
	var infos []core.BlockInfo
	var sum uint64
	for sum < total {
		if len(infos) == maxRAMBlocks {
			return q.errf("more than %d RAM blocks", maxRAMBlocks)
		}
		name, err := q.str()
		if err != nil {
			return err
		}
		size, err := q.u64()
		if err != nil {
			return err
		}
		switch {
		case name == "":
			return q.errf("RAM block without a name")
		case size == 0 || size%core.DefaultPageSize != 0 || size > maxBlockSize:
			return q.errf("RAM block %q of %d bytes", name, size)
		case q.blockSizes[name] != 0:
			return q.errf("RAM block %q listed twice", name)
		case size > total-sum:
			return q.errf("RAM blocks add up to more than the announced %d bytes", total)
		}
		q.blockSizes[name] = size
		infos = append(infos, core.BlockInfo{Name: name, Size: size})
		sum += size
	}
	return q.sink.Blocks(infos)
}

func (q *qemuFile) footer(id uint32) error {
	b, err := q.u8()
	if err != nil {
		return err
	}
	if b != vmSectionFooter {
		return q.errf("section footer %#x, want %#x", b, vmSectionFooter)
	}
	got, err := q.u32()
	if err != nil {
		return err
	}
	if got != id {
		return q.errf("footer of section %d closes section %d", got, id)
	}
	return nil
}

// maxTail bounds the device state and trailer kept in memory for the
// end-of-stream check (a plain x86 VM has about 100 KiB).
const maxTail = 64 << 20

// tail reads the device state and the stream's trailer to the end, and
// checks the end (docs/wire-multifd.md): QEMU_VM_EOF then the vmdesc record, 00 06,
// be32 n, n bytes of a JSON object; or, when the machine
// suppresses vmdesc, just the EOF byte. A source that died inside its
// device state fails this check.
func (q *qemuFile) tail(sawEOF bool) error {
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(q.r, maxTail+1))
	q.off += n
	if err != nil {
		return err
	}
	if n > maxTail {
		return q.errf("device state larger than %d bytes", maxTail)
	}
	q.TailBytes = n
	t := buf.Bytes()
	if sawEOF { // the QEMU_VM_EOF byte itself was read by run
		t = append([]byte{vmEOF}, t...)
	}
	if vmdescAt(t) >= 0 {
		q.VMDesc = true
		return nil
	}
	if len(t) > 0 && t[len(t)-1] == vmEOF {
		return nil
	}
	return q.errf("the stream ends inside the device state (no QEMU_VM_EOF and vmdesc at its end)")
}

// vmdescAt finds the QEMU_VM_EOF byte that starts the stream's closing
// vmdesc record, 00 06 be32(n) and n bytes of a JSON object ending the
// stream, or returns -1. (7.2 writes compact JSON from {"page_size":;
// 10.0 spaced JSON from {"configuration":.)
func vmdescAt(t []byte) int {
	if len(t) < 8 || t[len(t)-1] != '}' {
		return -1
	}
	for i := bytes.LastIndexByte(t, vmVMDescription); i >= 1; i = bytes.LastIndexByte(t[:i], vmVMDescription) {
		if t[i-1] == vmEOF && i+5 <= len(t) && int(be.Uint32(t[i+1:i+5])) == len(t)-i-5 && i+5 < len(t) && t[i+5] == '{' {
			return i - 1
		}
	}
	return -1
}
