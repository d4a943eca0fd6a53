package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/qemu"
	"github.com/pagewire/pagewire/sdk"
)

// SourceConfig is what an [In] must be told of its source QEMU: as for a
// QEMU destination, nothing on the wire says the channel count or the
// method.
type SourceConfig struct {
	// Channels is the source's multifd-channels, 1..255; 0 is QEMU's
	// default, 2.
	Channels int
	// Method is the source's multifd-compression (see [qemu.CheckMethod]);
	// nil is none.
	Method sdk.Method
	// Dialect, when set, is the multifd dialect the source must speak;
	// otherwise the stream tells ([core.Dialect72], [core.Dialect10]).
	Dialect core.Dialect
	// UUID is the source's -uuid, all zero without one. The destination
	// leg presents it to the destination QEMU.
	UUID [16]byte
	// Timeout bounds every single read from the source once the
	// migration runs; 0 means no bound.
	Timeout time.Duration
	// HandshakeTimeout bounds the wait for the source's main channel and
	// every multifd channel; 0 is 30s.
	HandshakeTimeout time.Duration
}

// In is the gateway a source QEMU migrates to: it forwards the migration
// over the link to an [Out]. Set the fields, then call [In.Run]. An In
// must not be copied once used.
type In struct {
	// Source describes the source QEMU.
	Source SourceConfig
	// Link dials the Out's listener, once per link channel (required).
	Link Dialer
	// LinkConfig configures the link's transfer as for [core.NewSender]:
	// channels, method, level, timeouts. The link opens at the source's
	// first sync point.
	LinkConfig core.SenderConfig
	// Stopped, when set, returns when the source QEMU stopped its guest
	// for the migration's last round (its STOP event's timestamp), or
	// zero if that is not known. Run calls it once the source's stream
	// has ended, before the stream's tail goes on (so it must not wait),
	// and sends the time to the Out, where
	// [Out.SourceStopped] has it for the end-to-end downtime. It needs
	// an Out of the same release: an older one refuses the message.
	Stopped func() time.Time

	running atomic.Bool
	link    atomic.Pointer[core.Sender]
	ram     atomic.Int64
	dialect atomic.Value // core.Dialect: the source's, once it spoke
}

// QEMUDialect returns the source QEMU's multifd dialect once its stream
// has shown it ("" before); the link's own is in [In.Stats]. Any
// goroutine may call it.
func (g *In) QEMUDialect() core.Dialect {
	d, _ := g.dialect.Load().(core.Dialect)
	return d
}

// Stats returns the link's statistics so far: zero until the link is
// open, its final figures once Run has returned. Any goroutine may call
// it, also while Run runs.
func (g *In) Stats() core.Stats {
	if s := g.link.Load(); s != nil {
		return s.Stats()
	}
	return core.Stats{}
}

// RAMBytes returns the size of the guest's RAM once the source has
// announced its blocks, 0 before. Any goroutine may call it.
func (g *In) RAMBytes() int64 { return g.ram.Load() }

// Run takes one migration from the source QEMU, whose channels connect
// to ln, and forwards it to the Out as it arrives. It returns the
// link's statistics once the source's stream has ended and the Out has
// acknowledged all of it. Otherwise it returns a [*LegError] naming the
// leg that failed first, after failing the others: the source sees its
// connections close, the Out sees the link fail with this error.
//
// Run closes ln. Cancelling ctx fails the migration. Run returns only
// after every goroutine it started has stopped; an In runs one Run at a
// time.
func (g *In) Run(ctx context.Context, ln net.Listener) (core.Stats, error) {
	defer ln.Close()
	if !g.running.CompareAndSwap(false, true) {
		return core.Stats{}, errRunning
	}
	defer g.running.Store(false)
	if g.Link == nil {
		return core.Stats{}, &LegError{LegLink, errors.New("no Dialer")}
	}
	if err := qemu.CheckMethod(g.Source.Method); err != nil {
		return core.Stats{}, &LegError{LegSource, err}
	}
	g.link.Store(nil)
	g.ram.Store(0)
	g.dialect.Store(core.Dialect(""))

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	r := &inRun{g: g, ctx: ctx, cancel: cancel, ramCopy: ramCopy{total: &g.ram}}
	r.fwd = newForwarder(ctx, func() sender { return legOf(g.link.Load()) })
	src := g.Source
	if src.Channels == 0 {
		src.Channels = qemuChannels
	}
	r.q = qemu.NewReceiver(qemu.Config{
		Channels: src.Channels, Method: src.Method, Dialect: src.Dialect, UUID: src.UUID,
		Timeout: src.Timeout, HandshakeTimeout: src.HandshakeTimeout,
		Alloc: r.alloc, OnSync: r.sync, OnPages: r.fwd.pages,
	})
	_, err := r.q.Receive(ctx, ln)
	return r.finish(err)
}

// inRun is the state of one In.Run.
type inRun struct {
	g      *In
	ctx    context.Context
	cancel context.CancelCauseFunc
	ramCopy
	q         *qemu.Receiver
	fwd       *forwarder   // pages to snd as they land
	snd       *core.Sender // the link, from the first sync point on
	stopWatch func()       // stops watching snd
}

// sync is the OnSync hook: it forwards one sync point's interval (the
// pages, then the main stream's chunk, then a Sync), opening the link at
// the first.
func (r *inRun) sync(p *core.SyncPoint) error {
	if r.snd == nil {
		// QEMU sends no page before its first sync point; any that came
		// fail here, before the forwarder can reach the link.
		if err := r.fwd.drain(); err != nil {
			return legError(LegSource, err)
		}
		s, err := core.NewSender(r.ctx, r.g.Link, r.mem, r.g.LinkConfig)
		if err != nil {
			return &LegError{LegLink, err}
		}
		r.snd = s
		r.g.link.Store(s)
		// A failed link fails the source's leg at once, not at the next
		// sync point.
		r.stopWatch = watch(s, r.cancel, LegLink)
		r.g.dialect.Store(core.Dialect(r.q.Stats().Dialect))
		h, _ := json.Marshal(hello{Dialect: core.Dialect(r.q.Stats().Dialect), UUID: r.g.Source.UUID})
		if err := s.SendDeviceState(blobHello, 0, h); err != nil {
			return &LegError{LegLink, err}
		}
	}
	if err := r.fwd.drain(); err != nil {
		return legError(LegLink, err)
	}
	if err := r.snd.SendDeviceState(blobMain, uint32(p.N), bytes.Clone(p.Main())); err != nil {
		return &LegError{LegLink, err}
	}
	if err := r.snd.Sync(); err != nil {
		return &LegError{LegLink, err}
	}
	return nil
}

// finish ends the run once the source's leg has returned err: it sends
// the stream's tail and closes the link, or aborts it.
func (r *inRun) finish(err error) (core.Stats, error) {
	snd := r.snd
	if ferr := r.fwd.drain(); err == nil && snd != nil && ferr != nil {
		err = legError(LegLink, ferr)
	}
	r.fwd.stop(legOf(snd), err)
	if r.stopWatch != nil {
		r.stopWatch()
	}
	if err == nil && snd == nil {
		err = errors.New("the migration had no sync point")
	}
	if err == nil && r.g.Stopped != nil {
		if t := r.g.Stopped(); !t.IsZero() {
			b, _ := json.Marshal(stopped{UnixNano: t.UnixNano()})
			if err = snd.SendDeviceState(blobStopped, 0, b); err != nil {
				err = &LegError{LegLink, err}
			}
		}
	}
	if err == nil {
		if tail := r.q.MainTail(); len(tail) > 0 {
			if err = snd.SendDeviceState(blobMainTail, 0, tail); err != nil {
				err = &LegError{LegLink, err}
			}
		}
	}
	if snd == nil {
		return core.Stats{}, legError(LegSource, err)
	}
	if err != nil {
		if lerr := snd.Err(); lerr != nil {
			err = &LegError{LegLink, lerr}
		} else {
			err = legError(LegSource, err)
		}
		st, _ := snd.Abort(err)
		return st, err
	}
	st, err := snd.Close()
	if err != nil {
		return st, &LegError{LegLink, err}
	}
	return st, nil
}
