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
	// pending counts the pages handed over and not yet queued on the
	// Sender, at most maxPending (but for one larger handful).
	mu      sync.Mutex
	room    sync.Cond
	pending int
	free    sync.Pool // *[]uint64
	done    chan struct{}
	err     error // the first SendPages error; read after drain
	to      func() sender
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

// maxPending bounds the pages the forwarder holds (4 KiB pages: 2 MiB).
// What it holds has left the previous leg and not entered the next: the
// source QEMU counts it as sent, so it must stay small for QEMU to see
// the link's rate when it sizes its last round (a queue of packets held
// up to 128 MiB here, a whole pass of a small guest, which QEMU then
// "sent" in no time and left to cross the link in its downtime).
const maxPending = 512

func newForwarder(ctx context.Context, to func() sender) *forwarder {
	f := &forwarder{ctx: ctx, items: make(chan fwdItem, maxPending), done: make(chan struct{}), to: to}
	f.room.L = &f.mu
	context.AfterFunc(ctx, func() {
		f.mu.Lock()
		f.room.Broadcast()
		f.mu.Unlock()
	})
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
		f.mu.Lock()
		f.pending -= len(*it.offs)
		f.room.Broadcast()
		f.mu.Unlock()
		f.free.Put(it.offs)
	}
}

// pages is the OnPages hook: it waits while the forwarder holds
// maxPending pages.
func (f *forwarder) pages(block string, offs []uint64) {
	f.mu.Lock()
	for f.pending > 0 && f.pending+len(offs) > maxPending && f.ctx.Err() == nil {
		f.room.Wait()
	}
	if f.ctx.Err() != nil {
		f.mu.Unlock()
		return // failing: the pages no longer matter
	}
	f.pending += len(offs)
	f.mu.Unlock()
	b, _ := f.free.Get().(*[]uint64)
	if b == nil {
		b = new([]uint64)
	}
	*b = append((*b)[:0], offs...)
	select {
	case f.items <- fwdItem{block: block, offs: b}:
	case <-f.ctx.Done(): // failing: the pages no longer matter
		f.mu.Lock()
		f.pending -= len(offs)
		f.mu.Unlock()
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
