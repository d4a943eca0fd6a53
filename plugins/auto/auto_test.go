package auto

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/corpus"
	"github.com/pagewire/pagewire/sdk"
)

const ps = 4096

var opts = sdk.Options{PageSize: ps, PacketPages: 128}

// guestPackets cuts n packets of up to 128 non-zero pages from the
// corpus image.
func guestPackets(t testing.TB, n int) [][][]byte {
	t.Helper()
	img, err := corpus.LoadFirst()
	if err != nil {
		t.Fatal(err)
	}
	zero := make([]byte, ps)
	var out [][][]byte
	var cur [][]byte
	for off := 0; off+ps <= len(img) && len(out) < n; off += ps {
		if pg := img[off : off+ps]; !bytes.Equal(pg, zero) {
			cur = append(cur, pg)
		}
		if len(cur) == 1+len(out)*37%128 {
			out = append(out, cur)
			cur = nil
		}
	}
	return out
}

func alloc(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, ps)
	}
	return out
}

// TestStreamsAcrossTags: on every channel, each tag is a stream of its
// own, whatever comes between its packets: packets of real guest pages
// go with tags in runs and in random orders on three channels, and every
// page arrives as it was sent.
func TestStreamsAcrossTags(t *testing.T) {
	pkts := guestPackets(t, 240)
	orders := map[string]func(i int, r *rand.Rand) int{
		"cycle":  func(i int, r *rand.Rand) int { return i % nTags },
		"runs":   func(i int, r *rand.Rand) int { return i / 9 % nTags },
		"random": func(i int, r *rand.Rand) int { return r.IntN(nTags) },
	}
	for name, order := range orders {
		t.Run(name, func(t *testing.T) {
			m := New()
			r := rand.New(rand.NewPCG(1, uint64(len(name))))
			const chans = 3
			var snds [chans]sdk.Sender
			var rcvs [chans]sdk.Receiver
			for ch := range chans {
				var err error
				if snds[ch], err = m.NewSender(ch, opts); err != nil {
					t.Fatal(err)
				}
				if rcvs[ch], err = m.NewReceiver(ch, opts); err != nil {
					t.Fatal(err)
				}
			}
			var used [nTags]int
			var payload []byte
			for i, pages := range pkts {
				tag := order(i, r)
				m.ctl.force = func(*sdk.Packet) int { return tag }
				ch := r.IntN(chans)
				var err error
				payload, err = snds[ch].Prepare(&sdk.Packet{Pages: pages}, payload[:0])
				if err != nil {
					t.Fatal(err)
				}
				if int(payload[0]) != tag {
					t.Fatalf("packet %d: tag %d, want %d", i, payload[0], tag)
				}
				used[tag]++
				dst := alloc(len(pages))
				if err := rcvs[ch].Recv(&sdk.Packet{Pages: dst}, payload); err != nil {
					t.Fatalf("packet %d (tag %d, channel %d): %v", i, tag, ch, err)
				}
				for j := range pages {
					if !bytes.Equal(dst[j], pages[j]) {
						t.Fatalf("packet %d (tag %d, channel %d): page %d differs", i, tag, ch, j)
					}
				}
			}
			for tag, n := range used {
				if n == 0 {
					t.Errorf("tag %d never used", tag)
				}
			}
			for ch := range chans {
				if err := snds[ch].Close(); err != nil {
					t.Error(err)
				}
				if err := rcvs[ch].Close(); err != nil {
					t.Error(err)
				}
			}
			rep := m.Report()
			var sum uint64
			for _, c := range rep.Candidates {
				sum += c.Packets
			}
			if sum != uint64(len(pkts)) {
				t.Errorf("report counts %d packets, sent %d", sum, len(pkts))
			}
		})
	}
}

// TestBadPayloads: a payload without a tag, an unknown tag, a raw one of
// the wrong length and a tag whose stream does not decode are errors
// wrapping sdk.ErrCorrupt that name what is wrong.
func TestBadPayloads(t *testing.T) {
	pages := guestPackets(t, 3)[2]
	m := New()
	snd, _ := m.NewSender(0, opts)
	defer snd.Close()
	good := map[int][]byte{}
	for tag := range nTags {
		m.ctl.force = func(*sdk.Packet) int { return tag }
		p, err := snd.Prepare(&sdk.Packet{Pages: pages}, nil)
		if err != nil {
			t.Fatal(err)
		}
		good[tag] = p
	}
	cases := []struct {
		name    string
		payload []byte
		want    string
	}{
		{"empty", nil, "empty payload, no tag"},
		{"tag 5", append([]byte{5}, good[1][1:]...), "unknown tag 5"},
		{"tag 255", []byte{255}, "unknown tag 255"},
		{"raw short", good[tagRaw][:len(good[tagRaw])-1], "auto: nocomp: "},
		{"raw long", append(bytes.Clone(good[tagRaw]), 0), "auto: nocomp: "},
		{"lz4 cut", good[tagLZ4][:len(good[tagLZ4])/2], "auto: lz4:"},
		{"zstd-3 cut", good[tagZstd3][:len(good[tagZstd3])/2], "auto: zstd-3:"},
		{"zstd-7 garbage", append([]byte{tagZstd7}, bytes.Repeat([]byte{0x5a}, 300)...), "auto: zstd-7:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rcv, _ := m.NewReceiver(0, opts)
			defer rcv.Close()
			err := rcv.Recv(&sdk.Packet{Pages: alloc(len(pages))}, c.payload)
			if !errors.Is(err, sdk.ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Recv: %v, want ErrCorrupt saying %q", err, c.want)
			}
		})
	}
}

// TestLevelRefused: auto picks its own levels.
// TestCostIsMedian: one interrupted probe (far above) or one easy
// sample (far below) does not move a candidate's cost; it is the median
// of the last 8.
func TestCostIsMedian(t *testing.T) {
	var e estimate
	for _, c := range []float64{2e-9, 3e-9, 900e-9, 0.01e-9, 2.5e-9} {
		e.addCost(c)
	}
	if e.cost != 2.5e-9 {
		t.Fatalf("cost %g, want 2.5e-9", e.cost)
	}
	for range costProbes {
		e.addCost(5e-9)
	}
	if e.cost != 5e-9 {
		t.Fatalf("cost %g after 8 probes of 5e-9", e.cost)
	}
}

func TestLevelRefused(t *testing.T) {
	o := opts
	o.Level = 3
	if _, err := New().NewSender(0, o); err == nil || !strings.Contains(err.Error(), "give none") {
		t.Fatalf("NewSender with level 3: %v", err)
	}
}

// model returns a controller whose estimates are those of guest pages
// on one core of these machines (ratios and speeds of the candidates as
// probed), for two cores.
func model(compressible bool) *controller {
	m := New()
	c := m.ctl
	c.procs = 2
	c.channels.Store(4)
	mbps := [nTags]float64{8000, 550, 470, 296, 98}
	ratio := [nTags]float64{1, 0.53, 0.35, 0.32, 0.30}
	if !compressible {
		ratio = [nTags]float64{1, 1.001, 1.0002, 1.0002, 1.0001}
	}
	for tag := range nTags {
		c.est[tag] = estimate{ratio: ratio[tag], corr: 1}
		c.est[tag].addCost(1 / (mbps[tag] * 1e6))
	}
	return c
}

// decideAfter runs one window of d in which the channels wrote n bytes
// and spent busy of their time (over all four) in writes.
func decideAfter(c *controller, d time.Duration, n int, busy float64) {
	c.start = time.Unix(1000, 0)
	c.wrote(n, time.Duration(busy*float64(4*d)))
	c.decide(c.start.Add(d))
}

// decideAfter2 runs two such windows: the least the link's estimate
// takes.
func decideAfter2(c *controller, d time.Duration, n int, busy float64) {
	decideAfter(c, d, n, busy)
	decideAfter(c, d, n, busy)
}

// TestModel: the controller's choices on known estimates. With the link
// never full it sends raw; a full link of 12.5 MB/s (100 Mbit/s) gets
// zstd-7, of 125 MB/s (1 Gbit/s) zstd-3 on two cores and zstd-1 on one,
// of 10 Gbit/s raw; incompressible pages go raw whatever the link; a
// choice that saves only 1% of the bytes, at more CPU, does not move it.
// A gateway beside a busy QEMU, with the lab's figures, sends raw on a
// link that is never full or of 10 Gbit/s, lz4 at 1 Gbit/s and zstd-1
// at 100 Mbit/s: the lab's best fixed methods there.
func TestModel(t *testing.T) {
	const w = 100 * time.Millisecond
	t.Run("link never full", func(t *testing.T) {
		c := model(true)
		decideAfter(c, w, 10<<20, 0.1)
		if got := int(c.cur.Load()); got != tagRaw || c.link != 0 {
			t.Fatalf("picked %s, link %.0f; want nocomp and no link estimate", c.cands[got].name, c.link)
		}
	})
	for _, k := range []struct {
		name         string
		bps          float64
		procs        int
		compressible bool
		want         int
	}{
		{"100M", 12.5e6, 2, true, tagZstd7},
		{"1G", 125e6, 2, true, tagZstd3},
		{"1G one core", 125e6, 1, true, tagZstd1},
		{"10G", 1250e6, 2, true, tagRaw},
		{"100M incompressible", 12.5e6, 2, false, tagRaw},
	} {
		t.Run(k.name, func(t *testing.T) {
			c := model(k.compressible)
			c.procs = k.procs
			decideAfter2(c, w, int(k.bps*w.Seconds()), 0.9)
			if got := int(c.cur.Load()); got != k.want {
				t.Fatalf("picked %s, want %s", c.cands[got].name, c.cands[k.want].name)
			}
			if c.link != k.bps {
				t.Fatalf("link estimate %.0f, want %.0f", c.link, k.bps)
			}
		})
	}
	// A gateway beside a busy QEMU on one core, as the lab measured it:
	// the probes' speeds (wall time, the core shared), the ratios of the
	// records workload and 1.5 ns of other work per byte.
	busy := func() *controller {
		c := model(true)
		c.procs, c.other, c.cpuKnown = 1, 1.5e-9, true
		mbps := [nTags]float64{6500, 410, 244, 102, 50}
		ratio := [nTags]float64{1, 0.46, 0.22, 0.23, 0.21}
		for tag := range nTags {
			c.est[tag] = estimate{ratio: ratio[tag], corr: 1}
			c.est[tag].addCost(1 / (mbps[tag] * 1e6))
		}
		return c
	}
	for _, k := range []struct {
		name string
		bps  float64
		want int
	}{
		{"busy core, link never full", 0, tagRaw},
		{"busy core, 10G", 1250e6, tagRaw},
		{"busy core, 1G", 125e6, tagLZ4},
		{"busy core, 100M", 12.5e6, tagZstd1},
	} {
		t.Run(k.name, func(t *testing.T) {
			c := busy()
			busyShare := 0.9
			if k.bps == 0 {
				k.bps, busyShare = 1e9, 0.1 // written freely: never full
			}
			decideAfter2(c, w, int(k.bps*w.Seconds()), busyShare)
			if got := int(c.cur.Load()); got != k.want {
				t.Fatalf("picked %s, want %s", c.cands[got].name, c.cands[k.want].name)
			}
		})
	}
	t.Run("hysteresis", func(t *testing.T) {
		c := model(true)
		decideAfter2(c, w, int(12.5e6*w.Seconds()), 0.9)
		c.cur.Store(tagZstd3)
		c.switches = 0
		c.est[tagZstd7].ratio = 0.317 // 1% fewer bytes than zstd-3, at 3x its CPU
		decideAfter(c, w, int(12.5e6*w.Seconds()), 0.9)
		if got := int(c.cur.Load()); got != tagZstd3 || c.switches != 0 {
			t.Fatalf("moved to %s", c.cands[got].name)
		}
	})
	t.Run("link estimate", func(t *testing.T) {
		c := model(true)
		decideAfter(c, w, 1e6, 0.9) // full at 10 MB/s: one window is not enough
		if c.link != 0 {
			t.Fatalf("link %.0f after one full window", c.link)
		}
		decideAfter(c, w, 1e6, 0.9)
		if math.Abs(c.link-10e6) > 1 {
			t.Fatalf("link %.0f after two full windows at 10 MB/s", c.link)
		}
		decideAfter(c, w, 3e6, 0.9) // a burst: averaged, not taken
		if c.link < 10e6 || c.link > 20e6 {
			t.Fatalf("link %.0f after a burst window", c.link)
		}
		for range 100 {
			decideAfter(c, w, 1e6, 0.9)
		}
		if math.Abs(c.link-10e6) > 0.2e6 {
			t.Fatalf("link %.0f after the burst faded", c.link)
		}
		c.lastFull = time.Unix(0, 0)
		decideAfter(c, w, 0.5e6, 0.1) // long not full: it creeps up
		if c.link <= 10e6 {
			t.Fatalf("link %.0f, want it to creep above 1e7", c.link)
		}
	})
}
