// Package corpus finds and loads the guest-memory images of
// ../shared/corpus (or $PAGEWIRE_CORPUS) for tests and benchmarks: each
// image is zstd-compressed, listed in MANIFEST.json with its size, sha256
// and zero-page count, and verified on load.
package corpus

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Image is one entry of MANIFEST.json.
type Image struct {
	Name      string `json:"name"`
	File      string `json:"file"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
	Pages     int    `json:"pages"`
	ZeroPages int    `json:"zero_pages"`
	PageSize  int    `json:"page_size"`
	Block     string `json:"-"`
	dir       string
}

// Dir returns the corpus directory: $PAGEWIRE_CORPUS, or shared/corpus
// beside the checkout.
func Dir() (string, error) {
	if d := os.Getenv("PAGEWIRE_CORPUS"); d != "" {
		return d, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(root), "shared", "corpus"), nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("corpus: no go.mod above the working directory")
		}
		dir = parent
	}
}

// List reads the manifest.
func List() ([]Image, error) {
	dir, err := Dir()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "MANIFEST.json"))
	if err != nil {
		return nil, fmt.Errorf("corpus: %w (set PAGEWIRE_CORPUS to the directory of the guest-memory images)", err)
	}
	var m struct {
		Images []struct {
			Image
			Guest struct {
				RAMBlock string `json:"ram_block"`
			} `json:"guest"`
		} `json:"images"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("corpus: MANIFEST.json: %w", err)
	}
	if len(m.Images) == 0 {
		return nil, errors.New("corpus: MANIFEST.json lists no images")
	}
	out := make([]Image, len(m.Images))
	for i, im := range m.Images {
		out[i] = im.Image
		out[i].Block = im.Guest.RAMBlock
		if out[i].Block == "" {
			out[i].Block = "pc.ram"
		}
		out[i].dir = dir
	}
	return out, nil
}

var cache sync.Map // name -> []byte

// Load decompresses the image and checks its size and sha256. Images are
// cached for the life of the process; callers must not modify them.
func (im Image) Load() ([]byte, error) {
	if b, ok := cache.Load(im.Name); ok {
		return b.([]byte), nil
	}
	f, err := os.Open(filepath.Join(im.dir, im.File))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec, err := zstd.NewReader(f, zstd.WithDecoderMaxWindow(1<<30), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	buf := bytes.NewBuffer(make([]byte, 0, im.Size))
	if _, err := io.Copy(buf, dec); err != nil {
		return nil, fmt.Errorf("corpus %s: %w", im.Name, err)
	}
	b := buf.Bytes()
	if int64(len(b)) != im.Size {
		return nil, fmt.Errorf("corpus %s: %d bytes, manifest says %d", im.Name, len(b), im.Size)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != im.SHA256 {
		return nil, fmt.Errorf("corpus %s: sha256 %x does not match the manifest", im.Name, sum)
	}
	cache.Store(im.Name, b)
	return b, nil
}

// LoadFirst loads the manifest's first image (linux-busy-128M), the one
// most tests use.
func LoadFirst() ([]byte, error) {
	images, err := List()
	if err != nil {
		return nil, err
	}
	return images[0].Load()
}

// Packets cuts the non-zero pages of img (4096 bytes each) into packets
// of up to 128 pages, in order, as the engine sends them, and returns
// them with the number of pages. The packets are views of img.
func Packets(img []byte) ([][][]byte, int) {
	const ps = 4096
	var out [][][]byte
	var cur [][]byte
	zero := make([]byte, ps)
	n := 0
	for off := 0; off+ps <= len(img); off += ps {
		pg := img[off : off+ps]
		if bytes.Equal(pg, zero) {
			continue
		}
		n++
		cur = append(cur, pg)
		if len(cur) == 128 {
			out = append(out, cur)
			cur = nil
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out, n
}
