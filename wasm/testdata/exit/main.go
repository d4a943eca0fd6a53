//go:build wasip1

// A plugin that exits the instance in the middle of recv.
package main

import (
	"os"

	"github.com/pagewire/pagewire/plugins/nocomp"
	"github.com/pagewire/pagewire/sdk"
	"github.com/pagewire/pagewire/sdk/wasmguest"
)

type exiter struct{ sdk.Method }

func (exiter) Info() sdk.Info { return sdk.Info{Name: "exiter", Flag: 0x32} }

func (e exiter) NewReceiver(ch int, o sdk.Options) (sdk.Receiver, error) { return quit{}, nil }

type quit struct{ sdk.Receiver }

func (quit) Recv(*sdk.Packet, []byte) error { os.Exit(7); return nil }

func (quit) Close() error { return nil }

func init() { wasmguest.Serve(exiter{nocomp.New()}) }

func main() {}
