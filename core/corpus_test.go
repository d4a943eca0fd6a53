package core_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/internal/corpus"
)

// TestCorpusRoundTrip sends every real guest image over tcp and unix with
// 1, 4 and 8 channels; the received image must be byte-identical and the
// zero pages those of the manifest.
func TestCorpusRoundTrip(t *testing.T) {
	images, err := corpus.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range images {
		img, err := im.Load()
		if err != nil {
			t.Fatal(err)
		}
		for _, tr := range transports[:2] {
			for _, n := range []int{1, 4, 8} {
				t.Run(fmt.Sprintf("%s/%s/%d", im.Name, tr.name, n), func(t *testing.T) {
					st, res := transfer(t, tr, img, core.SenderConfig{Channels: n})
					if res.err != nil {
						t.Fatal(res.err)
					}
					if got := blockData(t, res.mem, "pc.ram"); !bytes.Equal(got, img) {
						t.Fatal("received image differs from the sent one")
					}
					if st.ZeroPages != uint64(im.ZeroPages) || st.NormalPages+st.ZeroPages != uint64(im.Pages) {
						t.Errorf("sent %d pages, %d zero; manifest says %d, %d zero", st.NormalPages+st.ZeroPages, st.ZeroPages, im.Pages, im.ZeroPages)
					}
					// Zero pages cost nothing but their offset in a header.
					want := uint64(im.Pages-im.ZeroPages)*4096 + (st.Packets+st.Syncs)*1344
					if st.WireBytes != want || st.Packets != uint64(im.Pages+127)/128 {
						t.Errorf("%d bytes in %d packets on the wire, want %d in %d", st.WireBytes, st.Packets, want, (im.Pages+127)/128)
					}
				})
			}
		}
	}
}
