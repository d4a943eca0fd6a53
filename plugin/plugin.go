// Package plugin opens a method from a file: a WebAssembly module, run
// sandboxed in process by package wasm, or a go-plugin executable, run
// as a child process by package goplugin. [Open] tells the two apart by
// the file's name and first bytes, so a program (the pagewire command,
// or a VMM embedding pagewire) takes one path from its user and gets an
// [sdk.Method] for a [core.Sender] or [core.Receiver].
//
// A Plugin holds a Wasm runtime or a process until [Plugin.Close], which
// the caller must call once no transfer uses the method any more.
package plugin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/pagewire/pagewire/goplugin"
	"github.com/pagewire/pagewire/sdk"
	"github.com/pagewire/pagewire/wasm"
)

// Kind is how a plugin file runs.
type Kind string

const (
	Wasm     Kind = "wasm"      // a WebAssembly module (package wasm)
	GoPlugin Kind = "go-plugin" // a go-plugin executable (package goplugin)
)

// ErrChecksum reports a plugin file whose sha256 is not the pinned one.
// It is [goplugin.ErrChecksum], so either test matches.
var ErrChecksum = goplugin.ErrChecksum

// wasmMagic opens every WebAssembly module.
const wasmMagic = "\x00asm"

// Detect says how the file at path runs: as a Wasm module when its name
// ends in .wasm or it starts with the Wasm magic, otherwise as a
// go-plugin executable. A directory or a file that cannot be read is an
// error.
func Detect(path string) (Kind, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	} else if fi.IsDir() {
		return "", fmt.Errorf("plugin %s is a directory, not a Wasm module or a go-plugin executable", path)
	}
	if strings.HasSuffix(path, ".wasm") {
		return Wasm, nil
	}
	var magic [4]byte
	n, _ := io.ReadFull(f, magic[:])
	if n == 4 && string(magic[:]) == wasmMagic {
		return Wasm, nil
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("plugin %s is neither a Wasm module (it does not start with \\0asm) nor an executable", path)
	}
	return GoPlugin, nil
}

// Config says how to open a plugin. The zero value is usable.
type Config struct {
	// SHA256, when set, pins the file: Open refuses one whose sha256
	// differs, with [ErrChecksum]. A Wasm module is hashed and compiled
	// from the same bytes; a go-plugin executable as package goplugin
	// pins it.
	SHA256 []byte
	// Wasm configures a Wasm module's sandbox: memory cap, call
	// deadline, tier (see [wasm.Config]).
	Wasm wasm.Config
	// GoPlugin configures a go-plugin process (see [goplugin.Config]);
	// its SHA256 is set from SHA256 above.
	GoPlugin goplugin.Config
}

// ParseSHA256 parses a pin written in hex, for [Config].SHA256.
func ParseSHA256(s string) ([]byte, error) {
	sum, err := hex.DecodeString(s)
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("sha256 %q: want %d hex digits", s, 2*sha256.Size)
	}
	return sum, nil
}

// Plugin is an opened plugin: its method, with the runtime or process
// that serves it.
type Plugin struct {
	// Method is what to give the engine: the host's own type
	// (*wasm.Module, *goplugin.Method), so that the engine finds its
	// optional interfaces (core.MemorySharer, in-place payloads).
	Method sdk.Method
	// Kind is how it runs.
	Kind Kind
	// Path is the file it was opened from.
	Path  string
	close func() error
}

// Open opens the plugin at path (see [Detect]) as cfg says.
func Open(ctx context.Context, path string, cfg Config) (*Plugin, error) {
	kind, err := Detect(path)
	if err != nil {
		return nil, err
	}
	p := &Plugin{Kind: kind, Path: path}
	switch kind {
	case Wasm:
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		if err := checkSum(b, cfg.SHA256, path); err != nil {
			return nil, err
		}
		m, err := wasm.LoadBytes(ctx, filepath.Base(path), b, cfg.Wasm)
		if err != nil {
			return nil, err
		}
		p.Method, p.close = m, func() error { return m.Close(context.Background()) }
	default:
		gcfg := cfg.GoPlugin
		if cfg.SHA256 != nil {
			gcfg.SHA256 = cfg.SHA256
		}
		m, err := goplugin.Load(path, gcfg)
		if err != nil {
			return nil, err
		}
		p.Method, p.close = m, m.Close
	}
	return p, nil
}

func checkSum(b, want []byte, path string) error {
	if want == nil {
		return nil
	}
	if len(want) != sha256.Size {
		return fmt.Errorf("plugin %s: a sha256 pin is %d bytes, not %d", path, sha256.Size, len(want))
	}
	if got := sha256.Sum256(b); !bytes.Equal(got[:], want) {
		return fmt.Errorf("%w: %s has sha256 %x, pinned %x", ErrChecksum, path, got, want)
	}
	return nil
}

// Close releases the plugin's runtime or process; later calls do
// nothing. Transfers using the method must have ended.
func (p *Plugin) Close() error {
	if p.close == nil {
		return nil
	}
	err := p.close()
	p.close = nil
	return err
}
