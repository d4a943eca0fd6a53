// Package qemuvectors loads the migrations captured from real QEMU
// processes in ../shared/vectors (one folder per case: main.bin.zst,
// mf-N.bin.zst, final-ram.pagehash, case.json) for tests that replay them.
package qemuvectors

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Dir returns the vector set dir: $env, or shared/vectors/set beside the
// checkout (found from the module root).
func Dir(env, set string) (string, error) {
	if d := os.Getenv(env); d != "" {
		return d, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(filepath.Dir(dir), "shared", "vectors", set), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("qemuvectors: no go.mod above the working directory; set %s", env)
		}
		dir = parent
	}
}

// Stream is one captured connection.
type Stream struct {
	Kind        string `json:"kind"` // "main" or "multifd"
	File        string `json:"file"`
	ChannelID   int    `json:"channel_id"`
	AcceptOrder int    `json:"accept_order"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
	SyncPackets int    `json:"sync_packets"`
}

// Case is one captured migration.
type Case struct {
	Name       string
	Dir        string
	Channels   int
	Method     string // "none", "zlib", "zstd"
	RAMSize    int64
	Streams    []Stream // in accept order
	finalHash  string
	pagehashes string
}

// List reads the manifest of the vector set in dir.
// Cases finds the set (see Dir) and lists its cases, failing tb when
// either fails.
func Cases(tb testing.TB, env, set string) []Case {
	tb.Helper()
	dir, err := Dir(env, set)
	if err != nil {
		tb.Fatal(err)
	}
	cases, err := List(dir)
	if err != nil {
		tb.Fatal(err)
	}
	return cases
}

func List(dir string) ([]Case, error) {
	b, err := os.ReadFile(filepath.Join(dir, "MANIFEST.json"))
	if err != nil {
		return nil, fmt.Errorf("qemuvectors: %w", err)
	}
	var m struct {
		Cases []struct {
			Name        string `json:"name"`
			Dir         string `json:"dir"`
			Compression string `json:"compression"`
			Channels    int    `json:"channels"`
			RAMSize     int64  `json:"ram_size"`
			FinalSHA256 string `json:"final_ram_sha256"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("qemuvectors: MANIFEST.json: %w", err)
	}
	var out []Case
	for _, c := range m.Cases {
		cd := filepath.Join(dir, c.Dir)
		cb, err := os.ReadFile(filepath.Join(cd, "case.json"))
		if err != nil {
			return nil, err
		}
		var cj struct {
			Streams  []Stream `json:"streams"`
			FinalRAM struct {
				Size int64 `json:"size"`
			} `json:"final_ram"`
		}
		if err := json.Unmarshal(cb, &cj); err != nil {
			return nil, fmt.Errorf("qemuvectors: %s/case.json: %w", c.Dir, err)
		}
		sort.Slice(cj.Streams, func(i, j int) bool { return cj.Streams[i].AcceptOrder < cj.Streams[j].AcceptOrder })
		out = append(out, Case{
			Name: c.Name, Dir: cd, Channels: c.Channels, Method: c.Compression,
			RAMSize: cj.FinalRAM.Size, Streams: cj.Streams, finalHash: c.FinalSHA256,
			pagehashes: filepath.Join(cd, "final-ram.pagehash"),
		})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("qemuvectors: %s lists no cases", dir)
	}
	return out, nil
}

// Load decompresses a stream and checks its size and sha256.
func (c *Case) Load(s Stream) ([]byte, error) {
	f, err := os.Open(filepath.Join(c.Dir, s.File))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d, err := zstd.NewReader(f, zstd.WithDecoderMaxWindow(1<<30), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	buf := bytes.NewBuffer(make([]byte, 0, s.Size))
	if _, err := io.Copy(buf, d); err != nil {
		return nil, fmt.Errorf("%s/%s: %w", c.Name, s.File, err)
	}
	if sum := sha256.Sum256(buf.Bytes()); fmt.Sprintf("%x", sum) != s.SHA256 || int64(buf.Len()) != s.Size {
		return nil, fmt.Errorf("%s/%s: size or sha256 differs from case.json", c.Name, s.File)
	}
	return buf.Bytes(), nil
}

// Check compares a reconstructed pc.ram with the case's final RAM, page by
// page, and names the first differing pages.
func (c *Case) Check(ram []byte) error {
	want, err := os.ReadFile(c.pagehashes)
	if err != nil {
		return err
	}
	if int64(len(ram)) != c.RAMSize || len(want) != len(ram)/4096*8 {
		return fmt.Errorf("%s: pc.ram of %d bytes, want %d", c.Name, len(ram), c.RAMSize)
	}
	var bad []int
	nbad := 0
	for p := 0; p < len(ram)/4096; p++ {
		sum := sha256.Sum256(ram[p*4096 : (p+1)*4096])
		if !bytes.Equal(sum[:8], want[p*8:p*8+8]) {
			nbad++
			if len(bad) < 10 {
				bad = append(bad, p)
			}
		}
	}
	if nbad > 0 {
		return fmt.Errorf("%s: %d pages differ from the source's final RAM, first %v", c.Name, nbad, bad)
	}
	if sum := sha256.Sum256(ram); fmt.Sprintf("%x", sum) != c.finalHash {
		return fmt.Errorf("%s: pc.ram sha256 %x, want %s", c.Name, sum, c.finalHash)
	}
	return nil
}

// LoadAll decompresses every stream of the case, in accept order.
func (c *Case) LoadAll() ([][]byte, error) {
	var out [][]byte
	for _, s := range c.Streams {
		b, err := c.Load(s)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// Replay connects to the TCP address addr once per stream, in order, as
// the source did, and writes every stream at once, each from its own
// goroutine; it returns when all are written and closed (each write is
// bounded by a minute).
func Replay(addr string, streams [][]byte) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(streams))
	for _, b := range streams {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			wg.Wait()
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			c.SetWriteDeadline(time.Now().Add(time.Minute))
			if _, err := c.Write(b); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}
