package goplugin

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"
	"golang.org/x/sys/unix"

	"github.com/pagewire/pagewire/sdk"
	sdkgp "github.com/pagewire/pagewire/sdk/goplugin"
)

// TestPlaneHostile: the host checks every answer that comes off a
// channel's data plane; the test plays a lying plugin on the socket.
func TestPlaneHostile(t *testing.T) {
	resp := func(code uint32, n uint64, text string) []byte {
		b := make([]byte, sdkgp.PlaneResponseSize, sdkgp.PlaneResponseSize+len(text))
		binary.LittleEndian.PutUint32(b, code)
		binary.LittleEndian.PutUint64(b[8:], n)
		return append(b, text...)
	}
	max := sdk.MaxPayload(128, 4096)
	cases := []struct {
		name   string
		answer []byte // nil: hang up; empty: no answer
		want   error
		text   string
		dead   bool
	}{
		{"payload too long", resp(0, uint64(max)+1, ""), ErrPlugin, "at most", false},
		{"huge length", resp(0, 1<<63, ""), ErrPlugin, "at most", false},
		{"short response", []byte{1, 2, 3}, ErrPlugin, "response of 3 bytes", true},
		{"unknown code", resp(9, 0, ""), ErrPlugin, "response code 9", true},
		{"corrupt", resp(sdkgp.PlaneCorrupt, 0, "bad frame"), sdk.ErrCorrupt, "liar, channel 2: bad frame", false},
		{"failed", resp(sdkgp.PlaneFailed, 0, "out of luck"), ErrPlugin, "prepare: out of luck", false},
		{"no answer", []byte{}, ErrPlugin, "no answer within 200ms", true},
		{"hang up", nil, ErrPlugin, "connection to the plugin lost", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reg, err := newRegion(sdkgp.PlaneHalf(128, 4096))
			if err != nil {
				t.Fatal(err)
			}
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			peer := sdkgp.UnixConn(fds[1])
			defer peer.Close()
			m := &Method{name: "liar", cfg: Config{CallTimeout: 200 * time.Millisecond}, client: plugin.NewClient(&plugin.ClientConfig{})}
			c := &channel{m: m, ch: 2, max: max, dp: &dataPlane{reg: reg, conn: sdkgp.UnixConn(fds[0])}}
			defer c.dp.close()
			done := make(chan struct{})
			go func() {
				defer close(done)
				req := make([]byte, 64)
				if _, err := peer.Read(req); err != nil {
					return
				}
				switch {
				case tc.answer == nil:
					peer.Close()
				case len(tc.answer) > 0:
					peer.Write(tc.answer)
				}
			}()
			page := make([]byte, 4096)
			out, err := (*sender)(c).Prepare(&sdk.Packet{Seq: 7, Pages: [][]byte{page}}, nil)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) || len(out) != 0 {
				t.Fatalf("got %d bytes, %v; want %v with %q", len(out), err, tc.want, tc.text)
			}
			if (c.dead != nil) != tc.dead {
				t.Errorf("channel dead: %v, want %v", c.dead, tc.dead)
			}
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("the fake plugin did not finish")
			}
		})
	}
}
