package main_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/internal/lab/guest"
	"github.com/pagewire/pagewire/internal/lab/linkemu"
)

// resumeSummary is what the tests read of a gateway's --json summary.
type resumeSummary struct {
	WireBytes    int64  `json:"wire_bytes"`
	ControlBytes int64  `json:"control_bytes"`
	DeltaPages   uint64 `json:"delta_pages"`
	E2E          *int64 `json:"e2e_downtime_ms"`
	Resume       *struct {
		Reconnects  int64   `json:"reconnects"`
		Outage      float64 `json:"outage_s"`
		ResentBytes int64   `json:"resent_bytes"`
		Refused     int64   `json:"refused"`
	} `json:"link_resume"`
}

func readSummary(t *testing.T, p *proc) resumeSummary {
	t.Helper()
	var s resumeSummary
	if err := json.Unmarshal(p.stdout.Bytes(), &s); err != nil || s.Resume == nil {
		t.Fatalf("%v: the summary has no link_resume (%v): %s", p.cmd.Args[1:3], err, p.stdout.String())
	}
	return s
}

// ramProgress is the source's query-migrate: bytes sent and dirty
// syncs (sync points) so far.
func ramProgress(t testing.TB, q *qmp) (transferred int64, syncs int) {
	var info struct {
		RAM struct {
			Transferred    int64 `json:"transferred"`
			DirtySyncCount int   `json:"dirty-sync-count"`
		} `json:"ram"`
	}
	json.Unmarshal(q.do(t, "query-migrate", nil), &info)
	return info.RAM.Transferred, info.RAM.DirtySyncCount
}

// until polls cond every 5 ms for at most within.
func until(within time.Duration, cond func() bool) bool {
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}

// TestGatewayResume migrates a running guest (small updates to
// incompressible memory, QEMU 10.0 on both ends) through the gateways,
// with delta pages and mutual TLS, over an emulated link that is reset
// or made a black hole: during the bulk round, at a sync point, during
// the final round after the source stopped the guest, black holes of 5 s
// and of 60 s (longer than the stall timeout and every handshake), and
// 10 resets in 20 s. Every migration completes with the source's RAM;
// gateway-in reports its reconnections and the bytes it sent again, at
// most 5% of the link's bytes for a single reset.
func TestGatewayResume(t *testing.T) {
	kernel, initrd, appendLine := deltaGuest(t, 48, 5000)
	cases := []struct {
		name   string
		rate   int64 // the link's bits per second
		single bool  // one reset: resent <= 5%
		resets int   // at least this many reconnections
		during func(t *testing.T, g *gwRig, l *linkemu.Link)
	}{
		{"reset-bulk", 200e6, true, 1, func(t *testing.T, g *gwRig, l *linkemu.Link) {
			if !until(60*time.Second, func() bool { n, _ := ramProgress(t, g.srcQMP); return n > 24<<20 }) {
				t.Error("the bulk round did not reach 24 MiB")
			}
			if _, syncs := ramProgress(t, g.srcQMP); syncs > 1 {
				t.Errorf("the bulk round is over (%d syncs)", syncs)
			}
			l.Reset()
		}},
		{"reset-sync", 200e6, true, 1, func(t *testing.T, g *gwRig, l *linkemu.Link) {
			if !until(60*time.Second, func() bool { _, s := ramProgress(t, g.srcQMP); return s >= 2 }) {
				t.Error("no second sync point")
			}
			l.Reset()
		}},
		{"reset-final", 200e6, true, 1, func(t *testing.T, g *gwRig, l *linkemu.Link) {
			stopped := until(90*time.Second, func() bool {
				var st struct {
					Running bool `json:"running"`
				}
				json.Unmarshal(g.srcQMP.do(t, "query-status", nil), &st)
				return !st.Running
			})
			if !stopped {
				t.Error("the source did not stop the guest")
			}
			l.Reset()
			if st, _ := migrationStatus(t, g.dstQMP); st == "completed" {
				t.Error("the destination completed before the reset: not in the final round")
			}
		}},
		{"blackhole-5s", 200e6, false, 0, func(t *testing.T, g *gwRig, l *linkemu.Link) {
			until(60*time.Second, func() bool { n, _ := ramProgress(t, g.srcQMP); return n > 16<<20 })
			l.Blackhole(5 * time.Second)
		}},
		{"blackhole-60s", 200e6, false, 1, func(t *testing.T, g *gwRig, l *linkemu.Link) {
			until(60*time.Second, func() bool { n, _ := ramProgress(t, g.srcQMP); return n > 16<<20 })
			l.Blackhole(60 * time.Second)
		}},
		{"reset-storm", 40e6, false, 10, func(t *testing.T, g *gwRig, l *linkemu.Link) {
			// The link opens at the source's first sync point, and
			// the guest's first pass takes about 27 s at 40 Mbit/s.
			until(60*time.Second, func() bool { return l.Stats().Active > 0 })
			time.Sleep(time.Second)
			for i := range 10 {
				if st, _ := migrationStatus(t, g.srcQMP); st != "active" {
					t.Errorf("the migration ended (%s) after %d resets: the storm needs a longer one", st, i)
					return
				}
				l.Reset()
				time.Sleep(2 * time.Second)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, l := resumeRig(t, kernel, initrd, appendLine, c.rate)
			done := make(chan struct{})
			go func() {
				defer close(done)
				c.during(t, g, l)
			}()
			st, desc := waitMigration(t, g.srcQMP, 180*time.Second)
			<-done
			if st != "completed" {
				t.Fatalf("source: %s: %s\ngateway-in: %s\ngateway-out: %s", st, desc, g.in.stderr, g.out.stderr)
			}
			g.settle(t, resumeRAM)
			in, out := readSummary(t, g.in), readSummary(t, g.out)
			link := in.WireBytes + in.ControlBytes
			t.Logf("link stats: %+v (in), %+v (out); %d link bytes, %d delta pages; e2e downtime %v ms; linkemu %+v",
				*in.Resume, *out.Resume, link, in.DeltaPages, ptrVal(out.E2E), l.Stats())
			if in.Resume.Reconnects < int64(c.resets) || in.Resume.Reconnects != out.Resume.Reconnects {
				t.Errorf("reconnections: gateway-in %d, gateway-out %d; want at least %d, the same", in.Resume.Reconnects, out.Resume.Reconnects, c.resets)
			}
			if c.single && in.Resume.ResentBytes*20 > link {
				t.Errorf("sent again %d of %d bytes: more than 5%%", in.Resume.ResentBytes, link)
			}
			if in.DeltaPages == 0 {
				t.Error("no delta pages: resuming was not tried with deltas in flight")
			}
			if c.resets > 0 && !strings.Contains(g.in.stderr.String(), "link back after") {
				t.Errorf("gateway-in did not say the link came back: %s", g.in.stderr)
			}
		})
	}
}

func ptrVal(p *int64) any {
	if p == nil {
		return "none"
	}
	return *p
}

// resumeRAM is the guest's RAM: not a multiple of 64 pages (TCG's dirty
// bits).
const resumeRAM = 128<<20 + 64<<10

// resumeRig boots the small-updates guest on a QEMU 10.0 source, starts
// the gateways (TLS, --delta-cache, --qmp) with the link through an
// emulated link of rate bits/s, and starts the migration.
func resumeRig(t *testing.T, kernel, initrd, appendLine string, rate int64) (*gwRig, *linkemu.Link) {
	t.Helper()
	q := qemuOf(t, "10.0")
	q.machine = "pc-i440fx-10.0"
	gc := gwCase{qemuChannels: 2, srcMethod: "none", dstMethod: "none", linkChannels: 4}
	console := filepath.Join(t.TempDir(), "console.log")
	args := []string{"-cpu", "max", "-kernel", kernel, "-initrd", initrd, "-append", appendLine}
	g := newRigQEMU(t, gc, make([]byte, resumeRAM), q, q, append(args, "-serial", "file:"+console), append(args, "-serial", "null"))
	if !until(90*time.Second, func() bool { b, _ := os.ReadFile(console); return guest.Ready(b) || guest.Failed(b) != "" }) {
		t.Fatal("the guest's workload did not start within 90s")
	}
	if b, _ := os.ReadFile(console); guest.Failed(b) != "" {
		t.Fatalf("the guest's workload failed: %s", b)
	}
	g.inArgs = []string{"--delta-cache", "64M"}
	g.gwQMP = true
	var l *linkemu.Link
	inAddr := g.gateways(t, gc, g.serverTLS(), g.clientTLS(), func(out string) string {
		var err error
		l, err = linkemu.Listen("127.0.0.1:0", strings.TrimPrefix(out, "tcp:"), linkemu.Config{Rate: rate, Delay: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return "tcp:" + l.Addr().String()
	})
	g.srcQMP.do(t, "migrate-set-parameters", map[string]any{"max-bandwidth": 64 << 20, "downtime-limit": 300})
	g.srcQMP.do(t, "migrate", map[string]any{"uri": inAddr})
	return g, l
}

// TestGatewayResumeImpostors: during a migration, connections to
// gateway-out that claim a link session (with another certificate of
// the same CA, and with the right certificate but a token it never
// gave) are refused; the migration completes and gateway-out counts
// them.
func TestGatewayResumeImpostors(t *testing.T) {
	c := gwCase{2, "none", "none", 2, []string{"--method", "zstd"}, ""}
	g := newRig(t, c)
	g.inArgs = []string{"--max-bandwidth", "40M"}
	var outAddr string
	inAddr := g.gateways(t, c, g.serverTLS(), g.clientTLS(), func(a string) string { outAddr = a; return a })
	g.srcQMP.do(t, "migrate", map[string]any{"uri": inAddr})
	var refused atomic.Int32
	for _, pair := range []struct{ cert, key string }{{g.otherClient.Cert, g.otherClient.Key}, {g.tls.ClientCert, g.tls.ClientKey}} {
		cfg, err := channels.ClientTLS(channels.TLSFiles{Cert: pair.cert, Key: pair.key, CA: g.tls.CA})
		if err != nil {
			t.Fatal(err)
		}
		td, _ := channels.NewDialer(outAddr)
		d, err := channels.TLSDialer(td, outAddr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		u, err := d.Dial(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		u.SetDeadline(time.Now().Add(10 * time.Second))
		hello := make([]byte, 40)
		copy(hello, "PWRESUM1")
		hello[8] = 2 // resume
		copy(hello[16:32], "a guessed token!")
		u.Write(hello)
		ans := make([]byte, 40)
		if _, err := u.Read(ans); err != nil || string(ans[:8]) != "PWRESUM1" || ans[8] == 0 {
			t.Errorf("answer % x (%v): want a refusal", ans[:16], err)
		} else {
			refused.Add(1)
		}
		u.Close()
	}
	if st, desc := waitMigration(t, g.srcQMP, 60*time.Second); st != "completed" {
		t.Fatalf("source: %s: %s\ngateway-out: %s", st, desc, g.out.stderr)
	}
	g.settle(t, g.ramSize)
	out := readSummary(t, g.out)
	if out.Resume.Refused != 2 || refused.Load() != 2 || !strings.Contains(g.out.stderr.String(), "refused a link connection") {
		t.Errorf("gateway-out refused %d (the test saw %d): %s", out.Resume.Refused, refused.Load(), g.out.stderr)
	}
}

// TestSendRecvResume: pagewire send with --link-retry over an emulated
// link that is reset three times: recv writes the image, both summaries
// count the reconnections. Without --link-retry the same reset fails
// the transfer, naming the link's connection.
func TestSendRecvResume(t *testing.T) {
	src, im := firstImage(t)
	for _, retry := range []string{"30s", "0"} {
		t.Run("link-retry="+retry, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.img")
			r, addr := startRecv(t, "recv", "--listen", "tcp:127.0.0.1:0", "--out", out, "--json")
			l, err := linkemu.Listen("127.0.0.1:0", strings.TrimPrefix(addr, "tcp:"), linkemu.Config{Rate: 200e6})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			s := start(t, "send", "--to", "tcp:"+l.Addr().String(), "--channels", "4", "--json", "--link-retry", retry, src)
			until(30*time.Second, func() bool { return l.Stats().Up > 4<<20 })
			for range 3 {
				l.Reset()
				time.Sleep(100 * time.Millisecond)
			}
			sc, rc := s.wait(t), r.wait(t)
			if retry == "0" {
				if sc == 0 || !strings.Contains(s.stderr.String(), "reset") {
					t.Fatalf("send without --link-retry exited %d after a reset: %s", sc, s.stderr)
				}
				return
			}
			if sc != 0 || rc != 0 {
				t.Fatalf("send exited %d: %s\nrecv exited %d: %s", sc, s.stderr, rc, r.stderr)
			}
			if got := fileSHA(t, out); got != im.SHA256 {
				t.Fatalf("received image sha256 %s, want %s", got, im.SHA256)
			}
			ss, rs := readSummary(t, s), readSummary(t, r)
			if ss.Resume.Reconnects < 1 || rs.Resume.Reconnects != ss.Resume.Reconnects {
				t.Errorf("reconnections: send %d, recv %d", ss.Resume.Reconnects, rs.Resume.Reconnects)
			}
		})
	}
}
