// Package nocomp is the "none" method of QEMU's multifd: the payload of a
// packet is its normal pages, back to back. It reports [sdk.Info.Raw], so
// the engine moves the pages itself with vectored I/O; Prepare and Recv
// exist for hosts that cannot (a Wasm or out-of-process plugin) and for
// the conformance kit.
package nocomp

import (
	"fmt"

	"github.com/pagewire/pagewire/sdk"
)

// Method is the nocomp method. Its zero value is ready to use.
type Method struct{}

// New returns the nocomp method.
func New() sdk.Method { return Method{} }

// Info implements [sdk.Method].
func (Method) Info() sdk.Info { return sdk.Info{Name: "nocomp", Flag: 0, Raw: true} }

// NewSender implements [sdk.Method].
func (Method) NewSender(int, sdk.Options) (sdk.Sender, error) { return codec{}, nil }

// NewReceiver implements [sdk.Method].
func (Method) NewReceiver(int, sdk.Options) (sdk.Receiver, error) { return codec{}, nil }

type codec struct{}

func (codec) Prepare(p *sdk.Packet, dst []byte) ([]byte, error) {
	for _, pg := range p.Pages {
		dst = append(dst, pg...)
	}
	return dst, nil
}

func (codec) Recv(p *sdk.Packet, payload []byte) error {
	n := 0
	for _, pg := range p.Pages {
		n += len(pg)
	}
	if len(payload) != n {
		return fmt.Errorf("%w: %d bytes for %d pages (%d bytes)", sdk.ErrCorrupt, len(payload), len(p.Pages), n)
	}
	for _, pg := range p.Pages {
		payload = payload[copy(pg, payload):]
	}
	return nil
}

func (codec) Close() error { return nil }
