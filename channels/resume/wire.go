package resume

import (
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	magic     = "PWRESUM1"
	helloSize = 40
	frameHdr  = 16
	maxFrame  = 64 << 10 // a data frame's payload

	kindNew    = 1
	kindResume = 2

	frameData = 1
	frameAck  = 2
	frameFin  = 3
	frameBye  = 4 // the writer's session is over: it closes the connection

	flagGotFin = 1
)

// Listener statuses.
const (
	statusOK = iota
	statusUnknown
	statusPeer
	statusClosed
	statusBadHello
	statusPast
)

var statusText = [...]string{
	statusOK:       "accepted",
	statusUnknown:  "no such session (it ended, or the listening end restarted)",
	statusPeer:     "the returning connection's certificate is not the session's",
	statusClosed:   "the listener takes no new sessions",
	statusBadHello: "bad hello",
	statusPast:     "the dialer claims bytes the listener never sent",
}

// hello is the dialer's first message and the listener's answer (kind
// holds the status there).
type hello struct {
	kind  byte
	token [16]byte
	recvd uint64
}

func (h hello) marshal() []byte {
	b := make([]byte, helloSize)
	copy(b, magic)
	b[8] = h.kind
	copy(b[16:32], h.token[:])
	binary.BigEndian.PutUint64(b[32:], h.recvd)
	return b
}

// errNotResume is parseHello's error for bytes that do not open with the
// magic: a peer that does not resume.
var errNotResume = errors.New("not a resuming peer")

func parseHello(b []byte) (hello, error) {
	if len(b) < helloSize {
		return hello{}, fmt.Errorf("hello of %d bytes, want %d", len(b), helloSize)
	}
	if string(b[:8]) != magic {
		return hello{}, errNotResume
	}
	for _, z := range b[9:16] {
		if z != 0 {
			return hello{}, fmt.Errorf("hello: reserved bytes % x", b[9:16])
		}
	}
	h := hello{kind: b[8], recvd: binary.BigEndian.Uint64(b[32:])}
	copy(h.token[:], b[16:32])
	return h, nil
}

// frame is a frame's header.
type frame struct {
	typ   byte
	flags byte
	n     uint32 // payload bytes
	ack   uint64 // bytes the writer has received
}

func (f frame) put(b []byte) {
	b[0], b[1], b[2], b[3] = f.typ, f.flags, 0, 0
	binary.BigEndian.PutUint32(b[4:], f.n)
	binary.BigEndian.PutUint64(b[8:], f.ack)
}

// parseFrame checks a header from the peer.
func parseFrame(b []byte) (frame, error) {
	f := frame{typ: b[0], flags: b[1], n: binary.BigEndian.Uint32(b[4:]), ack: binary.BigEndian.Uint64(b[8:])}
	switch {
	case b[2] != 0 || b[3] != 0 || f.flags&^flagGotFin != 0:
		return f, fmt.Errorf("frame header % x: reserved bits set", b[:4])
	case f.typ < frameData || f.typ > frameBye:
		return f, fmt.Errorf("frame type %d", f.typ)
	case f.typ == frameData && (f.n == 0 || f.n > maxFrame):
		return f, fmt.Errorf("data frame of %d bytes (1..%d)", f.n, maxFrame)
	case f.typ != frameData && f.n != 0:
		return f, fmt.Errorf("frame type %d with %d bytes of payload", f.typ, f.n)
	}
	return f, nil
}
