// Package linkemu emulates a network link between two hosts in user
// space: a TCP proxy that forwards each accepted connection to a target
// address through a link with a limited rate and a one-way delay, that
// can be made a black hole for a while, and whose connections can be
// reset. It stands in for netem in the migration lab, between a QEMU
// migration source and its destination or between two gateways.
//
// # Model
//
// Each direction of a [Link] (Up: client to target, Down: target to
// client) is one serializer shared by all the connections of the link.
// The proxy reads a chunk from a sender (about one millisecond of link
// time: 1500 bytes to 16 KiB; 64 KiB when the rate is unlimited), the
// chunk waits for the serializer, takes len*8/Rate to be serialized, then
// propagates for Delay, and only then is it written to the receiver. A
// chunk is thus written Delay after its last bit left the serializer, as
// on a real link, and the data of one connection stays in order. There
// is no burst: an idle link does not save up credit.
//
// The proxy reads from a sender only as fast as the link drains: it reads
// a chunk only when the serializer of its direction has at most Buffer of
// link time queued, so a sender that outruns the link is slowed down by
// TCP flow control, as behind a shallow router queue, not by a deep
// buffer hidden in the emulator. A direction of a connection thus holds
// at most Rate*(Delay+Buffer)/8 bytes on the link plus one chunk; the
// proxy lets it hold Buffer's worth more that has arrived but is not
// written yet to a slow receiver, and no more (at least 64 KiB, at most
// 64 MiB; 16 MiB when the rate is unlimited): a receiver that does not
// read makes the proxy hold that much, then the sender is blocked.
//
// [Link.Blackhole] stops the link's clock for a while: nothing is
// forwarded in either direction, data is held, not dropped, and senders
// see backpressure once the queues are full; connections stay open, and
// a connection accepted meanwhile is connected to the target only once
// the black hole ends. When it ends, data resumes where it stopped, still
// paced at Rate and delayed by Delay. [Link.Reset] aborts every current
// connection with a TCP reset to both of its ends.
//
// # Limits
//
// The link neither loses, duplicates nor reorders data, and it is a TCP
// proxy, not a packet link: each connection is two TCP connections, and
// connection setup and teardown take no link time. The kernel socket
// buffers of the endpoints and of the proxy (several MB each on loopback)
// still exist outside the model: a sender can write that much more than
// the link holds before it blocks, and that data is seen by the link only
// when the proxy reads it. Timing rests on the Go timers and scheduler
// of a possibly loaded machine, usually right to within a fraction of a
// millisecond: a proxy goroutine late by more than Buffer leaves the link
// idle meanwhile, which lowers the rate.
package linkemu

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Config describes a link.
type Config struct {
	// Rate is the rate of the link in bits per second, in each direction,
	// shared by all the connections of the link. 0 means unlimited.
	Rate int64

	// Delay is the one-way propagation delay added to every byte in each
	// direction, after its serialization at Rate.
	Delay time.Duration

	// Buffer is how much link time, at Rate, the link may hold queued in
	// each direction waiting to be serialized, beyond Delay. 0 means
	// DefaultBuffer; less than MinBuffer is raised to MinBuffer so that
	// the link does not run dry between two reads. Buffer does not matter
	// when Rate is 0.
	Buffer time.Duration
}

const (
	// DefaultBuffer is the Buffer of a Config that does not set one.
	DefaultBuffer = 20 * time.Millisecond

	// MinBuffer is the least Buffer a link uses.
	MinBuffer = 2 * time.Millisecond
)

const (
	minChunk       = 1500     // one Ethernet frame
	maxChunk       = 16 << 10 // bytes serialized at once when the rate is limited
	unlimitedChunk = 64 << 10 // bytes read at once when the rate is unlimited
	minQueue       = 64 << 10 // floor of a direction's memory
	maxQueue       = 64 << 20 // cap of a direction's memory
	unlimitedQueue = 16 << 20 // a direction's memory when the rate is unlimited
	initialRing    = 16 << 10 // first size of a direction's buffer, which grows as used
	initialEntries = 64       // first size of a direction's chunk list
	maxEntries     = 1 << 16  // most chunks a direction holds
	maxAcceptDelay = time.Second
)

// Stats are the counters of a link.
type Stats struct {
	Up       int64 // bytes forwarded from clients to the target
	Down     int64 // bytes forwarded from the target to clients
	Accepted int64 // connections accepted
	Active   int   // connections open now, including those not yet connected to the target
	Resets   int64 // connections aborted by Reset
}

// A Link is a running link emulator: a listener whose connections are
// forwarded to a target through an emulated link. Its methods may be
// called concurrently.
type Link struct {
	ln      net.Listener
	network string
	target  string
	delay   int64 // ns
	buffer  int64 // ns
	rate    atomic.Int64

	epoch   time.Time
	pauseMu sync.Mutex // serializes Blackhole
	pause   atomic.Pointer[pause]

	up, down direction

	accepted atomic.Int64
	resets   atomic.Int64

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool

	ctx    context.Context // done when the link is closed
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// A direction is the serializer shared by the connections of a link in
// one direction: a clock of when it is next free, on the link's clock,
// rather than a token bucket (golang.org/x/time/rate), whose burst an
// idle link would save up and whose clock would not stop in a black hole.
type direction struct {
	mu    sync.Mutex
	next  int64 // link time at which the serializer is free
	bytes atomic.Int64
}

// A pause is the latest black hole of a link, in ns since its epoch:
// the link's clock stands still from start to end, and stood still for
// before in earlier black holes.
type pause struct {
	start, end, before int64
}

// Listen listens on the TCP address addr and returns a link that forwards
// the connections it accepts to the TCP address target.
func Listen(addr, target string, cfg Config) (*Link, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return New(ln, target, cfg)
}

// New returns a link that accepts connections on ln and forwards each to
// target, dialled on the network of ln's address. The link owns ln: Close
// closes it, and so does New if cfg is invalid.
func New(ln net.Listener, target string, cfg Config) (*Link, error) {
	if err := cfg.check(); err != nil {
		ln.Close()
		return nil, err
	}
	buffer := cfg.Buffer
	if buffer == 0 {
		buffer = DefaultBuffer
	}
	buffer = max(buffer, MinBuffer)
	ctx, cancel := context.WithCancel(context.Background())
	l := &Link{
		ln:      ln,
		network: ln.Addr().Network(),
		target:  target,
		delay:   int64(cfg.Delay),
		buffer:  int64(buffer),
		epoch:   time.Now(),
		conns:   make(map[*conn]struct{}),
		ctx:     ctx,
		cancel:  cancel,
	}
	l.rate.Store(cfg.Rate)
	l.pause.Store(&pause{})
	l.wg.Add(1)
	go l.accept()
	return l, nil
}

func (c Config) check() error {
	if c.Rate < 0 || c.Delay < 0 || c.Buffer < 0 {
		return errors.New("linkemu: negative Rate, Delay or Buffer")
	}
	return nil
}

// Addr returns the address clients connect to.
func (l *Link) Addr() net.Addr { return l.ln.Addr() }

// SetRate sets the rate of the link in bits per second; 0 means
// unlimited. It applies to data read from then on; data already queued
// keeps its schedule. SetRate panics if bits is negative.
func (l *Link) SetRate(bits int64) {
	if bits < 0 {
		panic("linkemu: negative rate")
	}
	l.rate.Store(bits)
}

// Blackhole makes the link a black hole for d from now: nothing is
// forwarded in either direction, the data in flight and what senders
// keep sending is held (up to the bounds of the link, then senders are
// blocked by TCP flow control), connections stay open, and connections
// accepted meanwhile are connected to the target only when the black hole
// ends. The link's clock stands still meanwhile, so data resumes as it
// stopped: paced at Rate, and what had propagated for part of Delay
// arrives after the rest of it. A black hole that is already running
// ends at the later of its end and now+d. d <= 0 does nothing.
func (l *Link) Blackhole(d time.Duration) {
	if d <= 0 {
		return
	}
	l.pauseMu.Lock()
	defer l.pauseMu.Unlock()
	now := l.now()
	p := l.pause.Load()
	if now < p.end {
		l.pause.Store(&pause{start: p.start, end: max(p.end, now+int64(d)), before: p.before})
	} else {
		l.pause.Store(&pause{start: now, end: now + int64(d), before: p.before + p.end - p.start})
	}
}

// Reset aborts every current connection: both of its ends are closed with
// a TCP reset (RST) and the data the link holds for it is dropped.
// Connections accepted afterwards are forwarded as usual.
func (l *Link) Reset() {
	l.mu.Lock()
	cs := make([]*conn, 0, len(l.conns))
	for c := range l.conns {
		cs = append(cs, c)
	}
	l.mu.Unlock()
	var n int64
	for _, c := range cs {
		if c.abort() {
			n++
		}
	}
	l.resets.Add(n)
}

// Stats returns the counters of the link.
func (l *Link) Stats() Stats {
	l.mu.Lock()
	active := len(l.conns)
	l.mu.Unlock()
	return Stats{
		Up:       l.up.bytes.Load(),
		Down:     l.down.bytes.Load(),
		Accepted: l.accepted.Load(),
		Active:   active,
		Resets:   l.resets.Load(),
	}
}

// Close closes the listener and aborts every connection with a TCP reset,
// as Reset does, and returns once every goroutine of the link has ended.
// It returns the error of closing the listener.
func (l *Link) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	cs := make([]*conn, 0, len(l.conns))
	for c := range l.conns {
		cs = append(cs, c)
	}
	l.mu.Unlock()
	l.cancel()
	err := l.ln.Close()
	for _, c := range cs {
		c.abort()
	}
	l.wg.Wait()
	return err
}

// now returns the real time in ns since the link's epoch.
func (l *Link) now() int64 { return int64(time.Since(l.epoch)) }

// clock returns the link time (real time less the time spent in black
// holes), the real time, and the latest black hole.
func (l *Link) clock() (v, now int64, p *pause) {
	now = l.now()
	p = l.pause.Load()
	v = now - p.before - min(max(now-p.start, 0), p.end-p.start)
	return v, now, p
}

// until returns how long in real time, from now, the link takes to reach
// link time v, which is after the link time of now.
func until(v, now int64, p *pause) time.Duration {
	return time.Duration(v + p.before + p.end - p.start - now)
}

func chunkSize(rate int64) int {
	if rate == 0 {
		return unlimitedChunk
	}
	return int(min(max(rate/8000, minChunk), maxChunk))
}

// queueLimit returns the bytes a direction of a connection may hold: what
// the link holds, Rate*(Delay+Buffer) and a chunk, and Buffer's worth
// that has arrived but is not written yet.
func (l *Link) queueLimit(rate int64) int {
	if rate == 0 {
		return unlimitedQueue
	}
	b := float64(rate)/8*float64(l.delay+2*l.buffer)/1e9 + float64(chunkSize(rate))
	return int(min(max(b, minQueue), maxQueue))
}

func (l *Link) accept() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors, or the like: wait and retry, as
			// net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), maxAcceptDelay)
			if !sleep(l.ctx.Done(), backoff, nil) {
				return
			}
			continue
		}
		backoff = 0
		l.accepted.Add(1)
		c := &conn{l: l, client: nc, done: make(chan struct{})}
		c.ctx, c.cancel = context.WithCancel(l.ctx)
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			c.abort()
			c.cancel()
			continue
		}
		l.conns[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go c.run()
	}
}

// sleep waits for d or until done is closed, and reports whether d
// passed. It uses t if not nil.
func sleep(done <-chan struct{}, d time.Duration, t *time.Timer) bool {
	if t == nil {
		t = time.NewTimer(d)
		defer t.Stop()
	} else {
		t.Reset(d)
	}
	select {
	case <-t.C:
		return true
	case <-done:
		t.Stop()
		return false
	}
}

// A conn is one forwarded connection.
type conn struct {
	l      *Link
	client net.Conn
	ctx    context.Context // cancelled when the conn is aborted, ends the dial
	cancel context.CancelFunc

	mu       sync.Mutex
	server   net.Conn
	up, down *pipe
	ended    bool
	done     chan struct{} // closed when aborted
}

func (c *conn) run() {
	l := c.l
	defer func() {
		c.cancel()
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
		l.wg.Done()
	}()

	// A connection is not connected to the target across a black hole.
	var t *time.Timer
	for {
		now := l.now()
		p := l.pause.Load()
		if now >= p.end {
			break
		}
		if t == nil {
			t = time.NewTimer(0)
			defer t.Stop()
		}
		if !sleep(c.done, time.Duration(p.end-now), t) {
			return
		}
	}

	var d net.Dialer
	s, err := d.DialContext(c.ctx, l.network, l.target)
	if err != nil {
		c.abort()
		return
	}
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		rst(s)
		return
	}
	up := newPipe(c, &l.up, c.client, s)
	down := newPipe(c, &l.down, s, c.client)
	c.server, c.up, c.down = s, up, down
	c.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); up.write() }()
	go func() { defer wg.Done(); down.read() }()
	go func() { defer wg.Done(); down.write() }()
	up.read()
	wg.Wait()

	// Both directions ended, by EOF on both or by an abort.
	c.mu.Lock()
	if !c.ended {
		c.ended = true
		close(c.done)
		c.client.Close()
		s.Close()
	}
	c.mu.Unlock()
}

// abort closes both ends of c with a reset, once, and reports whether it
// did.
func (c *conn) abort() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return false
	}
	c.ended = true
	close(c.done)
	if c.cancel != nil {
		c.cancel()
	}
	rst(c.client)
	if c.server != nil {
		rst(c.server)
	}
	return true
}

// rst closes nc with a TCP reset if it is a TCP connection.
func rst(nc net.Conn) {
	if tc, ok := nc.(interface{ SetLinger(int) error }); ok {
		tc.SetLinger(0)
	}
	nc.Close()
}

// An entry is a chunk queued in a pipe: the bytes of the pipe's stream up
// to end may be written at link time at.
type entry struct {
	end uint64
	at  int64
}

// A pipe is one direction of a conn: read goes from src into a ring
// buffer, stamping each chunk with the link time it may be written at,
// and write writes them to dst at that time.
type pipe struct {
	c        *conn
	l        *Link
	dir      *direction
	src, dst net.Conn

	data  chan struct{} // kicks write: new entry or EOF
	space chan struct{} // kicks read: bytes written

	mu     sync.Mutex
	buf    []byte // ring; byte i of the stream is at buf[i%len(buf)]
	head   uint64 // bytes written to dst
	tail   uint64 // bytes read from src
	ents   []entry
	eh, et uint64 // ents[eh%len : et%len] are queued
	eof    bool
}

func newPipe(c *conn, dir *direction, src, dst net.Conn) *pipe {
	return &pipe{
		c: c, l: c.l, dir: dir, src: src, dst: dst,
		data:  make(chan struct{}, 1),
		space: make(chan struct{}, 1),
		buf:   make([]byte, initialRing),
		ents:  make([]entry, initialEntries),
	}
}

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (p *pipe) read() {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		rate := p.l.rate.Load()
		if rate > 0 && !p.waitLink(t) {
			return
		}
		b, ok := p.room(rate)
		if !ok {
			return
		}
		n, err := p.src.Read(b)
		if n > 0 {
			p.push(n)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				p.mu.Lock()
				p.eof = true
				p.mu.Unlock()
				kick(p.data)
			} else {
				p.c.abort()
			}
			return
		}
	}
}

// waitLink waits until the serializer of the pipe's direction holds at
// most Buffer of link time, and reports false if the conn was aborted
// meanwhile.
func (p *pipe) waitLink(t *time.Timer) bool {
	for {
		v, now, ps := p.l.clock()
		p.dir.mu.Lock()
		at := p.dir.next - p.l.buffer
		p.dir.mu.Unlock()
		if at <= v {
			return true
		}
		if !sleep(p.c.done, until(at, now, ps), t) {
			return false
		}
	}
}

// room returns where to read the next chunk into, waiting for the pipe to
// have room, and reports false if the conn was aborted meanwhile.
func (p *pipe) room(rate int64) ([]byte, bool) {
	chunk := chunkSize(rate)
	limit := p.l.queueLimit(rate)
	for {
		p.mu.Lock()
		used := int(p.tail - p.head)
		if used < limit && p.et-p.eh < maxEntries {
			want := min(chunk, limit-used)
			if len(p.buf)-used < want && len(p.buf) < limit {
				p.grow(min(max(2*len(p.buf), used+want), limit))
			}
			if free := len(p.buf) - used; free > 0 {
				off := int(p.tail % uint64(len(p.buf)))
				n := min(want, free, len(p.buf)-off)
				b := p.buf[off : off+n]
				p.mu.Unlock()
				return b, true
			}
		}
		p.mu.Unlock()
		select {
		case <-p.space:
		case <-p.c.done:
			return nil, false
		}
	}
}

// grow replaces the ring by one of size bytes holding the same data.
// write may still be writing from the old ring, which it only reads.
func (p *pipe) grow(size int) {
	nb := make([]byte, size)
	for i := p.head; i < p.tail; {
		o, no := int(i%uint64(len(p.buf))), int(i%uint64(size))
		n := copy(nb[no:], p.buf[o:min(len(p.buf), o+int(p.tail-i))])
		i += uint64(n)
	}
	p.buf = nb
}

// push queues the n bytes just read, stamped with the link time they may
// be written at: once serialized after what the direction already holds,
// plus the delay.
func (p *pipe) push(n int) {
	v, _, _ := p.l.clock()
	rate := p.l.rate.Load()
	p.dir.mu.Lock()
	at := max(v, p.dir.next)
	if rate > 0 {
		at += int64(n) * 8e9 / rate
		p.dir.next = at
	}
	p.dir.mu.Unlock()
	at += p.l.delay

	p.mu.Lock()
	p.tail += uint64(n)
	if int(p.et-p.eh) == len(p.ents) {
		ne := make([]entry, 2*len(p.ents))
		for i := p.eh; i < p.et; i++ {
			ne[i%uint64(len(ne))] = p.ents[i%uint64(len(p.ents))]
		}
		p.ents = ne
	}
	p.ents[p.et%uint64(len(p.ents))] = entry{end: p.tail, at: at}
	p.et++
	p.mu.Unlock()
	kick(p.data)
}

func (p *pipe) write() {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		p.mu.Lock()
		if p.eh == p.et {
			eof := p.eof
			p.mu.Unlock()
			if eof {
				p.closeWrite()
				return
			}
			select {
			case <-p.data:
				continue
			case <-p.c.done:
				return
			}
		}
		v, now, ps := p.l.clock()
		n := uint64(len(p.ents))
		e := p.ents[p.eh%n]
		if e.at > v {
			p.mu.Unlock()
			if !sleep(p.c.done, until(e.at, now, ps), t) {
				return
			}
			continue
		}
		end := e.end
		for i := p.eh + 1; i < p.et; i++ {
			e := p.ents[i%n]
			if e.at > v {
				break
			}
			end = e.end
		}
		off := int(p.head % uint64(len(p.buf)))
		b := p.buf[off : off+min(int(end-p.head), len(p.buf)-off)]
		p.mu.Unlock()

		if _, err := p.dst.Write(b); err != nil {
			p.c.abort()
			return
		}
		p.dir.bytes.Add(int64(len(b)))

		p.mu.Lock()
		p.head += uint64(len(b))
		n = uint64(len(p.ents)) // push may have grown it
		for p.eh < p.et && p.ents[p.eh%n].end <= p.head {
			p.eh++
		}
		p.mu.Unlock()
		kick(p.space)
	}
}

// closeWrite passes an EOF from src on to dst.
func (p *pipe) closeWrite() {
	cw, ok := p.dst.(interface{ CloseWrite() error })
	if !ok {
		p.c.abort()
		return
	}
	if err := cw.CloseWrite(); err != nil {
		p.c.abort()
	}
}
