package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/corpus"
)

// gwBenchImage is size bytes of guest RAM: the corpus images, repeated.
func gwBenchImage(b *testing.B, size int) []byte {
	images, err := corpus.List()
	if err != nil {
		b.Fatal(err)
	}
	img := make([]byte, 0, size)
	for len(img) < size {
		for _, im := range images {
			data, err := im.Load()
			if err != nil {
				b.Fatal(err)
			}
			img = append(img, data[:min(len(data), size-len(img))]...)
		}
	}
	return img
}

// unlimited is QEMU's max-bandwidth for "no cap" (7.2 defaults to 128 MiB/s).
const unlimited = int64(1) << 40

// gwMeasure is one migration: until the destination completed, and the
// bytes that crossed the (capped) link.
type gwMeasure struct {
	d     time.Duration
	bytes uint64
}

// directMigration migrates img QEMU to QEMU with method, the source
// capped at bps (QEMU's max-bandwidth).
func directMigration(b *testing.B, img []byte, method string, bps int64) gwMeasure {
	c := gwCase{qemuChannels: 4, srcMethod: method, dstMethod: method}
	g := newRigWith(b, c, img, []string{"-S"}, nil)
	g.srcQMP.do(b, "migrate-set-parameters", map[string]any{"max-bandwidth": bps})
	begin := time.Now()
	g.srcQMP.do(b, "migrate", map[string]any{"uri": fmt.Sprintf("tcp:127.0.0.1:%d", g.dstPort)})
	if st, desc := waitMigration(b, g.srcQMP, 10*time.Minute); st != "completed" {
		b.Fatalf("source: %s: %s", st, desc)
	}
	if st, desc := waitMigration(b, g.dstQMP, time.Minute); st != "completed" {
		b.Fatalf("destination: %s: %s", st, desc)
	}
	m := gwMeasure{d: time.Since(begin)}
	var info struct {
		RAM struct {
			Transferred uint64 `json:"transferred"`
		} `json:"ram"`
	}
	json.Unmarshal(g.srcQMP.do(b, "query-migrate", nil), &info)
	m.bytes = info.RAM.Transferred
	g.quit(b)
	return m
}

// gatewayMigration migrates img through the gateways (QEMU none on both
// sides, 4 channels), the link capped at bps with --max-bandwidth.
func gatewayMigration(b *testing.B, img []byte, link []string, bps int64) gwMeasure {
	c := gwCase{qemuChannels: 4, srcMethod: "none", dstMethod: "none", linkChannels: 4, linkArgs: link}
	g := newRigWith(b, c, img, []string{"-S"}, nil)
	in := g.clientTLS()
	if bps > 0 {
		in = append(in, "--max-bandwidth", fmt.Sprint(bps))
	}
	inAddr := g.gateways(b, c, g.serverTLS(), in, func(a string) string { return a })
	g.srcQMP.do(b, "migrate-set-parameters", map[string]any{"max-bandwidth": unlimited})
	begin := time.Now()
	g.srcQMP.do(b, "migrate", map[string]any{"uri": inAddr})
	if st, desc := waitMigration(b, g.srcQMP, 10*time.Minute); st != "completed" {
		b.Fatalf("source: %s: %s\ngateway-in: %s\ngateway-out: %s", st, desc, g.in.stderr, g.out.stderr)
	}
	if st, desc := waitMigration(b, g.dstQMP, time.Minute); st != "completed" {
		b.Fatalf("destination: %s: %s", st, desc)
	}
	m := gwMeasure{d: time.Since(begin)}
	for _, p := range []*proc{g.in, g.out} {
		if code := p.wait(b); code != 0 {
			b.Fatalf("%s exited %d: %s", p.cmd.Args[2], code, p.stderr)
		}
	}
	var sum struct {
		WireBytes    uint64 `json:"wire_bytes"`
		ControlBytes uint64 `json:"control_bytes"`
	}
	if err := json.Unmarshal(g.in.stdout.Bytes(), &sum); err != nil {
		b.Fatalf("gateway-in summary: %v", err)
	}
	m.bytes = sum.WireBytes + sum.ControlBytes
	g.quit(b)
	return m
}

// buildCWasm builds zstd-c.wasm (scripts/build-c-plugins.sh).
func buildCWasm(b *testing.B) string {
	dir := b.TempDir()
	buildCPlugins(b, dir)
	return filepath.Join(dir, "zstd-c.wasm")
}

// BenchmarkGateway migrates a paused 1 GiB guest (the corpus images,
// repeated) QEMU 7.2 to QEMU 7.2, directly with multifd none, zlib and
// zstd (the source's max-bandwidth at the cap) and through gateway-in and
// gateway-out (QEMU none on both sides, the link capped with
// --max-bandwidth) with link methods zstd, lz4, zstd.wasm (Go) and
// zstd-c.wasm, every variant in every iteration: seconds until the
// destination completed and MB that crossed the capped leg. The
// uncapped run is what the two extra hops cost (gateways with nocomp vs
// direct none). 'make bench' runs it once (GW_BENCHTIME).
func BenchmarkGateway(b *testing.B) {
	const size = 1 << 30
	img := gwBenchImage(b, size)
	wasmGo, wasmC := buildWasm(b), buildCWasm(b)
	caps := []struct {
		name   string
		bps    int64
		direct []string
		links  map[string][]string
	}{
		{"1Gbit", 125_000_000, []string{"none", "zlib", "zstd"}, map[string][]string{
			"zstd": {"--method", "zstd"}, "lz4": {"--method", "lz4"}, "zstd.wasm": {"--plugin", wasmGo}, "zstd-c.wasm": {"--plugin", wasmC}}},
		{"100Mbit", 12_500_000, []string{"none", "zlib", "zstd"}, map[string][]string{
			"zstd": {"--method", "zstd"}, "lz4": {"--method", "lz4"}, "zstd.wasm": {"--plugin", wasmGo}, "zstd-c.wasm": {"--plugin", wasmC}}},
		{"uncapped", 0, []string{"none"}, map[string][]string{"nocomp": {"--method", "nocomp"}, "zstd": {"--method", "zstd"}}},
	}
	for _, cp := range caps {
		b.Run(cp.name, func(b *testing.B) {
			sec := map[string]time.Duration{}
			mb := map[string]uint64{}
			for b.Loop() {
				for _, m := range cp.direct {
					bps := cp.bps
					if bps == 0 {
						bps = unlimited
					}
					r := directMigration(b, img, m, bps)
					sec["direct-"+m] += r.d
					mb["direct-"+m] += r.bytes
				}
				for name, link := range cp.links {
					r := gatewayMigration(b, img, link, cp.bps)
					sec["gw-"+name] += r.d
					mb["gw-"+name] += r.bytes
				}
			}
			for k, d := range sec {
				b.ReportMetric(d.Seconds()/float64(b.N), k+"-s")
				b.ReportMetric(float64(mb[k])/1e6/float64(b.N), k+"-MB")
			}
		})
	}
}

// quit ends both QEMUs and removes their RAM files: 2 GiB of page cache
// per migration would otherwise pile up until the benchmark ends and
// slow whichever variant runs last.
func (g *gwRig) quit(t testing.TB) {
	g.srcQMP.do(t, "quit", nil)
	g.dstQMP.do(t, "quit", nil)
	g.src.wait(t)
	g.dst.wait(t)
	os.Remove(g.srcRAM)
	os.Remove(g.dstRAM)
}
