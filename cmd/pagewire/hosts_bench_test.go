package main_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/corpus"
)

// BenchmarkTwoHosts is an end-to-end transfer as it runs between two
// hosts: 'pagewire send' and 'pagewire recv' are separate processes over
// loopback TCP (4 channels), each pinned to a core of its own with
// taskset, as two hosts of one core each would be; a plugin process
// inherits its host process's core. Each codec runs built in, as a
// go-plugin, as Go-built Wasm and as C-built Wasm, in turn within every
// iteration, on every corpus image.
//
// The time of a transfer is the sender's own figure (its JSON
// "seconds": from the moment every channel is open, with the method set
// up at both ends, to the receiver's DONE), so process start, reading
// the image and loading or compiling a plugin do not count. X-MB/s is each tier's throughput (RAM bytes, zero pages
// included) over its median transfer, and X/builtin its fraction of the
// built-in's. The sender decompresses the corpus image into shared
// memory (a memfd), so a go-plugin maps its pages ("go-plugin"), unless
// told not to ("go-plugin-copied").
//
// BenchmarkGoPluginVsBuiltin (goplugin) and BenchmarkTiers (wasm) put
// both ends in one process, so there the two ends' costs add up on the
// machine's two cores; here only the slower end counts, as between two
// hosts.
func BenchmarkTwoHosts(b *testing.B) {
	if runtime.NumCPU() < 2 {
		b.Skip("needs two cores: one for each end")
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		b.Fatal("taskset (util-linux) not found: ", err)
	}
	images, err := corpus.List()
	if err != nil {
		b.Fatal(err)
	}
	cdir, err := corpus.Dir()
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	plugins := buildPlugins(b, dir, "zstd", "lz4")
	for _, img := range images {
		twoHosts(b, taskset, dir, filepath.Join(cdir, img.File), img, plugins)
	}
}

// twoHosts runs BenchmarkTwoHosts's transfers of one corpus image.
func twoHosts(b *testing.B, taskset, dir, src string, img corpus.Image, plugins map[string]string) {
	for _, codec := range []string{"zstd", "lz4"} {
		tiers := []struct {
			name      string
			flags     []string
			sendFlags []string // the sender's only
		}{
			{"builtin", []string{"--method", codec}, nil},
			{"go-plugin", []string{"--plugin", plugins[codec]}, nil},
			{"go-plugin-copied", []string{"--plugin", plugins[codec]}, []string{"--plugin-no-share"}},
			{"go-wasm", []string{"--plugin", plugins[codec+".wasm"]}, nil},
			{"c-wasm", []string{"--plugin", plugins[codec+"-c.wasm"]}, nil},
		}
		b.Run(codec+"/"+img.Name, func(b *testing.B) {
			took := make([][]time.Duration, len(tiers))
			for n := 0; b.Loop(); n++ {
				for k := range tiers { // a different tier first each time
					i := (n + k) % len(tiers)
					took[i] = append(took[i], pinnedTransfer(b, taskset, dir, src, tiers[i].flags, tiers[i].sendFlags))
				}
			}
			// Medians: on a shared machine a few transfers take 1.5x as
			// long, whatever their tier.
			mb := float64(img.Size) / 1e6
			base := median(took[0])
			for i, t := range tiers {
				b.ReportMetric(mb/median(took[i]).Seconds(), t.name+"-MB/s")
				if i > 0 {
					b.ReportMetric(base.Seconds()/median(took[i]).Seconds(), t.name+"/builtin")
				}
			}
		})
	}
}

// buildPlugins builds the go-plugin, Go-built Wasm and C-built Wasm
// plugins of codecs into dir; keys are NAME, NAME.wasm and NAME-c.wasm.
func buildPlugins(b *testing.B, dir string, codecs ...string) map[string]string {
	b.Helper()
	paths := map[string]string{}
	for _, c := range codecs {
		paths[c] = buildGoPlugin(b, dir, c)
		paths[c+".wasm"] = buildGoWasm(b, dir, c)
		paths[c+"-c.wasm"] = filepath.Join(dir, c+"-c.wasm")
	}
	buildCPlugins(b, dir)
	return paths
}

// median returns the median of ds (which it sorts).
func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	if n := len(ds); n%2 == 0 {
		return (ds[n/2-1] + ds[n/2]) / 2
	}
	return ds[len(ds)/2]
}

// pinnedTransfer sends src from a sender pinned to core 0 to a receiver
// pinned to core 1, both loading the method with flags (the sender with
// sendFlags too), and returns the sender's transfer time.
func pinnedTransfer(b *testing.B, taskset, dir, src string, flags, sendFlags []string) time.Duration {
	b.Helper()
	out := filepath.Join(dir, "out.img")
	r, addr := startRecv(b, append([]string{"--qemu--", taskset, "-c", "1", bin, "recv", "--listen", "tcp:127.0.0.1:0",
		"--out", out, "--channels", "4"}, flags...)...)
	args := append([]string{"--qemu--", taskset, "-c", "0", bin, "send", "--to", addr, "--channels", "4", "--json"}, flags...)
	s := start(b, append(append(args, sendFlags...), src)...)
	if code := s.wait(b); code != 0 {
		b.Fatalf("send exited %d: %s", code, s.stderr)
	}
	if code := r.wait(b); code != 0 {
		b.Fatalf("recv exited %d: %s", code, r.stderr)
	}
	var sum struct {
		Seconds float64 `json:"seconds"`
	}
	if err := json.Unmarshal(s.stdout.Bytes(), &sum); err != nil || sum.Seconds <= 0 {
		b.Fatalf("send summary: %v: %s", err, s.stdout.String())
	}
	os.Remove(out)
	return time.Duration(sum.Seconds * float64(time.Second))
}
