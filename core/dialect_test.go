package core_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/internal/corpus"
)

// TestDialectsRoundTrip sends the zero-page-heavy corpus images in both
// dialects: the same image arrives, and the 10.0 dialect, which carries
// zero pages as offsets in packets, puts far fewer bytes on the control
// (main) channel than 7.2, which sends them there as records.
func TestDialectsRoundTrip(t *testing.T) {
	images, err := corpus.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range images {
		img, err := im.Load()
		if err != nil {
			t.Fatal(err)
		}
		ctl := map[core.Dialect]uint64{}
		for _, d := range []core.Dialect{core.Dialect10, core.Dialect72} {
			t.Run(fmt.Sprintf("%s/%s", im.Name, d), func(t *testing.T) {
				st, res := transfer(t, transports[0], img, core.SenderConfig{Channels: 4, Dialect: d})
				if res.err != nil {
					t.Fatal(res.err)
				}
				if !bytes.Equal(blockData(t, res.mem, "pc.ram"), img) {
					t.Fatal("received image differs")
				}
				if st.Dialect != string(d) || res.stats.Dialect != string(d) {
					t.Errorf("dialect %q / %q, want %q", st.Dialect, res.stats.Dialect, d)
				}
				if st.ZeroPages != uint64(im.ZeroPages) || res.stats.ZeroPages != uint64(im.ZeroPages) {
					t.Errorf("zero pages: sent %d, received %d, manifest %d", st.ZeroPages, res.stats.ZeroPages, im.ZeroPages)
				}
				if st.ControlBytes != res.stats.ControlBytes {
					t.Errorf("control bytes: sent %d, received %d", st.ControlBytes, res.stats.ControlBytes)
				}
				ctl[d] = st.ControlBytes
				t.Logf("%s dialect %s: %d bytes on the control channel, %d on the multifd channels", im.Name, d, st.ControlBytes, st.WireBytes)
			})
		}
		if ctl[core.Dialect72] < 8*uint64(im.ZeroPages) || ctl[core.Dialect10]*100 > ctl[core.Dialect72] {
			t.Errorf("%s: control bytes 10.0 %d, 7.2 %d", im.Name, ctl[core.Dialect10], ctl[core.Dialect72])
		}
	}
}

// TestDeviceState: blobs from 0 bytes to 16 MiB, interleaved with RAM on
// 4 channels, arrive intact, and RAM keeps flowing around them.
func TestDeviceState(t *testing.T) {
	sizes := []int{0, 1, 4095, 4096, 65539, 1 << 20, 16 << 20, 0, 7}
	ram := make([]byte, 32<<20)
	for i := range ram {
		ram[i] = byte(i>>12) | 1
	}
	blobs := make([][]byte, len(sizes))
	want := map[string][32]byte{}
	for i, n := range sizes {
		blobs[i] = make([]byte, n)
		for j := range blobs[i] {
			blobs[i][j] = byte(j*31 + i)
		}
		want[fmt.Sprintf("dev%d/%d", i, i*10)] = sha256.Sum256(blobs[i])
	}
	var mu sync.Mutex
	got := map[string][32]byte{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ln, d := tcpTransport(t)
	rc := receive(ctx, ln, core.ReceiverConfig{OnDeviceState: func(idstr string, instance uint32, blob []byte) error {
		mu.Lock()
		defer mu.Unlock()
		got[fmt.Sprintf("%s/%d", idstr, instance)] = sha256.Sum256(blob)
		return nil
	}})
	s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: ram}}, core.SenderConfig{Channels: 4})
	if err != nil {
		t.Fatal(err)
	}
	part := uint64(len(ram) / len(sizes))
	part -= part % 4096
	for i := range sizes {
		if err := s.SendRange("pc.ram", uint64(i)*part, part); err != nil {
			t.Fatal(err)
		}
		if err := s.SendDeviceState(fmt.Sprintf("dev%d", i), uint32(i*10), blobs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if rest := uint64(len(sizes)) * part; rest < uint64(len(ram)) {
		if err := s.SendRange("pc.ram", rest, uint64(len(ram))-rest); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.Close()
	if err != nil {
		t.Fatal(err)
	}
	res := wait(t, rc)
	if res.err != nil {
		t.Fatal(res.err)
	}
	if !bytes.Equal(blockData(t, res.mem, "pc.ram"), ram) {
		t.Error("RAM differs")
	}
	for k, h := range want {
		if got[k] != h {
			t.Errorf("blob %s: missing or different", k)
		}
	}
	if len(got) != len(want) || res.stats.DeviceStates != uint64(len(sizes)) {
		t.Errorf("%d blobs arrived (stats %d), want %d", len(got), res.stats.DeviceStates, len(sizes))
	}
	used := 0
	for _, c := range st.Channels {
		if c.DeviceStates > 0 {
			used++
		}
	}
	if used < 2 {
		t.Errorf("device state travelled on %d channel(s), want it spread", used)
	}
}
