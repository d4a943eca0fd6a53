//go:build !linux

package goplugin

import (
	"errors"
	"os"
	"sync"

	"github.com/pagewire/pagewire/sdk"
)

// The data plane is Linux only (memfd, SOCK_SEQPACKET): elsewhere every
// packet travels in its RPC message.
type plane struct {
	mu    sync.Mutex
	child *os.File
}

type dataPlane struct{}

func newPlane() (*plane, error) { return nil, errors.New("data plane: Linux only") }

func (p *plane) started() {}
func (p *plane) close()   {}
func (p *plane) open(int, bool) (*dataPlane, uint64, error) {
	return nil, 0, errors.New("data plane: Linux only")
}
func (d *dataPlane) close() {}

func (c *channel) prepareOnPlane(*sdk.Packet) ([]byte, error) { panic("no data plane") }
func (c *channel) recvBuffer(int) []byte                      { panic("no data plane") }
func (c *channel) recvOnPlane(*sdk.Packet, []byte) error      { panic("no data plane") }

type shares struct{}

// ShareMemory is a no-op without the data plane: pages travel in the
// messages.
func (m *Method) ShareMemory([]byte, *os.File, int64) (unshare func()) { return func() {} }
