package wasm_test

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/pagewire/pagewire/sdk"
	"github.com/pagewire/pagewire/wasm"
)

// rss is the process's resident memory in bytes.
func rss(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestMemoryNearCap: instances whose modules grow their memory to about
// 200 MiB each hold about that much resident, not twice it (the memory
// grows in place instead of being copied), and modules that use little
// cost little.
func TestMemoryNearCap(t *testing.T) {
	const n, each = 4, 200 << 20
	m := load(t, "hog", wasm.Config{})
	before := rss(t)
	var ss []sdk.Sender
	for ch := range n {
		s, err := m.NewSender(ch, sdk.Options{PageSize: 4096, PacketPages: 128})
		if err != nil {
			t.Fatal(err)
		}
		ss = append(ss, s)
	}
	grew := rss(t) - before
	for _, s := range ss {
		s.Close()
	}
	if limit := int64(n*each) * 5 / 4; grew > limit {
		t.Errorf("%d instances of %d MiB made the process grow by %d MiB, more than %d MiB", n, each>>20, grew>>20, limit>>20)
	}
	t.Logf("%d instances of %d MiB: +%d MiB resident", n, each>>20, grew>>20)
}
