//go:build wasip1

// A plugin whose prepare never returns: the host's per-call deadline must
// stop it.
package main

import (
	"github.com/pagewire/pagewire/plugins/nocomp"
	"github.com/pagewire/pagewire/sdk"
	"github.com/pagewire/pagewire/sdk/wasmguest"
)

type loop struct{ sdk.Method }

func (loop) Info() sdk.Info { return sdk.Info{Name: "loop", Flag: 0x30} }

func (loop) NewSender(int, sdk.Options) (sdk.Sender, error) { return spin{}, nil }

type spin struct{ sdk.Sender }

var sink int

func (spin) Prepare(p *sdk.Packet, dst []byte) ([]byte, error) {
	println("loop: prepare never returns") // (tests wait for this line in the host's log)
	for i := 0; ; i++ {
		sink += i
	}
}

func (spin) Close() error { return nil }

func init() { wasmguest.Serve(loop{nocomp.New()}) }

func main() {}
