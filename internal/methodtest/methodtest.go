// Package methodtest has method wrappers for the engine's tests (core,
// qemu): they count a method's receiving ends and fail the ones asked.
package methodtest

import (
	"errors"
	"sync/atomic"

	"github.com/pagewire/pagewire/sdk"
)

// Tracked counts the receiving ends its Method sets up and closes, and
// fails the setup of channel FailCh (-1: none).
type Tracked struct {
	sdk.Method
	FailCh        int
	Created, Open atomic.Int32
}

// NewReceiver implements [sdk.Method].
func (m *Tracked) NewReceiver(ch int, o sdk.Options) (sdk.Receiver, error) {
	if ch == m.FailCh {
		return nil, errors.New("no room for another")
	}
	r, err := m.Method.NewReceiver(ch, o)
	if err != nil {
		return nil, err
	}
	m.Created.Add(1)
	m.Open.Add(1)
	return &trackedRecv{r, m}, nil
}

type trackedRecv struct {
	sdk.Receiver
	m *Tracked
}

func (r *trackedRecv) Close() error {
	r.m.Open.Add(-1) // a second Close shows as a negative count
	return r.Receiver.Close()
}
