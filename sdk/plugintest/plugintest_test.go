package plugintest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pagewire/pagewire/sdk"
)

// toy is a small stateful method for testing the kit: a payload is the
// packet's page count (4 bytes, big endian), then its pages XORed with a
// key that changes with every packet of a channel, so a receiver must see
// a channel's packets in order and must keep its own count. bug makes it
// wrong in one way.
type toy struct {
	bug     string
	shared  *[2]atomic.Uint64 // bug "shared": packet counts of all channels
	infos   *atomic.Int64     // bug "unstable-info": Info calls
	release chan struct{}     // bugs "hang" and "leak" wait on it
}

func (m toy) Info() sdk.Info {
	switch m.bug {
	case "bad-flag":
		return sdk.Info{Name: "toy", Flag: 0x41}
	case "unstable-info":
		return sdk.Info{Name: fmt.Sprint("toy", m.infos.Add(1)), Flag: 0x20}
	}
	return sdk.Info{Name: "toy", Flag: 0x20}
}

func (m toy) NewSender(ch int, o sdk.Options) (sdk.Sender, error) {
	if m.bug == "level-panic" && o.Level > 3 {
		panic(fmt.Sprint("no table for level ", o.Level))
	}
	if o.Level < 0 || o.Level > 3 {
		return nil, fmt.Errorf("toy level %d: want 0..3", o.Level)
	}
	if m.bug == "leak" {
		go func() { <-m.release }()
	}
	c := &toyCodec{m: m, count: new(atomic.Uint64)}
	if m.bug == "shared" {
		c.count = &m.shared[0]
	}
	return c, nil
}

func (m toy) NewReceiver(ch int, o sdk.Options) (sdk.Receiver, error) {
	c := &toyCodec{m: m, count: new(atomic.Uint64)}
	if m.bug == "shared" {
		c.count = &m.shared[1]
	}
	return c, nil
}

type toyCodec struct {
	m     toy
	count *atomic.Uint64 // packets prepared or received
}

// xor writes src^key to dst, 8 bytes at a time; pages are multiples of 8.
func xor(dst, src []byte, key uint64) {
	for i := 0; i+8 <= len(src); i += 8 {
		binary.LittleEndian.PutUint64(dst[i:], binary.LittleEndian.Uint64(src[i:])^key)
	}
}

func pageKey(seq uint64, i int) uint64 { return (seq*31 + uint64(i) + 1) * 0x0101010101010101 }

func (c *toyCodec) Prepare(p *sdk.Packet, dst []byte) ([]byte, error) {
	if c.m.bug == "ignore-dst" {
		dst = nil
	}
	seq := c.count.Add(1)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(p.Pages)))
	for i, pg := range p.Pages {
		n := len(dst)
		dst = append(dst, pg...)
		xor(dst[n:], pg, pageKey(seq, i))
	}
	return dst, nil
}

func (c *toyCodec) Recv(p *sdk.Packet, payload []byte) error {
	size := 0
	for _, pg := range p.Pages {
		size += len(pg)
	}
	corrupt := sdk.ErrCorrupt
	if c.m.bug == "wrong-error" {
		corrupt = errors.New("bad payload")
	}
	if c.m.bug != "lenient" {
		if len(payload) != 4+size {
			return fmt.Errorf("%w: %d bytes for %d pages", corrupt, len(payload), len(p.Pages))
		}
		if n := binary.BigEndian.Uint32(payload); n != uint32(len(p.Pages)) {
			return fmt.Errorf("%w: payload of %d pages for %d", corrupt, n, len(p.Pages))
		}
	}
	seq := c.count.Add(1)
	switch {
	case c.m.bug == "hang":
		<-c.m.release
	case c.m.bug == "goexit":
		runtime.Goexit()
	case c.m.bug == "panic" && seq == 2:
		_ = p.Pages[len(p.Pages)]
	}
	payload = payload[min(4, len(payload)):]
	for i, pg := range p.Pages {
		n := min(len(pg), len(payload))
		if c.m.bug == "partial" {
			n = min(n, len(pg)-8)
		}
		xor(pg, payload[:n], pageKey(seq, i))
		payload = payload[n:]
		if c.m.bug == "append" {
			pg = append(pg, 0) // a NUL after the page: past its end
		}
	}
	return nil
}

func (c *toyCodec) Close() error {
	if c.m.bug == "close-error" {
		return errors.New("already closed")
	}
	return nil
}

// TestKitGoodMethod: a correct method passes every check.
func TestKitGoodMethod(t *testing.T) {
	Run(t, toy{})
}

// TestKitRunAll: RunAll reports every check, in order, for a correct
// method.
func TestKitRunAll(t *testing.T) {
	res := RunAll(toy{})
	checks := Checks()
	if len(res) != len(checks) {
		t.Fatalf("%d results for %d checks", len(res), len(checks))
	}
	for i, r := range res {
		if r.Name != checks[i].Name || r.Err != nil || r.Elapsed <= 0 {
			t.Errorf("result %d: %+v, want check %s passed", i, r, checks[i].Name)
		}
	}
}

// TestKitCatchesBrokenMethods: each broken method fails the check meant
// to catch it, with an error that says why, and the kit survives it.
func TestKitCatchesBrokenMethods(t *testing.T) {
	defer func(d time.Duration) { leakSettle = d }(leakSettle)
	leakSettle = 300 * time.Millisecond
	release := make(chan struct{})
	defer close(release) // lets the leaked goroutines go
	for _, c := range []struct {
		bug   string
		check string
		want  []string
	}{
		{"bad-flag", "info", []string{"toy: info:", "flag 0x41"}},
		{"unstable-info", "info", []string{"not stable"}},
		{"shared", "stream-state", []string{"stream-state:", "channel", "differs from the page sent"}},
		{"shared", "concurrent", []string{"differs from the page sent"}},
		{"panic", "roundtrip", []string{"toy: roundtrip: channel 0 packet 2 (", "Recv panicked", "index out of range", "plugintest_test.go"}},
		{"goexit", "roundtrip", []string{"Goexit"}},
		{"lenient", "corrupt", []string{"payload cut to half: channel 0 packet 2", "accepted a bad payload", "first packet's payload of random bytes"}},
		{"lenient", "bounds", []string{"decoded the payload of 9 pages into a packet of 8"}},
		{"wrong-error", "corrupt", []string{"does not wrap sdk.ErrCorrupt: bad payload"}},
		{"append", "roundtrip", []string{"Recv wrote outside the pages it was given", "guard byte 0 between pages 0 and 1"}},
		{"partial", "roundtrip", []string{"page 0", "8 of 4096 bytes differ", "not written?"}},
		{"ignore-dst", "roundtrip", []string{"Prepare did not append to dst"}},
		{"level-panic", "options", []string{"toy: options: level 9: NewSender(0, {Level:9 PageSize:4096 PacketPages:128}): NewSender panicked: no table for level 9"}},
		{"close-error", "cleanup", []string{"channel 0: Sender.Close: already closed", "and 14 more channels"}},
		{"leak", "cleanup", []string{"goroutines running", "after 16 channels were closed", "created by github.com/pagewire/pagewire/sdk/plugintest.toy.NewSender"}},
	} {
		t.Run(c.bug+"/"+c.check, func(t *testing.T) {
			m := toy{bug: c.bug, shared: new([2]atomic.Uint64), infos: new(atomic.Int64), release: release}
			err := check(t, c.check).Run(m)
			if err == nil {
				t.Fatalf("check %s passed a method with bug %q", c.check, c.bug)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			t.Log(err)
		})
	}
}

func check(t *testing.T, name string) Check {
	for _, c := range Checks() {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %q", name)
	return Check{}
}

// panicky panics in every call, Info included.
type panicky struct{}

func (panicky) Info() sdk.Info                                     { panic("Info") }
func (panicky) NewSender(int, sdk.Options) (sdk.Sender, error)     { panic("NewSender") }
func (panicky) NewReceiver(int, sdk.Options) (sdk.Receiver, error) { panic("NewReceiver") }

// TestKitSurvivesPanics: every check reports a method that panics in
// every call, and none of them crashes.
func TestKitSurvivesPanics(t *testing.T) {
	for _, r := range RunAll(panicky{}) {
		if r.Err == nil || !strings.Contains(r.Err.Error(), "plugintest.panicky: "+r.Name+": ") || !strings.Contains(r.Err.Error(), "panicked") {
			t.Errorf("%s: %v", r.Name, r.Err)
		}
	}
	// Panics after a good start: in Recv of the second good packet, which
	// the corrupt and bounds checks never reach.
	for _, r := range RunAll(toy{bug: "panic"}) {
		if r.Name != "info" && r.Name != "corrupt" && r.Name != "bounds" && (r.Err == nil || !strings.Contains(r.Err.Error(), "Recv panicked")) {
			t.Errorf("%s: %v", r.Name, r.Err)
		}
	}
}

// TestKitTimeout: a method call that never returns fails its check with
// a timeout instead of hanging the caller.
func TestKitTimeout(t *testing.T) {
	defer func(d time.Duration) { checkTimeout = d }(checkTimeout)
	checkTimeout = 200 * time.Millisecond
	release := make(chan struct{})
	defer close(release)
	m := toy{bug: "hang", release: release}
	for _, c := range Checks() {
		if c.Name != "roundtrip" {
			continue
		}
		start := time.Now()
		err := c.Run(m)
		if err == nil || !strings.Contains(err.Error(), "toy: roundtrip: timed out after 200ms") {
			t.Fatalf("err = %v, want a timeout", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %v", d)
		}
		t.Log(err)
	}
}

// TestKitPages: the generated pages are what their kinds say, and the
// same on every call.
func TestKitPages(t *testing.T) {
	pg := make([]byte, 4096)
	again := make([]byte, 4096)
	for k := range numKinds {
		fillPage(pg, k, newRNG(1, 2))
		fillPage(again, k, newRNG(1, 2))
		if string(pg) != string(again) {
			t.Errorf("%s: not deterministic", k)
		}
		zeros, ff, distinct := 0, 0, map[byte]bool{}
		for _, b := range pg {
			if b == 0 {
				zeros++
			}
			if b == 0xff {
				ff++
			}
			distinct[b] = true
		}
		ok := map[kind]bool{
			kindZero:     zeros == len(pg),
			kindOnes:     ff == len(pg),
			kindRepeated: len(distinct) == 1 && zeros == 0 && !distinct[poison],
			kindRandom:   len(distinct) > 250,
			kindText:     !distinct[0] && !distinct[poison] && distinct['\n'],
			kindBinary:   zeros > 0 && len(distinct) > 16,
			kindSparse:   zeros > len(pg)-100,
		}[k]
		if !ok {
			t.Errorf("%s page: %d zeros, %d 0xff, %d distinct bytes", k, zeros, ff, len(distinct))
		}
	}
}
