package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pagewire/pagewire/internal/qemuvectors"
)

// TestQEMURecvReplay replays every captured QEMU 10.0 migration, and the
// 7.2 ones, over loopback into the 'pagewire qemu recv' command: pc.ram.raw
// matches the source's final RAM page by page, and the summary names the
// dialect the stream spoke and the method (told for 7.2, detected from
// the packets for 10.0).
func TestQEMURecvReplay(t *testing.T) {
	for _, set := range []struct {
		env, name, dialect string
		tell               bool // --method, or the default auto
	}{
		{"PAGEWIRE_QEMU10_VECTORS", "qemu-10.0", "10.0", false},
		{"PAGEWIRE_QEMU_VECTORS", "qemu-7.2", "7.2", true},
	} {
		cases := qemuvectors.Cases(t, set.env, set.name)
		for _, c := range cases {
			t.Run(set.name+"/"+c.Name, func(t *testing.T) {
				streams, err := c.LoadAll()
				if err != nil {
					t.Fatal(err)
				}
				out := filepath.Join(t.TempDir(), "out")
				args := []string{"qemu", "recv", "--listen", "tcp:127.0.0.1:0", "--out", out, "--channels", fmt.Sprint(c.Channels), "--json"}
				if set.tell {
					args = append(args, "--method", c.Method)
				} // otherwise the first packet with pages tells
				r, addr := startRecv(t, args...)
				if err := qemuvectors.Replay(strings.TrimPrefix(addr, "tcp:"), streams); err != nil {
					t.Error(err)
				}
				if code := r.wait(t); code != 0 {
					t.Fatalf("qemu recv exited %d: %s", code, r.stderr)
				}
				ram, err := os.ReadFile(filepath.Join(out, "pc.ram.raw"))
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Check(ram); err != nil {
					t.Fatal(err)
				}
				var sum struct {
					Dialect string `json:"dialect"`
					Method  string `json:"method"`
				}
				if err := json.Unmarshal(r.stdout.Bytes(), &sum); err != nil || sum.Dialect != set.dialect {
					t.Errorf("summary dialect %q (%v), want %q", sum.Dialect, err, set.dialect)
				}
				if want := strings.Replace(c.Method, "none", "nocomp", 1); sum.Method != want {
					t.Errorf("summary method %q, want %q", sum.Method, want)
				}
			})
		}
	}
}
