package sdk_test

import (
	"errors"
	"fmt"

	"github.com/pagewire/pagewire/sdk"
)

// xor is a toy method: a packet's payload is its pages, back to back,
// each byte XORed with a key. A real method keeps a compression stream in
// its per-channel Sender and Receiver.
type xor struct{ key byte }

func (x xor) Info() sdk.Info { return sdk.Info{Name: "xor", Flag: 0x3e} }

func (x xor) NewSender(ch int, o sdk.Options) (sdk.Sender, error) { return xorCodec(x), nil }

func (x xor) NewReceiver(ch int, o sdk.Options) (sdk.Receiver, error) { return xorCodec(x), nil }

type xorCodec struct{ key byte }

// Prepare appends the payload to dst; it must not keep p's pages.
func (c xorCodec) Prepare(p *sdk.Packet, dst []byte) ([]byte, error) {
	for _, pg := range p.Pages {
		for _, b := range pg {
			dst = append(dst, b^c.key)
		}
	}
	return dst, nil
}

// Recv fills every page of p completely, or fails with sdk.ErrCorrupt.
func (c xorCodec) Recv(p *sdk.Packet, payload []byte) error {
	n := 0
	for _, pg := range p.Pages {
		n += len(pg)
	}
	if len(payload) != n {
		return fmt.Errorf("%w: packet %d: %d bytes for %d pages", sdk.ErrCorrupt, p.Seq, len(payload), len(p.Pages))
	}
	for _, pg := range p.Pages {
		for i := range pg {
			pg[i] = payload[i] ^ c.key
		}
		payload = payload[len(pg):]
	}
	return nil
}

func (xorCodec) Close() error { return nil }

// ExampleMethod drives a method the way the engine does, one channel on
// each side: Prepare on the sending channel, Recv on the receiving one.
func ExampleMethod() {
	var m sdk.Method = xor{key: 0x20}
	if err := m.Info().Check(); err != nil {
		fmt.Println(err)
		return
	}
	o := sdk.Options{PageSize: 8, PacketPages: 2} // tiny pages, to print them

	snd, err := m.NewSender(0, o)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer snd.Close()
	out := &sdk.Packet{Seq: 1, Pages: [][]byte{[]byte("pagewire"), []byte("MULTIFD!")}}
	payload, err := snd.Prepare(out, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("payload: %q\n", payload)

	rcv, err := m.NewReceiver(0, o)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rcv.Close()
	in := &sdk.Packet{Seq: 1, Pages: [][]byte{make([]byte, 8), make([]byte, 8)}}
	if err := rcv.Recv(in, payload); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("pages: %s %s\n", in.Pages[0], in.Pages[1])

	err = rcv.Recv(in, payload[:5])
	fmt.Println(errors.Is(err, sdk.ErrCorrupt), err)
	// Output:
	// payload: "PAGEWIREmultifd\x01"
	// pages: pagewire MULTIFD!
	// true corrupt payload: packet 1: 5 bytes for 2 pages
}
