package gateway

import (
	"context"
	"errors"
	"sync"
	"time"
)

// forwarder hands pages that landed (OnPages, from any channel goroutine)
// to one goroutine that queues them on a Sender as they come, so each
// leg streams instead of waiting for the sync point. At a sync point,
// drain waits until everything handed over is queued.
type forwarder struct {
	ctx   context.Context // the run's: done, no one waits on the queue
	items chan fwdItem
	free  sync.Pool // *[]uint64
	done  chan struct{}
	err   error // the first SendPages error; read after drain
	to    func() sender
}

// sender is a leg the forwarder queues pages on: a *core.Sender (the
// link) or a *qemu.Sender (the destination).
type sender interface {
	SendPages(block string, offsets []uint64) error
	Fail(err error)
	Done() <-chan struct{}
	Err() error
}

// legOf is p as a sender, nil when p is nil.
func legOf[T any, P interface {
	*T
	sender
}](p P) sender {
	if p == nil {
		return nil
	}
	return p
}

type fwdItem struct {
	block string
	offs  *[]uint64
	ack   chan struct{} // a drain
}

// errNoSender reports pages that came before the leg they go to opened.
var errNoSender = errors.New("pages before the first sync point")

// stopPatience is how long stop waits for a goroutine stuck on a leg
// that no longer reads before failing that leg.
const stopPatience = 5 * time.Second

func newForwarder(ctx context.Context, to func() sender) *forwarder {
	f := &forwarder{ctx: ctx, items: make(chan fwdItem, 256), done: make(chan struct{}), to: to}
	go f.run()
	return f
}

func (f *forwarder) run() {
	defer close(f.done)
	for it := range f.items {
		if it.ack != nil {
			close(it.ack)
			continue
		}
		if f.err == nil {
			if s := f.to(); s == nil {
				f.err = errNoSender
			} else {
				f.err = s.SendPages(it.block, *it.offs)
			}
		}
		f.free.Put(it.offs)
	}
}

// pages is the OnPages hook.
func (f *forwarder) pages(block string, offs []uint64) {
	b, _ := f.free.Get().(*[]uint64)
	if b == nil {
		b = new([]uint64)
	}
	*b = append((*b)[:0], offs...)
	select {
	case f.items <- fwdItem{block: block, offs: b}:
	case <-f.ctx.Done(): // failing: the pages no longer matter
	}
}

// drain returns once every page handed over is queued on the Sender,
// with the first error.
func (f *forwarder) drain() error {
	ack := make(chan struct{})
	select {
	case f.items <- fwdItem{ack: ack}:
	case <-f.ctx.Done():
		return context.Cause(f.ctx)
	}
	select {
	case <-ack:
		return f.err
	case <-f.ctx.Done():
		return context.Cause(f.ctx)
	}
}

// stop ends the goroutine; no pages may come after. A goroutine stuck
// on a leg that no longer reads is unblocked by failing that leg (s,
// when not nil) after stopPatience.
func (f *forwarder) stop(s sender, why error) {
	close(f.items)
	t := time.NewTimer(stopPatience)
	defer t.Stop()
	select {
	case <-f.done:
		return
	case <-t.C:
	}
	if s != nil {
		if why == nil {
			why = errors.New("the next leg does not read")
		}
		s.Fail(why)
	}
	<-f.done
}
