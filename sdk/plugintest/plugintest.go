package plugintest

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/sdk"
)

// Check is one conformance check.
type Check struct {
	// Name is short and has no spaces: "roundtrip", "corrupt".
	Name string
	// Run runs the check against m and returns nil if m passes. It
	// recovers from panics in m, gives up after the kit's time limit, and
	// its error names the method, the check and, where there is one, the
	// channel, packet and page.
	Run func(m sdk.Method) error
}

// Result is the outcome of one check, for callers that are not tests.
type Result struct {
	Name    string
	Err     error // nil if the method passed
	Elapsed time.Duration
}

// checkTimeout bounds each check; a variable so the kit's own tests can
// shorten it.
var checkTimeout = 30 * time.Second

// Checks returns the kit's checks in the order Run runs them.
func Checks() []Check {
	return []Check{
		guarded("info", checkInfo),
		guarded("roundtrip", checkRoundTrip),
		guarded("stream-state", checkStreamState),
		guarded("concurrent", checkConcurrent),
		guarded("packet-sizes", checkPacketSizes),
		guarded("page-kinds", checkPageKinds),
		guarded("corrupt", checkCorrupt),
		guarded("bounds", checkBounds),
		guarded("cleanup", checkCleanup),
		guarded("options", checkOptions),
	}
}

// Run runs every check against m, each as a subtest of t named after the
// check, and fails the subtest with the check's error.
func Run(t *testing.T, m sdk.Method) {
	t.Helper()
	for _, c := range Checks() {
		t.Run(c.Name, func(t *testing.T) {
			if err := c.Run(m); err != nil {
				t.Error(err)
			}
		})
	}
}

// RunAll runs every check against m and returns one Result per check, in
// order.
func RunAll(m sdk.Method) []Result {
	var out []Result
	for _, c := range Checks() {
		start := time.Now()
		err := c.Run(m)
		out = append(out, Result{Name: c.Name, Err: err, Elapsed: time.Since(start)})
	}
	return out
}

var errGoexit = errors.New("the method called runtime.Goexit")

// guarded makes fn a check: it runs in its own goroutine, a panic is an
// error, and the check gives up after checkTimeout. A method call that
// never returns cannot be stopped from outside; its goroutine is left
// behind.
func guarded(name string, fn func(m sdk.Method) error) Check {
	return Check{Name: name, Run: func(m sdk.Method) error {
		mname := methodName(m)
		done := make(chan error, 1)
		go func() {
			err := errGoexit
			defer func() { done <- err }()
			err = call("check", func() error { return fn(m) })
		}()
		timer := time.NewTimer(checkTimeout)
		defer timer.Stop()
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("%s: %s: %w", mname, name, err)
			}
			return nil
		case <-timer.C:
			return fmt.Errorf("%s: %s: timed out after %v: a method call did not return (its goroutine is left running)", mname, name, checkTimeout)
		}
	}}
}

// methodName is m's name for errors, even if Info panics.
func methodName(m sdk.Method) (name string) {
	name = fmt.Sprintf("%T", m)
	_ = call("Info", func() error {
		if n := m.Info().Name; n != "" {
			name = n
		}
		return nil
	})
	return name
}

// panicError is a panic recovered from a method call.
type panicError struct {
	call  string // "Recv", "NewSender"...
	value any
	at    string // where it panicked, if known
}

func (e *panicError) Error() string {
	s := fmt.Sprintf("%s panicked: %v", e.call, e.value)
	if e.at != "" {
		s += " (at " + e.at + ")"
	}
	return s
}

// call runs f, turning a panic into a *panicError naming what.
func call(what string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &panicError{call: what, value: r, at: panicSite()}
		}
	}()
	return f()
}

// panicSite returns the function and line that panicked: the first frame
// outside the runtime below runtime.gopanic. It is called from call's
// deferred function.
func panicSite() string {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(1, pcs)])
	inPanic := false
	for {
		f, more := frames.Next()
		if f.Function == "runtime.gopanic" {
			inPanic = true
		} else if inPanic && !strings.HasPrefix(f.Function, "runtime.") {
			fn := f.Function
			if i := strings.LastIndexByte(fn, '/'); i >= 0 {
				fn = fn[i+1:]
			}
			return fmt.Sprintf("%s %s:%d", fn, filepath.Join(filepath.Base(filepath.Dir(f.File)), filepath.Base(f.File)), f.Line)
		}
		if !more {
			return ""
		}
	}
}

// isPanic reports whether err is a recovered panic.
func isPanic(err error) bool {
	var pe *panicError
	return errors.As(err, &pe)
}

// Default page geometry: what the zero [sdk.Options] stands for.
const (
	defaultPageSize    = 4096
	defaultPacketPages = 128
)

var defaultOptions = sdk.Options{PageSize: defaultPageSize, PacketPages: defaultPacketPages}

// link is one channel of a method: its sender and receiver, and the
// guarded pages and payload buffer the kit reuses packet after packet, as
// the engine does.
type link struct {
	method string
	raw    bool
	id     int
	o      sdk.Options
	snd    sdk.Sender
	rcv    sdk.Receiver

	sseq, rseq uint64   // packets prepared, packets received
	want       [][]byte // the pages of the last packet prepared
	kinds      []kind
	src, dst   *pageSet
	buf        []byte // payload buffer, reused
	prefix     []byte // bytes already in dst when Prepare is called
	closed     bool   // Close has been called: the engine calls it once
}

// open sets up channel id of m: NewSender, then NewReceiver.
func open(m sdk.Method, id int, o sdk.Options) (*link, error) {
	l := &link{method: methodName(m), id: id, o: o}
	_ = call("Info", func() error { l.raw = m.Info().Raw; return nil })
	if err := call("NewSender", func() (err error) { l.snd, err = m.NewSender(id, o); return err }); err != nil {
		return nil, fmt.Errorf("channel %d: NewSender(%d, %+v): %w", id, id, o, err)
	}
	if l.snd == nil {
		return nil, fmt.Errorf("channel %d: NewSender(%d, %+v) returned a nil Sender and no error", id, id, o)
	}
	if err := call("NewReceiver", func() (err error) { l.rcv, err = m.NewReceiver(id, o); return err }); err != nil {
		l.abort()
		return nil, fmt.Errorf("channel %d: NewReceiver(%d, %+v): %w", id, id, o, err)
	}
	if l.rcv == nil {
		l.abort()
		return nil, fmt.Errorf("channel %d: NewReceiver(%d, %+v) returned a nil Receiver and no error", id, id, o)
	}
	ps, pp := l.geometry()
	l.src, l.dst = newPageSet(pp+1, ps), newPageSet(pp+1, ps)
	l.want = make([][]byte, pp+1)
	for i := range l.want {
		l.want[i] = make([]byte, ps)
	}
	l.kinds = make([]kind, pp+1)
	return l, nil
}

// geometry returns the page size and packet pages of l's options, with
// the defaults the zero values stand for.
func (l *link) geometry() (pageSize, packetPages int) {
	pageSize, packetPages = l.o.PageSize, l.o.PacketPages
	if pageSize <= 0 {
		pageSize = defaultPageSize
	}
	if packetPages <= 0 {
		packetPages = defaultPacketPages
	}
	return pageSize, packetPages
}

// close closes the sender and the receiver; both must return nil.
func (l *link) close() error {
	if l.closed {
		return nil
	}
	l.closed = true
	var errs []error
	if err := call("Sender.Close", l.snd.Close); err != nil {
		errs = append(errs, fmt.Errorf("channel %d: Sender.Close: %w", l.id, err))
	}
	if err := call("Receiver.Close", l.rcv.Close); err != nil {
		errs = append(errs, fmt.Errorf("channel %d: Receiver.Close: %w", l.id, err))
	}
	return errors.Join(errs...)
}

// abort closes what open set up after a failure, as the engine does when
// a transfer fails; errors are ignored but panics are not.
func (l *link) abort() error {
	if l.closed {
		return nil
	}
	l.closed = true
	var errs []error
	for _, c := range []struct {
		what string
		f    func() error
	}{{"Sender.Close", closer(l.snd)}, {"Receiver.Close", closer(l.rcv)}} {
		if err := call(c.what, c.f); isPanic(err) {
			errs = append(errs, fmt.Errorf("channel %d: after a failed packet: %w", l.id, err))
		}
	}
	return errors.Join(errs...)
}

func closer(c interface{ Close() error }) func() error {
	if c == nil {
		return func() error { return nil }
	}
	return c.Close
}

// finish ends a check's use of l: a check that has failed closes l as
// after a failed transfer; one that has passed needs Close to succeed.
func (l *link) finish(err *error) {
	if *err != nil {
		l.abort()
		return
	}
	*err = l.close()
}

// mixed fills page i of l's current packet with a mix of kinds stamped
// with the channel, packet and page.
func (l *link) mixed(i int, pg []byte) kind { return fillMixed(pg, l.id, l.sseq, i) }

// send fills n pages with fill and prepares them as the next packet.
// The payload it returns is valid until the next send.
func (l *link) send(n int, fill func(i int, pg []byte) kind) ([]byte, error) {
	l.sseq++
	for i := range n {
		l.kinds[i] = fill(i, l.want[i])
		copy(l.src.slots[i], l.want[i])
	}
	where := fmt.Sprintf("channel %d packet %d (%d pages)", l.id, l.sseq, n)
	dst := append(l.buf[:0], l.prefix...)
	p := &sdk.Packet{Pages: l.src.pages(n), Seq: l.sseq}
	var out []byte
	if err := call("Prepare", func() (err error) { out, err = l.snd.Prepare(p, dst); return err }); err != nil {
		return nil, fmt.Errorf("%s: Prepare: %w", where, err)
	}
	if len(out) < len(l.prefix) || !bytes.Equal(out[:len(l.prefix)], l.prefix) {
		return nil, fmt.Errorf("%s: Prepare did not append to dst: the %d bytes dst already held were changed or dropped", where, len(l.prefix))
	}
	payload := out[len(l.prefix):]
	ps, pp := l.geometry()
	if max := sdk.MaxPayload(pp, ps); len(payload) > max {
		return nil, fmt.Errorf("%s: Prepare made a payload of %d bytes, more than sdk.MaxPayload(%d, %d) = %d", where, len(payload), pp, ps, max)
	}
	for i := range n {
		if !bytes.Equal(l.src.slots[i], l.want[i]) {
			return nil, fmt.Errorf("%s: Prepare changed source page %d (%s): %s", where, i, l.kinds[i], diff(l.src.slots[i], l.want[i]))
		}
	}
	if err := l.src.checkGuards(); err != nil {
		return nil, fmt.Errorf("%s: Prepare %w", where, err)
	}
	l.buf = out
	return payload, nil
}

// tryRecv receives payload into n poisoned destination pages and returns
// Recv's error and whether anything outside the pages changed.
func (l *link) tryRecv(payload []byte, n int) (recvErr, guardErr error) {
	l.rseq++
	for i := range n {
		fillByte(l.dst.slots[i], poison)
	}
	p := &sdk.Packet{Pages: l.dst.pages(n), Seq: l.rseq}
	recvErr = call("Recv", func() error { return l.rcv.Recv(p, payload) })
	if err := l.dst.checkGuards(); err != nil {
		guardErr = fmt.Errorf("channel %d packet %d (%d pages): Recv %w", l.id, l.rseq, n, err)
	}
	return recvErr, guardErr
}

// recv receives payload, the last packet sent, and checks that every page
// came back as it was sent.
func (l *link) recv(payload []byte, n int) error {
	recvErr, guardErr := l.tryRecv(payload, n)
	where := fmt.Sprintf("channel %d packet %d (%d pages)", l.id, l.rseq, n)
	if recvErr != nil {
		return errors.Join(fmt.Errorf("%s: Recv of a valid %d-byte payload: %w", where, len(payload), recvErr), guardErr)
	}
	if guardErr != nil {
		return guardErr
	}
	for i := range n {
		if got := l.dst.slots[i]; !bytes.Equal(got, l.want[i]) {
			return fmt.Errorf("%s: page %d (%s) differs from the page sent: %s", where, i, l.kinds[i], diff(got, l.want[i]))
		}
	}
	return nil
}

// roundTrip sends n pages made by fill and receives them.
func (l *link) roundTrip(n int, fill func(i int, pg []byte) kind) error {
	payload, err := l.send(n, fill)
	if err != nil {
		return err
	}
	return l.recv(payload, n)
}

// diff describes how got differs from want.
func diff(got, want []byte) string {
	first, count := -1, 0
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			if first < 0 {
				first = i
			}
			count++
		}
	}
	if first < 0 {
		return fmt.Sprintf("%d bytes, want %d", len(got), len(want))
	}
	s := fmt.Sprintf("%d of %d bytes differ, the first at offset %d: got %#02x, want %#02x", count, len(want), first, got[first], want[first])
	if got[first] == poison {
		s += fmt.Sprintf(" (%#02x is what the page held before Recv: not written?)", poison)
	}
	return s
}

// checkInfo: Info is well formed and the same on every call.
func checkInfo(m sdk.Method) error {
	var infos [3]sdk.Info
	for i := range infos {
		if err := call("Info", func() error { infos[i] = m.Info(); return nil }); err != nil {
			return err
		}
	}
	info := infos[0]
	if err := info.Check(); err != nil {
		return fmt.Errorf("Info() = %+v: %w", info, err)
	}
	if strings.ContainsFunc(info.Name, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("Info() = %+v: name %q has spaces or control characters; users type it", info, info.Name)
	}
	for _, other := range infos[1:] {
		if other != info {
			return fmt.Errorf("Info() is not stable: %+v, then %+v", info, other)
		}
	}
	return nil
}

// roundTripPackets is the number of packets of checkRoundTrip; every
// other one is full.
const roundTripPackets = 40

// checkRoundTrip: one channel, many packets of mixed pages, full ones and
// smaller ones, each page back byte for byte; Prepare appends to what dst
// holds.
func checkRoundTrip(m sdk.Method) (err error) {
	l, err := open(m, 0, defaultOptions)
	if err != nil {
		return err
	}
	defer l.finish(&err)
	l.prefix = []byte("pagewire packet header")
	for pk := range roundTripPackets {
		n := defaultPacketPages
		if pk%2 == 1 {
			n = 1 + pk*23%64
		}
		if err := l.roundTrip(n, l.mixed); err != nil {
			return err
		}
	}
	return nil
}

// checkStreamState: three channels, each with its own sender, receiver
// and content, their packets prepared and received interleaved and in
// different orders; each channel's pages must come back.
func checkStreamState(m sdk.Method) (err error) {
	var ls []*link
	defer func() {
		for _, l := range ls {
			l.finish(&err)
		}
	}()
	for id := range 3 {
		l, err := open(m, id, defaultOptions)
		if err != nil {
			return err
		}
		ls = append(ls, l)
	}
	orders := [][]int{{2, 1, 0}, {1, 2, 0}, {0, 2, 1}, {0, 1, 2}, {1, 0, 2}, {2, 0, 1}}
	var payloads [3][]byte
	var sizes [3]int
	for round := range 9 {
		for c, l := range ls {
			sizes[c] = 1 + (round*37+c*53)%64
			if payloads[c], err = l.send(sizes[c], l.mixed); err != nil {
				return err
			}
		}
		for _, c := range orders[round%len(orders)] {
			if err := ls[c].recv(payloads[c], sizes[c]); err != nil {
				return fmt.Errorf("receiving the channels in the order %v: %w", orders[round%len(orders)], err)
			}
		}
	}
	return nil
}

// checkConcurrent: four channels at once, each in its own goroutine.
func checkConcurrent(m sdk.Method) error {
	const channels = 4
	errs := make([]error, channels)
	done := make(chan struct{})
	for id := range channels {
		go func() {
			defer func() { done <- struct{}{} }()
			errs[id] = errGoexit
			errs[id] = call("channel goroutine", func() (err error) {
				l, err := open(m, id, defaultOptions)
				if err != nil {
					return err
				}
				defer l.finish(&err)
				for pk := range 6 {
					if err := l.roundTrip(16+(pk*29+id*7)%49, l.mixed); err != nil {
						return err
					}
				}
				return nil
			})
		}()
	}
	for range channels {
		<-done
	}
	return errors.Join(errs...)
}

// checkPacketSizes: packets of 1 page up to a full packet, with 4 KiB and
// with 64 KiB pages.
func checkPacketSizes(m sdk.Method) error {
	for _, g := range []struct {
		o     sdk.Options
		sizes []int
	}{
		{defaultOptions, []int{1, 2, 127, 128, 1}},
		{sdk.Options{PageSize: 64 << 10, PacketPages: 16}, []int{1, 16, 2, 15}},
	} {
		if err := func() (err error) {
			l, err := open(m, 0, g.o)
			if err != nil {
				return err
			}
			defer l.finish(&err)
			for _, n := range g.sizes {
				if err := l.roundTrip(n, l.mixed); err != nil {
					return err
				}
			}
			return nil
		}(); err != nil {
			return fmt.Errorf("%d-byte pages: %w", g.o.PageSize, err)
		}
	}
	return nil
}

// checkPageKinds: a full packet, then a one-page packet, of every kind of
// page, incompressible ones included.
func checkPageKinds(m sdk.Method) (err error) {
	l, err := open(m, 0, defaultOptions)
	if err != nil {
		return err
	}
	defer l.finish(&err)
	for k := range numKinds {
		for _, n := range []int{defaultPacketPages, 1} {
			fill := func(i int, pg []byte) kind {
				fillPage(pg, k, newRNG(uint64(k)+100, l.sseq, uint64(i)))
				return k
			}
			if err := l.roundTrip(n, fill); err != nil {
				return fmt.Errorf("%s pages: %w", k, err)
			}
		}
	}
	alternate := func(i int, pg []byte) kind {
		k := []kind{kindRandom, kindZero, kindText, kindOnes}[i%4]
		fillPage(pg, k, newRNG(200, l.sseq, uint64(i)))
		return k
	}
	return l.roundTrip(defaultPacketPages, alternate)
}

// endsRandom fills pages mixed but for the last few, which are random, so
// that a payload's bytes up to its end carry page data.
func (l *link) endsRandom(n int) func(i int, pg []byte) kind {
	return func(i int, pg []byte) kind {
		if i >= n-4 {
			fillPage(pg, kindRandom, newRNG(300, l.sseq, uint64(i)))
			return kindRandom
		}
		return l.mixed(i, pg)
	}
}

// checkCorrupt: bad payloads after a good packet (and as the first
// packet) are errors wrapping sdk.ErrCorrupt, never panics, and never
// writes outside the packet's pages. A raw method may accept garbage of
// the right length.
func checkCorrupt(m sdk.Method) error {
	const n = 32
	cases := []struct {
		name  string
		first bool // the bad payload is the channel's first packet
		same  bool // the bad payload has the valid one's length
		bad   func(p []byte, r *rng) []byte
	}{
		{"payload cut to half", false, false, func(p []byte, r *rng) []byte { return p[:len(p)/2] }},
		{"empty payload", false, false, func(p []byte, r *rng) []byte { return p[:0] }},
		{"payload extended by 256 random bytes", false, false, func(p []byte, r *rng) []byte {
			q := append([]byte(nil), p...)
			q = append(q, make([]byte, 256)...)
			r.fill(q[len(p):])
			return q
		}},
		{"payload of random bytes", false, true, func(p []byte, r *rng) []byte {
			q := make([]byte, len(p))
			r.fill(q)
			return q
		}},
		{"first packet's payload of random bytes", true, true, func(p []byte, r *rng) []byte {
			q := make([]byte, len(p))
			r.fill(q)
			return q
		}},
		{"first packet's payload cut to half", true, false, func(p []byte, r *rng) []byte { return p[:len(p)/2] }},
	}
	var errs []error
	for ci, c := range cases {
		err := func() error {
			l, err := open(m, 0, defaultOptions)
			if err != nil {
				return err
			}
			defer l.abort()
			if !c.first {
				if err := l.roundTrip(n, l.mixed); err != nil {
					return fmt.Errorf("the good packet before: %w", err)
				}
			}
			payload, err := l.send(n, l.endsRandom(n))
			if err != nil {
				return err
			}
			bad := c.bad(payload, newRNG(400, uint64(ci)))
			recvErr, guardErr := l.tryRecv(bad, n)
			where := fmt.Sprintf("channel %d packet %d (%d pages)", l.id, l.rseq, n)
			switch {
			case isPanic(recvErr):
				return errors.Join(fmt.Errorf("%s: %w", where, recvErr), guardErr)
			case guardErr != nil:
				return guardErr
			case recvErr == nil && c.same && l.raw:
				// A raw method cannot tell garbage from pages.
			case recvErr == nil:
				return fmt.Errorf("%s: Recv accepted a bad payload (%d bytes, the good one had %d) without an error; want one wrapping sdk.ErrCorrupt", where, len(bad), len(payload))
			case !errors.Is(recvErr, sdk.ErrCorrupt):
				return fmt.Errorf("%s: Recv's error does not wrap sdk.ErrCorrupt: %w", where, recvErr)
			}
			return l.abort()
		}()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
		}
	}
	return errors.Join(errs...)
}

// checkBounds: Recv fills the pages it is given and nothing else; a
// payload holding more or fewer pages than the packet is an error.
func checkBounds(m sdk.Method) error {
	cases := []struct {
		name        string
		first       bool // no good packet before
		sent, given int  // pages prepared, pages given to Recv
		last        kind // what the last page prepared holds
	}{
		{"one random page more than the packet's", false, 9, 8, kindRandom},
		{"one zero page more than the packet's", false, 9, 8, kindZero},
		{"one page fewer than the packet's", false, 8, 9, kindRandom},
		{"two pages in a first packet of one", true, 2, 1, kindRandom},
	}
	var errs []error
	for _, c := range cases {
		err := func() error {
			l, err := open(m, 0, defaultOptions)
			if err != nil {
				return err
			}
			defer l.abort()
			if !c.first {
				if err := l.roundTrip(8, l.mixed); err != nil {
					return fmt.Errorf("the good packet before: %w", err)
				}
			}
			payload, err := l.send(c.sent, func(i int, pg []byte) kind {
				if i == c.sent-1 {
					fillPage(pg, c.last, newRNG(500, l.sseq))
					return c.last
				}
				return l.mixed(i, pg)
			})
			if err != nil {
				return err
			}
			recvErr, guardErr := l.tryRecv(payload, c.given)
			where := fmt.Sprintf("channel %d packet %d", l.id, l.rseq)
			switch {
			case isPanic(recvErr):
				return errors.Join(fmt.Errorf("%s: %w", where, recvErr), guardErr)
			case guardErr != nil:
				return guardErr
			case recvErr == nil:
				return fmt.Errorf("%s: Recv decoded the payload of %d pages into a packet of %d without an error; want one wrapping sdk.ErrCorrupt", where, c.sent, c.given)
			case !errors.Is(recvErr, sdk.ErrCorrupt):
				return fmt.Errorf("%s: Recv's error does not wrap sdk.ErrCorrupt: %w", where, recvErr)
			}
			return l.abort()
		}()
		if err != nil {
			errs = append(errs, fmt.Errorf("payload of %s: %w", c.name, err))
		}
	}
	return errors.Join(errs...)
}

// Leak detection: goroutines may take a moment to exit after Close.
// leakSettle is a variable so the kit's own tests can shorten it.
var leakSettle = 2 * time.Second

const leakTolerance = 2

// checkCleanup: Close returns nil; a channel set up again after Close
// starts afresh; closing many channels leaves no goroutines behind.
func checkCleanup(m sdk.Method) error {
	const channels = 16
	before := runtime.NumGoroutine()
	var ls []*link
	err := func() error {
		for id := range channels {
			l, err := open(m, id, defaultOptions)
			if err != nil {
				return err
			}
			ls = append(ls, l)
		}
		for range 2 {
			for _, l := range ls {
				if err := l.roundTrip(8, l.mixed); err != nil {
					return err
				}
			}
		}
		return nil
	}()
	var closeErrs []error
	for _, l := range ls {
		if err != nil {
			l.abort()
		} else if err := l.close(); err != nil {
			closeErrs = append(closeErrs, err)
		}
	}
	if err != nil {
		return err
	}
	if n := len(closeErrs); n > 2 {
		closeErrs = append(closeErrs[:2], fmt.Errorf("and %d more channels", n-2))
	}
	if err := errors.Join(closeErrs...); err != nil {
		return err
	}

	// Channel 0 again, twice: each new pair starts a new stream.
	for again := range 2 {
		if err := func() (err error) {
			l, err := open(m, 0, defaultOptions)
			if err != nil {
				return err
			}
			defer l.finish(&err)
			l.sseq = uint64(100 * (again + 1)) // other content than before
			for range 3 {
				if err := l.roundTrip(16, l.mixed); err != nil {
					return err
				}
			}
			return nil
		}(); err != nil {
			return fmt.Errorf("set up again after Close: %w", err)
		}
	}

	deadline := time.Now().Add(leakSettle)
	for {
		now := runtime.NumGoroutine()
		if now <= before+leakTolerance {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d goroutines running %v after %d channels were closed, %d before they were set up%s",
				now, leakSettle, channels, before, creators())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// creators summarizes which functions started the running goroutines.
func creators() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	counts := map[string]int{}
	var order []string
	for line := range strings.Lines(string(buf)) {
		if s, ok := strings.CutPrefix(line, "created by "); ok {
			s = strings.TrimSpace(s)
			if i := strings.Index(s, " in goroutine"); i >= 0 {
				s = s[:i]
			}
			if counts[s] == 0 {
				order = append(order, s)
			}
			counts[s]++
		}
	}
	var b strings.Builder
	for i, s := range order {
		if i == 6 {
			fmt.Fprintf(&b, "; ...")
			break
		}
		fmt.Fprintf(&b, "; %d created by %s", counts[s], s)
	}
	return b.String()
}

// checkOptions: the zero Options and level 0 work; any other level either
// works or makes NewSender fail, never panic.
func checkOptions(m sdk.Method) error {
	try := func(o sdk.Options, mayRefuse bool) (err error) {
		if mayRefuse {
			var snd sdk.Sender
			err := call("NewSender", func() (err error) { snd, err = m.NewSender(0, o); return err })
			switch {
			case isPanic(err):
				return fmt.Errorf("NewSender(0, %+v): %w", o, err)
			case err != nil:
				return nil // the method refuses the options, as it may
			case snd == nil:
				return fmt.Errorf("NewSender(0, %+v) returned a nil Sender and no error", o)
			}
			if err := call("Sender.Close", snd.Close); err != nil {
				return fmt.Errorf("Sender.Close: %w", err)
			}
		}
		l, err := open(m, 0, o)
		if err != nil {
			return err
		}
		defer l.finish(&err)
		for range 2 {
			if err := l.roundTrip(16, l.mixed); err != nil {
				return err
			}
		}
		return nil
	}
	if err := try(sdk.Options{}, false); err != nil {
		return fmt.Errorf("zero Options (%d-byte pages): %w", defaultPageSize, err)
	}
	if err := try(defaultOptions, false); err != nil {
		return fmt.Errorf("level 0: %w", err)
	}
	for _, level := range []int{-1, 1, 9, 22, 1000, math.MaxInt32, math.MinInt32} {
		o := defaultOptions
		o.Level = level
		if err := try(o, true); err != nil {
			return fmt.Errorf("level %d: %w", level, err)
		}
	}
	return nil
}
