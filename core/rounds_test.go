package core_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/core"
)

// jitterListener delays every read of every accepted connection by a
// random few hundred microseconds, so that channels overtake each other
// unless the engine's SYNC barrier keeps them in order.
type jitterListener struct{ net.Listener }

func (l jitterListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &jitterConn{Conn: c, r: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))}, nil
}

type jitterConn struct {
	net.Conn
	r *rand.Rand
}

func (c *jitterConn) Read(p []byte) (int, error) {
	time.Sleep(time.Duration(c.r.IntN(400)) * time.Microsecond)
	return c.Conn.Read(p)
}

// TestRoundsSamePagesDifferentChannels rewrites the same pages in every
// round and sends them again after a Sync; the pages must travel on
// different channels from round to round, and the receiver must end with
// the last round's content.
func TestRoundsSamePagesDifferentChannels(t *testing.T) {
	for _, d := range []core.Dialect{core.Dialect10, core.Dialect72} {
		t.Run(string(d), func(t *testing.T) { testRounds(t, d) })
	}
}

// testRounds: in the 7.2 dialect the pages that became zero travel on the
// control channel, and the syncs must order them against the channels.
func testRounds(t *testing.T, dialect core.Dialect) {
	const (
		ps     = 4096
		pages  = 1024
		hot    = 300 // pages rewritten every round
		rounds = 8
		chans  = 4
	)
	img := make([]byte, pages*ps)
	hotOffs := make([]uint64, hot)
	for i := range hotOffs {
		hotOffs[i] = uint64((i*3 + 1) % pages * ps)
	}
	stamp := func(round int) {
		for i, off := range hotOffs {
			pg := img[off : off+ps]
			if (i+round)%5 == 0 {
				clear(pg) // sometimes a zero page, sent as an offset only
				continue
			}
			for j := 0; j < ps; j += 8 {
				binary.LittleEndian.PutUint64(pg[j:], uint64(round)<<32|uint64(i)<<8|uint64(j))
			}
		}
	}

	var mu sync.Mutex
	carried := make(map[uint64]map[int]bool) // offset -> channels that carried it
	defer core.SetSentHook(func(ch int, offs []uint64) {
		mu.Lock()
		defer mu.Unlock()
		for _, o := range offs {
			if carried[o] == nil {
				carried[o] = make(map[int]bool)
			}
			carried[o][ch] = true
		}
	})()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ln, d := tcpTransport(t)
	rc := receive(ctx, jitterListener{ln}, core.ReceiverConfig{})
	s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: img}}, core.SenderConfig{Channels: chans, Dialect: dialect})
	if err != nil {
		t.Fatal(err)
	}
	stamp(0)
	if err := s.SendBlock("pc.ram"); err != nil {
		t.Fatal(err)
	}
	for r := 1; r <= rounds; r++ {
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		stamp(r)
		if err := s.SendPages("pc.ram", hotOffs); err != nil {
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
	if got := blockData(t, res.mem, "pc.ram"); !bytes.Equal(got, img) {
		for _, off := range hotOffs {
			if !bytes.Equal(got[off:off+ps], img[off:off+ps]) {
				t.Fatalf("page %#x holds an older round's content", off)
			}
		}
		t.Fatal("received image differs")
	}
	if st.Syncs != uint64(chans*(rounds+1)) {
		t.Errorf("%d SYNC packets, want %d", st.Syncs, chans*(rounds+1))
	}
	moved := 0
	for _, off := range hotOffs {
		if len(carried[off]) > 1 {
			moved++
		}
	}
	if moved < hot*9/10 {
		t.Errorf("only %d of %d rewritten pages travelled on more than one channel", moved, hot)
	}
}

var _ channels.Dialer = channels.NewPipe()
