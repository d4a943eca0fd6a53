// Package auto is pagewire's adaptive method: for every packet it sends
// the pages raw, with lz4, or with zstd at level 1, 3 or 7, whichever
// its controller expects to move the guest's pages soonest over the link
// it measures. QEMU has no such method; its wire flag, 0x38, is one QEMU
// never sends.
//
// Payload: one tag byte naming how the rest was made, then that method's
// payload for the packet's pages:
//
//	0  the pages as they are (nocomp)
//	1  lz4 (package plugins/lz4's payload)
//	2  zstd at level 1, 3  zstd at level 3, 4  zstd at level 7
//
// Each tag is its own stream on a channel: zstd at level 3 continues
// from the last level-3 packet of the channel, whatever came between,
// so a receiver keeps one decoder per tag and channel (made when the
// tag first comes). Any other tag, or a payload that does not decode to
// exactly the packet's pages, is [sdk.ErrCorrupt].
//
// # The controller
//
// One controller serves all channels of a [Method]: make one Method per
// transfer ([New]), as the gateways do. Every 100 ms it models each
// candidate's time per byte of pages as the slower of its CPU part
// (its probed cost plus the process's other CPU work per byte, over the
// cores that can compress) and its link part (ratio over the link's rate, measured in
// windows where the writes blocked), and picks among the fastest the
// one that sends the fewest bytes, then the least CPU. Probes: every
// 200 ms one channel also compresses 16 pages with every candidate.
// docs/auto.md has the whole of it.
//
// [Method.Report] says what it chose: packets and bytes per candidate,
// its estimates, the link it measured and how often it switched.
// PAGEWIRE_AUTO_TRACE=1 prints every window's figures on stderr.
package auto

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pagewire/pagewire/plugins/lz4"
	"github.com/pagewire/pagewire/plugins/nocomp"
	"github.com/pagewire/pagewire/plugins/zstd"
	"github.com/pagewire/pagewire/sdk"
)

// trace is PAGEWIRE_AUTO_TRACE=1: every window's measurements and
// model on stderr.
var trace = os.Getenv("PAGEWIRE_AUTO_TRACE") == "1"

// Flag is the method's value in a packet's flags.
const Flag = 0x38

// The tags: the first byte of every payload.
const (
	tagRaw = iota
	tagLZ4
	tagZstd1
	tagZstd3
	tagZstd7
	nTags
)

// candidate is one way of sending a packet.
type candidate struct {
	name  string
	m     sdk.Method
	level int
}

func candidates() [nTags]candidate {
	z := zstd.New()
	return [nTags]candidate{
		tagRaw:   {"nocomp", nocomp.New(), 0},
		tagLZ4:   {"lz4", lz4.New(), 0},
		tagZstd1: {"zstd-1", z, 1},
		tagZstd3: {"zstd-3", z, 3},
		tagZstd7: {"zstd-7", z, 7},
	}
}

// The controller's timing.
const (
	window         = 100 * time.Millisecond // how often it decides
	probeEvery     = 200 * time.Millisecond // how often it samples the candidates
	probePages     = 16                     // pages per sample
	costProbes     = 8                      // probes a cost is the median of
	saturated      = 0.5                    // write-time share at which the link is the limit
	creepAfter     = time.Second            // without a full link, before the estimate creeps up
	creep          = 1.02                   // per window
	linkDecay      = 0.95                   // per window, of the link's measurements
	minFullTime    = 0.15                   // seconds of full windows before the link has an estimate
	hysteresis     = 0.95                   // candidates this close in time per byte are as fast
	sameBytes      = 1.02                   // candidates this close in ratio send as much
	stayCPU        = 1.2                    // the current one stays if as good and at most this much more CPU
	minWindowBytes = 1 << 20                // pages in a window for a CPU measurement
	ewma           = 0.3                    // weight of a new measurement
	initialPick    = tagLZ4                 // until the first decision: cheap, and half the bytes
)

// Method is the adaptive method. Make one per transfer with [New].
type Method struct {
	cands [nTags]candidate
	ctl   *controller
}

// New returns a fresh adaptive method: its controller starts knowing
// nothing of the link or the data.
func New() *Method {
	m := &Method{cands: candidates()}
	m.ctl = &controller{cands: &m.cands, start: time.Now()}
	m.ctl.cur.Store(initialPick)
	for i := range m.ctl.est {
		m.ctl.est[i].corr = 1
	}
	return m
}

// Info implements [sdk.Method].
func (m *Method) Info() sdk.Info { return sdk.Info{Name: "auto", Flag: Flag} }

// Implementation names the code behind the candidates.
func (m *Method) Implementation() string {
	impl := func(sm sdk.Method) string {
		if i, ok := sm.(interface{ Implementation() string }); ok {
			return i.Implementation()
		}
		return "built in"
	}
	return fmt.Sprintf("adaptive: nocomp, lz4 (%s), zstd 1/3/7 (%s)", impl(m.cands[tagLZ4].m), impl(m.cands[tagZstd1].m))
}

func subOptions(o sdk.Options, level int) sdk.Options {
	o.Level = level
	return o
}

// NewSender implements [sdk.Method]. auto picks its own levels: a
// level other than 0 is an error.
func (m *Method) NewSender(ch int, o sdk.Options) (sdk.Sender, error) {
	if o.Level != 0 {
		return nil, fmt.Errorf("auto level %d: auto picks its own levels (lz4 fast, zstd 1, 3 and 7); give none", o.Level)
	}
	if m.ctl.channels.Add(1) == 1 {
		m.ctl.mu.Lock()
		m.ctl.start = time.Now() // the first window starts with the transfer
		m.ctl.mu.Unlock()
	}
	return &sender{ctl: m.ctl, o: o, ch: ch}, nil
}

// NewReceiver implements [sdk.Method].
func (m *Method) NewReceiver(ch int, o sdk.Options) (sdk.Receiver, error) {
	return &receiver{cands: &m.cands, o: o, ch: ch}, nil
}

// sender is one channel's end: a sender per tag, made when the tag is
// first chosen and kept, since each is a stream.
type sender struct {
	ctl     *controller
	o       sdk.Options
	ch      int
	subs    [nTags]sdk.Sender
	done    bool
	picked  int  // RawPrefix's choice for the Prepare that follows
	hasPick bool // picked is set
}

// rawTag is the prefix of a raw payload.
var rawTag = [1]byte{tagRaw}

// RawPrefix implements [core.RawSender]: a packet that goes raw is the
// tag, then its pages written from memory, not copied.
func (s *sender) RawPrefix(p *sdk.Packet) ([]byte, bool) {
	if s.done {
		return nil, false // Prepare reports it
	}
	s.ctl.tick(time.Now(), p, s.o)
	tag := s.ctl.pick(p)
	if tag != tagRaw {
		s.picked, s.hasPick = tag, true
		return nil, false
	}
	in := size(p.Pages)
	s.ctl.sent(tagRaw, in, in+len(rawTag))
	return rawTag[:], true
}

func (s *sender) sub(tag int) (sdk.Sender, error) {
	if s.subs[tag] == nil {
		c := s.ctl.cands[tag]
		sub, err := c.m.NewSender(s.ch, subOptions(s.o, c.level))
		if err != nil {
			return nil, fmt.Errorf("auto: %s: %w", c.name, err)
		}
		s.subs[tag] = sub
	}
	return s.subs[tag], nil
}

// Prepare implements [sdk.Sender].
func (s *sender) Prepare(p *sdk.Packet, dst []byte) ([]byte, error) {
	if s.done {
		return dst, errClosed
	}
	var tag int
	if s.hasPick {
		tag, s.hasPick = s.picked, false
	} else {
		s.ctl.tick(time.Now(), p, s.o)
		tag = s.ctl.pick(p)
	}
	start := len(dst)
	sub, err := s.sub(tag)
	if err != nil {
		return dst, err
	}
	if dst, err = sub.Prepare(p, append(dst, byte(tag))); err != nil {
		return dst, fmt.Errorf("auto: %s: %w", s.ctl.cands[tag].name, err)
	}
	s.ctl.sent(tag, size(p.Pages), len(dst)-start)
	return dst, nil
}

// Wrote implements [core.WriteObserver].
func (s *sender) Wrote(n int, d time.Duration) { s.ctl.wrote(n, d) }

// Close implements [sdk.Sender].
func (s *sender) Close() error {
	if s.done {
		return nil
	}
	s.done = true
	var errs []error
	if s.ctl.channels.Add(-1) == 0 {
		errs = append(errs, s.ctl.closeProbes())
	}
	for i, sub := range s.subs {
		if sub != nil {
			errs = append(errs, sub.Close())
			s.subs[i] = nil
		}
	}
	return errors.Join(errs...)
}

var errClosed = errors.New("auto: sender used after Close")

// receiver is one channel's end: a receiver per tag, made when the tag
// first comes.
type receiver struct {
	cands *[nTags]candidate
	o     sdk.Options
	ch    int
	subs  [nTags]sdk.Receiver
}

// Recv implements [sdk.Receiver].
func (r *receiver) Recv(p *sdk.Packet, payload []byte) error {
	if len(payload) == 0 {
		return fmt.Errorf("%w: auto: empty payload, no tag", sdk.ErrCorrupt)
	}
	tag := int(payload[0])
	payload = payload[1:]
	if tag >= nTags {
		return fmt.Errorf("%w: auto: unknown tag %d (0..%d are known)", sdk.ErrCorrupt, tag, nTags-1)
	}
	c := r.cands[tag]
	if r.subs[tag] == nil {
		sub, err := c.m.NewReceiver(r.ch, subOptions(r.o, c.level))
		if err != nil {
			return fmt.Errorf("auto: %s: %w", c.name, err)
		}
		r.subs[tag] = sub
	}
	if err := r.subs[tag].Recv(p, payload); err != nil {
		return fmt.Errorf("auto: %s: %w", c.name, err)
	}
	return nil
}

// Close implements [sdk.Receiver].
func (r *receiver) Close() error {
	var errs []error
	for i, sub := range r.subs {
		if sub != nil {
			errs = append(errs, sub.Close())
			r.subs[i] = nil
		}
	}
	return errors.Join(errs...)
}

// cpuMeter reads the process's CPU time.
type cpuMeter struct {
	last   int64
	primed bool
}

// sample returns the CPU seconds the process used since the last
// sample; ok is false on the first or where the system does not tell.
func (m *cpuMeter) sample() (run float64, ok bool) {
	r, ok := processCPU()
	if !ok {
		return 0, false
	}
	d := r - m.last
	m.last = r
	if !m.primed || d < 0 {
		m.primed = true
		return 0, false
	}
	return float64(d) / 1e9, true
}

// estimate is what the controller knows of one candidate.
type estimate struct {
	cost  float64 // seconds per input byte: the median of costs; 0: unknown
	costs [costProbes]float64
	next  int
	ratio float64 // output bytes per input byte, from probes
	corr  float64 // the streams' ratio over the probes', while chosen
}

// addCost records a probe's seconds per byte; the estimate is the
// median of the last few.
func (e *estimate) addCost(c float64) {
	e.costs[e.next] = c
	e.next = (e.next + 1) % costProbes
	// The median of the probes so far: an interrupted probe is an
	// outlier above, an easy sample (zeros, repeats) one below.
	var v [costProbes]float64
	n := 0
	for _, x := range e.costs {
		if x > 0 {
			i := n
			for ; i > 0 && v[i-1] > x; i-- {
				v[i] = v[i-1]
			}
			v[i] = x
			n++
		}
	}
	e.cost = v[n/2]
}

// tally is what one candidate sent.
type tally struct {
	packets, in, out atomic.Uint64
}

// controller chooses for all channels of one Method.
type controller struct {
	cands    *[nTags]candidate
	channels atomic.Int32            // senders open
	cur      atomic.Int32            // the tag chosen
	force    func(p *sdk.Packet) int // tests: the tag for p
	procs    int                     // tests: GOMAXPROCS

	// this window, from every channel
	wBytes, wNanos atomic.Int64
	tallies        [nTags]tally
	winIn, winOut  [nTags]atomic.Int64

	mu       sync.Mutex // the rest
	start    time.Time  // of the window
	est      [nTags]estimate
	link     float64 // bytes per second; 0: not yet full once
	meter    cpuMeter
	other    float64 // CPU seconds per input byte besides the method's
	cpuKnown bool    // other is measured
	lastFull time.Time
	// decayed bytes and seconds of the windows the link was full; boost
	// creeps the estimate up while the link is not full
	fullW, fullT, boost float64
	switches            int
	lastProbe           atomic.Int64 // unix nanoseconds

	probeMu  sync.Mutex
	probes   [nTags]sdk.Sender
	probeBuf []byte
	probePkt sdk.Packet
}

// pick returns the tag for p.
func (c *controller) pick(p *sdk.Packet) int {
	if c.force != nil {
		return c.force(p)
	}
	return int(c.cur.Load())
}

// sent records one packet of tag: in bytes of pages, out of payload.
func (c *controller) sent(tag, in, out int) {
	t := &c.tallies[tag]
	t.packets.Add(1)
	t.in.Add(uint64(in))
	t.out.Add(uint64(out))
	c.winIn[tag].Add(int64(in))
	c.winOut[tag].Add(int64(out))
}

func (c *controller) wrote(n int, d time.Duration) {
	c.wBytes.Add(int64(n))
	c.wNanos.Add(int64(d))
}

// tick probes and decides when their time has come; it never waits for
// another channel doing either.
func (c *controller) tick(now time.Time, p *sdk.Packet, o sdk.Options) {
	if now.UnixNano()-c.lastProbe.Load() >= int64(probeEvery) && c.probeMu.TryLock() {
		c.probe(now, p, o)
		c.probeMu.Unlock()
	}
	if c.mu.TryLock() {
		if now.Sub(c.start) >= window {
			c.decide(now)
		}
		c.mu.Unlock()
	}
}

// probe compresses the first pages of p with every candidate, with
// senders of its own (whose output goes nowhere), and folds cost and
// ratio into the estimates. Called with probeMu held.
func (c *controller) probe(now time.Time, p *sdk.Packet, o sdk.Options) {
	c.lastProbe.Store(now.UnixNano())
	n := min(len(p.Pages), probePages)
	if n == 0 {
		return
	}
	c.probePkt.Pages = p.Pages[:n]
	in := size(c.probePkt.Pages)
	var cost, ratio [nTags]float64
	for tag := range nTags {
		t0 := time.Now()
		if c.probes[tag] == nil {
			cd := c.cands[tag]
			s, err := cd.m.NewSender(0, subOptions(o, cd.level))
			if err != nil {
				continue
			}
			c.probes[tag] = s
		}
		out, err := c.probes[tag].Prepare(&c.probePkt, c.probeBuf[:0])
		if err != nil {
			// A probe that fails says nothing; the channel's own sender
			// will report a real failure.
			c.probes[tag].Close()
			c.probes[tag] = nil
			continue
		}
		c.probeBuf = out
		cost[tag] = time.Since(t0).Seconds() / float64(in)
		ratio[tag] = float64(len(out)+1) / float64(in)
	}
	c.probePkt.Pages = nil
	c.mu.Lock()
	for tag := range nTags {
		if cost[tag] == 0 {
			continue
		}
		e := &c.est[tag]
		if e.cost == 0 {
			e.ratio = ratio[tag]
		}
		e.addCost(cost[tag])
		e.ratio += ewma * (ratio[tag] - e.ratio)
	}
	c.mu.Unlock()
}

// closeProbes closes the probes' senders once the last channel has
// closed; a later transfer makes new ones.
func (c *controller) closeProbes() error {
	c.probeMu.Lock()
	defer c.probeMu.Unlock()
	var errs []error
	for i, p := range c.probes {
		if p != nil {
			errs = append(errs, p.Close())
			c.probes[i] = nil
		}
	}
	return errors.Join(errs...)
}

// decide ends a window: it updates the link's estimate and the chosen
// candidate's correction, then picks. Called with mu held.
func (c *controller) decide(now time.Time) {
	secs := now.Sub(c.start).Seconds()
	c.start = now
	w := float64(c.wBytes.Swap(0))
	busy := float64(c.wNanos.Swap(0)) / 1e9
	chans := max(int(c.channels.Load()), 1)
	// The link's rate is the bytes over the time of the windows in which
	// it was full, both decayed over about two seconds, so that a burst
	// (a token bucket's, buffers filling) is averaged away. A window
	// that was not full says nothing: megabytes of socket buffers on the
	// way can take a burst far above the link's rate.
	full := w > 0 && busy/(float64(chans)*secs) >= saturated
	c.fullW, c.fullT = c.fullW*linkDecay, c.fullT*linkDecay
	if full {
		c.fullW += w
		c.fullT += secs
		c.lastFull, c.boost = now, 1
	} else if c.link > 0 && now.Sub(c.lastFull) >= creepAfter {
		c.boost *= creep
	}
	if c.fullT >= minFullTime {
		c.link = c.fullW / c.fullT * c.boost
	}
	if trace {
		fmt.Fprintf(os.Stderr, "auto: window %.0f ms: %.1f MB written (%.0f MB/s), writes blocked %.0f%% of channel time, full %v; link %.0f MB/s; other CPU %.2f ns/B\n",
			secs*1e3, w/1e6, w/secs/1e6, 100*busy/(float64(chans)*secs), full, c.link/1e6, c.other*1e9)
	}
	cur := int(c.cur.Load())
	var inAll int64
	for tag := range nTags {
		in, out := c.winIn[tag].Swap(0), c.winOut[tag].Swap(0)
		inAll += in
		if e := &c.est[tag]; tag == cur && in > 0 && e.ratio > 0 {
			e.corr += ewma * (float64(out)/float64(in)/e.ratio - e.corr)
		}
	}
	// The process's CPU per byte of pages, less the method's own: what
	// any candidate costs besides itself (reading the source, zero
	// pages, TLS).
	if run, ok := c.meter.sample(); ok && inAll >= minWindowBytes && c.est[cur].cost > 0 {
		other := max(run/float64(inAll)-c.est[cur].cost, 0)
		if !c.cpuKnown {
			c.other, c.cpuKnown = other, true
		} else {
			c.other += ewma * (other - c.other)
		}
	}
	// The soonest; of those within 5% of it, the ones with the fewest
	// bytes (within 2%); of those, the one that takes the least CPU. The
	// current one stays while it is among the soonest and within 2% of
	// the bytes and 20% of the CPU of that pick.
	var ts [nTags]float64
	bestT := 0.0
	for tag := range nTags {
		ts[tag] = c.timePerByte(tag, chans)
		if ts[tag] > 0 && (bestT == 0 || ts[tag] < bestT) {
			bestT = ts[tag]
		}
	}
	if bestT == 0 {
		return // nothing probed yet
	}
	near := func(tag int) bool { return ts[tag] > 0 && ts[tag]*hysteresis <= bestT }
	ratio := func(tag int) float64 { return c.est[tag].ratio * c.est[tag].corr }
	minR := 0.0
	for tag := range nTags {
		if near(tag) && (minR == 0 || ratio(tag) < minR) {
			minR = ratio(tag)
		}
	}
	pick := -1
	for tag := range nTags {
		if near(tag) && ratio(tag) <= minR*sameBytes && (pick < 0 || c.est[tag].cost < c.est[pick].cost) {
			pick = tag
		}
	}
	stay := near(cur) && ratio(cur) <= ratio(pick)*sameBytes && c.est[cur].cost <= stayCPU*c.est[pick].cost
	if trace {
		for tag := range nTags {
			fmt.Fprintf(os.Stderr, "auto:   %-7s %6.0f MB/s modelled, ratio %.3f, %5.0f MB/s probed\n", c.cands[tag].name, 1/ts[tag]/1e6, ratio(tag), 1/c.est[tag].cost/1e6)
		}
	}
	if pick != cur && !stay {
		c.cur.Store(int32(pick))
		c.switches++
		if trace {
			fmt.Fprintf(os.Stderr, "auto: %s -> %s\n", c.cands[cur].name, c.cands[pick].name)
		}
	}
}

// size is the bytes of pages.
func size(pages [][]byte) int {
	n := 0
	for _, pg := range pages {
		n += len(pg)
	}
	return n
}

// timePerByte is the model: seconds per byte of guest pages with tag,
// the slower of the CPU's part and the link's; 0 while unknown. The
// CPU's part is the candidate's cost plus the process's other work per
// byte, on as many CPUs as can run channels (where the system does not
// tell the process's CPU time: the cost alone). The probes' wall time
// already shows a CPU shared with a busy neighbour as a slower method.
func (c *controller) timePerByte(tag, chans int) float64 {
	e := c.est[tag]
	if e.cost == 0 {
		return 0
	}
	procs := c.procs
	if procs == 0 {
		procs = runtime.GOMAXPROCS(0)
	}
	par := float64(min(chans, procs))
	t := e.cost / par
	if c.cpuKnown {
		t = (e.cost + c.other) / par
	}
	if c.link > 0 {
		t = max(t, e.ratio*e.corr/c.link)
	}
	return t
}

// Report is what an adaptive method chose and why.
type Report struct {
	// Current is the candidate in use: nocomp, lz4, zstd-1, zstd-3 or
	// zstd-7.
	Current string `json:"current"`
	// LinkBytesPerSec is the link's rate as last measured full; 0 if it
	// never was.
	LinkBytesPerSec float64 `json:"link_bytes_per_sec"`
	// Switches counts the changes of candidate.
	Switches int `json:"switches"`
	// OtherCPUPerMB is the process's CPU seconds per MB of pages
	// besides the method's (0 where unmeasured).
	OtherCPUPerMB float64 `json:"other_cpu_s_per_mb,omitempty"`
	// Candidates are the five, in tag order.
	Candidates []CandidateReport `json:"candidates"`
}

// CandidateReport is one candidate's share and the controller's view
// of it.
type CandidateReport struct {
	Name     string `json:"name"`
	Packets  uint64 `json:"packets"`
	InBytes  uint64 `json:"in_bytes"`  // of pages
	OutBytes uint64 `json:"out_bytes"` // of payload
	// Ratio is the expected output per input byte; MBps the compression
	// speed of one channel as last probed (wall time, on this machine's
	// load); both 0 if never probed.
	Ratio float64 `json:"ratio"`
	MBps  float64 `json:"mbps"`
	// ModelMBps is the throughput of pages the controller last expected
	// of it (0 if unknown).
	ModelMBps float64 `json:"model_mbps"`
}

// Report returns what the method has chosen so far. Any goroutine may
// call it, also during a transfer.
func (m *Method) Report() Report {
	c := m.ctl
	c.mu.Lock()
	defer c.mu.Unlock()
	r := Report{Current: m.cands[c.cur.Load()].name, LinkBytesPerSec: c.link, Switches: c.switches,
		OtherCPUPerMB: c.other * 1e6}
	chans := max(int(c.channels.Load()), 1)
	for tag := range nTags {
		t := &c.tallies[tag]
		cr := CandidateReport{Name: m.cands[tag].name, Packets: t.packets.Load(), InBytes: t.in.Load(), OutBytes: t.out.Load()}
		if e := c.est[tag]; e.cost > 0 {
			cr.Ratio, cr.MBps = e.ratio*e.corr, 1/e.cost/1e6
			cr.ModelMBps = 1 / c.timePerByte(tag, chans) / 1e6
		}
		r.Candidates = append(r.Candidates, cr)
	}
	return r
}

// String is one line: the share of pages per candidate used, the
// switches and the link.
func (r Report) String() string {
	var total uint64
	for _, c := range r.Candidates {
		total += c.InBytes
	}
	var parts []string
	for _, c := range r.Candidates {
		if c.Packets > 0 && total > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f%%", c.Name, 100*float64(c.InBytes)/float64(total)))
		}
	}
	if len(parts) == 0 {
		parts = []string{"nothing sent"}
	}
	link := "link never full"
	if r.LinkBytesPerSec > 0 {
		link = fmt.Sprintf("link %.0f MB/s when full", r.LinkBytesPerSec/1e6)
	}
	return fmt.Sprintf("auto: %s of pages; %d switches, now %s; %s", strings.Join(parts, ", "), r.Switches, r.Current, link)
}
