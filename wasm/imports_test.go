package wasm

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// a module importing wasi_snapshot_preview1.fd_write (function), env.mem
// (memory 1..2), pagewire.check (function) and env.g (global i32).
var testImports = []byte("\x00asm\x01\x00\x00\x00" +
	"\x01\x04\x01\x60\x00\x00" + // type section: () -> ()
	"\x02\x49\x04" +
	"\x16wasi_snapshot_preview1\x08fd_write\x00\x00" +
	"\x03env\x03mem\x02\x01\x01\x02" +
	"\x08pagewire\x05check\x00\x00" +
	"\x03env\x01g\x03\x7f\x00")

func TestImportModules(t *testing.T) {
	got, err := importModules(testImports)
	if want := []string{"wasi_snapshot_preview1.fd_write", "env.mem", "pagewire.check", "env.g"}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("%q, %v; want %q", got, err, want)
	}
	// Cut anywhere inside a section, the module is malformed; cut
	// between sections (after the header, after the type section) it
	// has no imports.
	for i := 9; i < len(testImports); i++ {
		_, err := importModules(testImports[:i])
		if i == 14 && err != nil || i != 14 && !errors.Is(err, errMalformed) {
			t.Errorf("cut at %d bytes: %v", i, err)
		}
	}
}

// FuzzImportModules: any bytes give an answer or errMalformed, never a
// panic or a read out of bounds.
func FuzzImportModules(f *testing.F) {
	f.Add(testImports)
	if b, err := os.ReadFile(filepath.Join("testdata", "spin", "spin.c")); err == nil {
		f.Add(b) // not wasm at all
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		mods, err := importModules(b)
		if err != nil && !errors.Is(err, errMalformed) {
			t.Fatal(err)
		}
		if err != nil && mods != nil {
			t.Fatal("modules and an error")
		}
	})
}
