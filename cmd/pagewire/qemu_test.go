package main_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/pagegen"
	iqmp "github.com/pagewire/pagewire/internal/qmp"
)

// qmp is a minimal QMP client for driving a QEMU the test started. It
// keeps the events it reads past.
type qmp struct {
	mu     sync.Mutex // do and event may be called from two goroutines
	c      net.Conn
	r      *bufio.Reader
	events []iqmp.Event
}

// event returns the first (or the last) event read so far for which
// match is true.
func (q *qmp) event(last bool, match func(iqmp.Event) bool) (iqmp.Event, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var found iqmp.Event
	ok := false
	for _, e := range q.events {
		if match(e) {
			found, ok = e, true
			if !last {
				break
			}
		}
	}
	return found, ok
}

func dialQMP(t testing.TB, sock string) *qmp {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			q := &qmp{c: c, r: bufio.NewReader(c)}
			c.SetDeadline(time.Now().Add(time.Minute))
			if _, err := q.r.ReadBytes('\n'); err != nil { // greeting
				t.Fatal(err)
			}
			q.do(t, "qmp_capabilities", nil)
			return q
		}
		if time.Now().After(deadline) {
			t.Fatalf("QMP socket: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// do runs a command and returns its "return" value; events are kept.
func (q *qmp) do(t testing.TB, cmd string, args any) json.RawMessage {
	t.Helper()
	q.mu.Lock()
	defer q.mu.Unlock()
	msg := map[string]any{"execute": cmd}
	if args != nil {
		msg["arguments"] = args
	}
	b, _ := json.Marshal(msg)
	// A QEMU in its last round holds its monitor until the stream is
	// through: long, on a link in a 60 s black hole.
	q.c.SetDeadline(time.Now().Add(3 * time.Minute))
	if _, err := q.c.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			t.Fatalf("QMP %s: %v", cmd, err)
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Desc string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			t.Fatalf("QMP %s: %v: %s", cmd, err, line)
		}
		if resp.Event != "" {
			var e iqmp.Event
			if json.Unmarshal(line, &e) == nil {
				q.events = append(q.events, e)
			}
			continue
		}
		if resp.Error != nil {
			t.Fatalf("QMP %s: %s", cmd, resp.Error.Desc)
		}
		return resp.Return
	}
}

// TestQEMUSource migrates a real, paused QEMU 7.2 (TCG) whose RAM is a
// file the test filled with a known mix of pages into 'pagewire qemu
// recv', with 2 and 4 channels and compression none, zlib and zstd: the
// received pc.ram is byte-identical to the source's RAM file.
func TestQEMUSource(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatal("qemu-system-x86_64 not found: 'make test' installs Debian's qemu-system-x86 (scripts/setup.sh)")
	}
	const ram = 64 << 20
	for _, n := range []int{2, 4} {
		for _, method := range []string{"none", "zlib", "zstd"} {
			t.Run(fmt.Sprintf("%s/%d", method, n), func(t *testing.T) {
				dir := t.TempDir()
				ramFile := filepath.Join(dir, "guest-ram.img")
				img := make([]byte, ram)
				pagegen.Fill(img, 4096, pagegen.DefaultMix, uint64(n*7+len(method)))
				if err := os.WriteFile(ramFile, img, 0o644); err != nil {
					t.Fatal(err)
				}
				out := filepath.Join(dir, "out")
				r, addr := startRecv(t, "qemu", "recv", "--listen", "tcp:127.0.0.1:0", "--out", out, "--channels", fmt.Sprint(n), "--method", method, "--json")
				sock := filepath.Join(dir, "qmp.sock")
				src := start(t, "--qemu--", qemu,
					"-machine", "pc-i440fx-7.2,memory-backend=pc.ram", "-accel", "tcg", "-m", "64M",
					"-object", "memory-backend-file,id=pc.ram,size=64M,mem-path="+ramFile+",share=on",
					"-nodefaults", "-vga", "none", "-display", "none", "-S",
					"-qmp", "unix:"+sock+",server=on,wait=off")
				q := dialQMP(t, sock)
				defer q.c.Close()
				q.do(t, "migrate-set-capabilities", map[string]any{"capabilities": []any{map[string]any{"capability": "multifd", "state": true}}})
				q.do(t, "migrate-set-parameters", map[string]any{"multifd-channels": n, "multifd-compression": method})
				q.do(t, "migrate", map[string]any{"uri": addr})
				deadline := time.Now().Add(90 * time.Second)
				for {
					var st struct {
						Status string `json:"status"`
						Error  string `json:"error-desc"`
					}
					json.Unmarshal(q.do(t, "query-migrate", nil), &st)
					if st.Status == "completed" {
						break
					}
					if st.Status == "failed" || st.Status == "cancelled" {
						t.Fatalf("source migration %s: %s; receiver: %s", st.Status, st.Error, r.stderr)
					}
					if time.Now().After(deadline) {
						t.Fatalf("source migration still %q after 90s", st.Status)
					}
					time.Sleep(100 * time.Millisecond)
				}
				if code := r.wait(t); code != 0 {
					t.Fatalf("qemu recv exited %d: %s", code, r.stderr)
				}
				q.do(t, "quit", nil)
				src.wait(t)
				want, err := os.ReadFile(ramFile)
				if err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(filepath.Join(out, "pc.ram.raw"))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("received pc.ram differs from the source's RAM file")
				}
				if !bytes.Equal(want, img) {
					t.Logf("note: QEMU changed its RAM file before migrating")
				}
				var sum struct {
					NormalPages   uint64 `json:"normal_pages"`
					ZeroPages     uint64 `json:"zero_pages"`
					MainZeroPages uint64 `json:"main_zero_pages"`
					Machine       string `json:"machine"`
					Channels      []any  `json:"channels"`
				}
				if err := json.Unmarshal(r.stdout.Bytes(), &sum); err != nil {
					t.Fatalf("summary: %v: %s", err, r.stdout.String())
				}
				if sum.Machine != "pc-i440fx-7.2" || len(sum.Channels) != n || sum.MainZeroPages == 0 {
					t.Errorf("summary %+v", sum)
				}
				if _, err := os.Stat(filepath.Join(out, "main.stream")); err != nil {
					t.Error(err)
				}
			})
		}
	}
}
