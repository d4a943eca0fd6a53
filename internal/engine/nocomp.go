package engine

import (
	"errors"
	"fmt"

	"github.com/pagewire/pagewire/sdk"
)

// Methods looks up the method a sender names (core.Registry is one).
type Methods interface {
	Lookup(name string) (sdk.Method, error)
	Names() []string
}

// Nocomp is the method that sends pages as they are, QEMU's "none". It
// needs no codec, so the engine always has it: it is a [SenderConfig]'s
// default method, and a receiver without a registry accepts it.
func Nocomp() sdk.Method { return nocomp{} }

// nocomp is a raw method: the engine moves its pages itself and never
// calls its Sender or Receiver.
type nocomp struct{}

func (nocomp) Info() sdk.Info { return sdk.Info{Name: "nocomp", Flag: 0, Raw: true} }

func (nocomp) NewSender(int, sdk.Options) (sdk.Sender, error) { return rawCodec{}, nil }

func (nocomp) NewReceiver(int, sdk.Options) (sdk.Receiver, error) { return rawCodec{}, nil }

type rawCodec struct{}

func (rawCodec) Prepare(*sdk.Packet, []byte) ([]byte, error) {
	return nil, errors.New("nocomp: the engine writes raw pages itself")
}

func (rawCodec) Recv(*sdk.Packet, []byte) error {
	return errors.New("nocomp: the engine reads raw pages itself")
}

func (rawCodec) Close() error { return nil }

// onlyNocomp is a receiver's methods when it is given none.
type onlyNocomp struct{}

func (onlyNocomp) Lookup(name string) (sdk.Method, error) {
	if name == "nocomp" || name == "none" {
		return Nocomp(), nil
	}
	return nil, fmt.Errorf("unknown method %q (have nocomp)", name)
}

func (onlyNocomp) Names() []string { return []string{"nocomp"} }
