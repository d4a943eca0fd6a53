package gateway_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/plugins/builtin"
	"github.com/pagewire/pagewire/qemu"
	"github.com/pagewire/pagewire/qemu/gateway"
	"github.com/pagewire/pagewire/sdk"
)

// A QEMU main stream, built by hand (see qemu/stream.go and
// docs/wire-multifd.md).
const (
	qemuFileMagic       = 0x5145564d // "QEVM"
	qemuFileVersion     = 3
	vmEOF               = 0x00
	vmSectionStart      = 0x01
	vmSectionPart       = 0x02
	vmSectionEnd        = 0x03
	vmConfiguration     = 0x07
	vmSectionFooter     = 0x7e
	ramFlagZero         = 0x02
	ramFlagMemSize      = 0x04
	ramFlagEOS          = 0x10
	ramFlagMultifdFlush = 0x200
	ramSectionVersion   = 4
	ramSectionID        = 2
	machine             = "pc-i440fx-7.2"
	pageSize            = 4096
)

// stream appends a QEMU main stream's fields.
type stream struct{ b []byte }

func (w *stream) u8(v byte) *stream    { w.b = append(w.b, v); return w }
func (w *stream) u32(v uint32) *stream { w.b = binary.BigEndian.AppendUint32(w.b, v); return w }
func (w *stream) u64(v uint64) *stream { w.b = binary.BigEndian.AppendUint64(w.b, v); return w }
func (w *stream) str(s string) *stream { w.u8(byte(len(s))); w.b = append(w.b, s...); return w }

// marker ends a RAM section at a sync point of the dialect.
func (w *stream) marker(d core.Dialect) *stream {
	if d == core.Dialect10 {
		w.u64(ramFlagMultifdFlush)
	}
	return w.u64(ramFlagEOS).u8(vmSectionFooter).u32(ramSectionID)
}

// migration is a QEMU source's migration, played by a qemu.NewSender:
// the setup's sync point, then rounds in which pages of every block are
// rewritten and sent by multifd, each ending at a sync point whose main
// stream chunk also zeroes one page of pc.ram.
type migration struct {
	dialect core.Dialect
	method  sdk.Method // the source's multifd-compression; nil is none
	uuid    [16]byte
	mem     core.Blocks // the source's RAM; its final state once played
	rounds  int
	main    []byte // the whole main stream, once played
}

func newMigration(d core.Dialect, rounds int) *migration {
	m := &migration{dialect: d, rounds: rounds, uuid: [16]byte{0xc0, 0xff, 0xee, 15: 1}}
	m.mem = core.Blocks{
		{Name: "pc.ram", Data: make([]byte, 1<<20)},
		{Name: "vga.vram", Data: make([]byte, 64<<10)},
	}
	return m
}

// ramBytes is the size of the migration's RAM.
func (m *migration) ramBytes() int64 {
	var n int64
	for _, b := range m.mem {
		n += int64(len(b.Data))
	}
	return n
}

// round rewrites the pages of round k (three pages in four, another
// quarter left out each round) and returns their offsets per block.
func (m *migration) round(k int) map[string][]uint64 {
	pages := map[string][]uint64{}
	for bi, b := range m.mem {
		for p := range len(b.Data) / pageSize {
			if p%4 == k%4 {
				continue
			}
			page := b.Data[p*pageSize : (p+1)*pageSize]
			for j := range page {
				page[j] = byte(k+1) ^ byte(p*7+bi) ^ byte(j>>3)
			}
			pages[b.Name] = append(pages[b.Name], uint64(p*pageSize))
		}
	}
	return pages
}

// zeroed is the page of pc.ram that round k's chunk zeroes: one the
// round did not send (it would race with the record), which the round
// before did.
func zeroed(k int) uint64 { return uint64(k%4+4*(k+1)) * pageSize }

// play migrates m as a QEMU source would to d (a gateway.In's listener).
// after, when not nil, runs after round k's pages are synced.
func (m *migration) play(ctx context.Context, d gateway.Dialer, after func(k int)) (err error) {
	s, err := qemu.NewSender(ctx, d, m.mem, core.SenderConfig{Channels: 2, Dialect: m.dialect, UUID: m.uuid, Method: m.method})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			s.Abort(err)
		}
	}()
	write := func(b []byte) error {
		m.main = append(m.main, b...)
		return s.WriteMain(b)
	}
	w := new(stream).u32(qemuFileMagic).u32(qemuFileVersion)
	w.u8(vmConfiguration).u32(uint32(len(machine)))
	w.b = append(w.b, machine...)
	w.u8(vmSectionStart).u32(ramSectionID).str("ram").u32(0).u32(ramSectionVersion)
	w.u64(uint64(m.ramBytes()) | ramFlagMemSize)
	for _, b := range m.mem {
		w.str(b.Name).u64(uint64(len(b.Data)))
	}
	if err := write(w.marker(m.dialect).b); err != nil {
		return err
	}
	if err := s.Sync(); err != nil {
		return err
	}
	for k := range m.rounds {
		for block, offs := range m.round(k) {
			if err := s.SendPages(block, offs); err != nil {
				return err
			}
		}
		if err := s.Sync(); err != nil {
			return err
		}
		if after != nil {
			after(k)
		}
		typ := byte(vmSectionPart)
		if k == m.rounds-1 {
			typ = vmSectionEnd
		}
		off := zeroed(k)
		clear(m.mem[0].Data[off : off+pageSize])
		w := new(stream).u8(typ).u32(ramSectionID).u64(off | ramFlagZero).str("pc.ram").u8(0)
		if err := write(w.marker(m.dialect).b); err != nil {
			return err
		}
	}
	if err := write([]byte{vmEOF}); err != nil {
		return err
	}
	_, err = s.Close()
	return err
}

// destination is a QEMU destination: a qemu.Receiver on 127.0.0.1.
type destination struct {
	Dialer gateway.Dialer // for gateway.Out's Dest
	main   bytes.Buffer
	done   chan struct{}
	mem    core.Memory
	err    error
}

// startDestination listens for a migration of m with channels multifd
// channels of method.
func startDestination(ctx context.Context, m *migration, channelCount int, method string) (*destination, error) {
	meth, err := builtin.Methods().Lookup(method)
	if err != nil {
		return nil, err
	}
	ln, d, err := listen()
	if err != nil {
		return nil, err
	}
	dst := &destination{Dialer: d, done: make(chan struct{})}
	q := qemu.NewReceiver(qemu.Config{
		Channels: channelCount, Method: meth, Dialect: m.dialect, UUID: m.uuid, Main: &dst.main,
		// A destination the Out never reached (its leg was cut first)
		// gives up well within the tests' bounds.
		HandshakeTimeout: 5 * time.Second,
	})
	go func() {
		defer close(dst.done)
		dst.mem, dst.err = q.Receive(ctx, ln)
	}()
	return dst, nil
}

// wait returns the destination's RAM once the migration has ended.
func (d *destination) wait() (core.Memory, error) {
	<-d.done
	return d.mem, d.err
}

// matches reports whether the destination received m: the same RAM and
// the same main stream, byte for byte.
func (d *destination) matches(m *migration) error {
	mem, err := d.wait()
	if err != nil {
		return err
	}
	got := mem.Blocks()
	if len(got) != len(m.mem) {
		return fmt.Errorf("%d blocks, want %d", len(got), len(m.mem))
	}
	for i, b := range m.mem {
		if got[i].Name != b.Name || !bytes.Equal(got[i].Data, b.Data) {
			return fmt.Errorf("block %s differs", b.Name)
		}
	}
	if !bytes.Equal(d.main.Bytes(), m.main) {
		return fmt.Errorf("main stream of %d bytes, want %d", d.main.Len(), len(m.main))
	}
	return nil
}

// listen opens a listener on 127.0.0.1 and a dialer to it.
func listen() (net.Listener, gateway.Dialer, error) {
	ln, err := channels.Listen("tcp:127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	d, err := channels.NewDialer(channels.Addr(ln.Addr()))
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	return ln, d, nil
}

// result is what a Run returned.
type result struct {
	st  core.Stats
	err error
}

// pair is a gateway.In and a gateway.Out running, linked.
type pair struct {
	Source  gateway.Dialer // the In's listener, for the source
	in, out chan result
}

// startPair runs in and out, in's Link dialing out's listener (through
// wrap, when not nil).
func startPair(ctx context.Context, in *gateway.In, out *gateway.Out, wrap func(gateway.Dialer) gateway.Dialer) (*pair, error) {
	return startPairLn(ctx, in, out, wrap, nil)
}

// startPairLn is startPair with the Out's listener wrapped by wrapLn.
func startPairLn(ctx context.Context, in *gateway.In, out *gateway.Out, wrap func(gateway.Dialer) gateway.Dialer, wrapLn func(net.Listener) net.Listener) (*pair, error) {
	lnOut, link, err := listen()
	if err != nil {
		return nil, err
	}
	if wrapLn != nil {
		lnOut = wrapLn(lnOut)
	}
	lnIn, src, err := listen()
	if err != nil {
		lnOut.Close()
		return nil, err
	}
	if wrap != nil {
		link = wrap(link)
	}
	in.Link = link
	p := &pair{Source: src, in: make(chan result, 1), out: make(chan result, 1)}
	go func() {
		st, err := out.Run(ctx, lnOut)
		p.out <- result{st, err}
	}()
	go func() {
		st, err := in.Run(ctx, lnIn)
		p.in <- result{st, err}
	}()
	return p, nil
}

// wait returns what both Runs returned.
func (p *pair) wait() (in, out result) {
	return <-p.in, <-p.out
}

// cutDialer records the connections it opens, for Cut.
type cutDialer struct {
	d     gateway.Dialer
	mu    sync.Mutex
	conns []net.Conn
	cut   bool
}

func (c *cutDialer) Dial(ctx context.Context) (net.Conn, error) {
	c.mu.Lock()
	cut := c.cut
	c.mu.Unlock()
	if cut {
		return nil, errors.New("cut")
	}
	conn, err := c.d.Dial(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		conn.Close()
		return nil, errors.New("cut")
	}
	c.conns = append(c.conns, conn)
	return conn, nil
}

// Reset closes every connection; later Dials work.
func (c *cutDialer) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

// Cut closes every connection, and fails every later Dial.
func (c *cutDialer) Cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = true
	for _, conn := range c.conns {
		conn.Close()
	}
}
