package wasm_test

import "github.com/pagewire/pagewire/channels"

func channelsPipe() *channels.Pipe { return channels.NewPipe() }
