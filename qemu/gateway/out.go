package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/plugins/builtin"
	"github.com/pagewire/pagewire/qemu"
	"github.com/pagewire/pagewire/sdk"
)

// LinkConfig is what an [Out] accepts from the In on the link.
type LinkConfig struct {
	// Method, when not nil, is the method the In must use on the link;
	// otherwise the In's method is looked up in Methods.
	Method sdk.Method
	// Methods are the methods the In may choose from when Method is nil;
	// nil is package plugins/builtin's.
	Methods *core.Registry
	// Timeout bounds every single read from the link once the
	// migration runs; 0 means no bound.
	Timeout time.Duration
	// HandshakeTimeout bounds the wait for the In's channels and each
	// handshake read; 0 is 30s.
	HandshakeTimeout time.Duration
}

// Out is the gateway that feeds a migration from an [In] to a
// destination QEMU (one run with -incoming and the multifd capability).
// Set the fields, then call [Out.Run]. An Out must not be copied once
// used.
type Out struct {
	// Link describes what the In may send.
	Link LinkConfig
	// Dest dials the destination QEMU's -incoming address: the main
	// channel first, then every multifd channel (required).
	Dest Dialer
	// DestConfig configures the destination leg as for
	// [qemu.NewSender]: Channels and Method must be the destination's
	// multifd-channels (0 is QEMU's default, 2) and multifd-compression
	// (see [qemu.CheckMethod]); Level and the timeouts apply. Its UUID and
	// Dialect are ignored: they are the source's, from the In.
	DestConfig core.SenderConfig

	running atomic.Bool
	link    atomic.Pointer[core.Receiver]
	ram     atomic.Int64
	dialect atomic.Value // core.Dialect: the source's, from the In's hello
	stopped atomic.Int64 // unix nanoseconds, from the In; 0: not known
}

// SourceStopped returns when the source QEMU stopped its guest for the
// last round, as the In reported it ([In.Stopped]; the source host's
// clock), or zero if the In did not. Any goroutine may call it; it is
// set just before the stream's tail.
func (g *Out) SourceStopped() time.Time {
	if n := g.stopped.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// QEMUDialect returns the QEMU migration's multifd dialect (the
// source's, which the destination is fed) once the In has said it (""
// before); the link's own is in [Out.Stats]. Any goroutine may call it.
func (g *Out) QEMUDialect() core.Dialect {
	d, _ := g.dialect.Load().(core.Dialect)
	return d
}

// Stats returns the link's statistics so far, its final figures once Run
// has returned. Any goroutine may call it, also while Run runs.
func (g *Out) Stats() core.Stats {
	if r := g.link.Load(); r != nil {
		return r.Stats()
	}
	return core.Stats{}
}

// RAMBytes returns the size of the guest's RAM once the In has announced
// its blocks, 0 before. Any goroutine may call it.
func (g *Out) RAMBytes() int64 { return g.ram.Load() }

// maxChunk bounds one main-stream chunk on the link: it can be large
// (QEMU 10 with legacy zero pages writes 9 bytes per zero page on the
// main channel).
const maxChunk = min(1<<32-1, math.MaxInt)

// releasePatience is how long the QEMU 7.2 workaround (see release)
// waits for its SYNCs to be written.
const releasePatience = 5 * time.Second

// Run takes one migration from the In, whose channels connect to ln, and
// re-emits it to the destination QEMU as it arrives: the main stream
// byte for byte, the pages on the destination's own channels and
// method, a SYNC on every channel before each of the main stream's sync
// markers. It returns the link's statistics once the In has closed the
// link and the destination leg is closed. Otherwise it returns a
// [*LegError] naming the leg that failed first, after failing the
// others: the destination sees its connections close before the end of
// the stream, the In sees the link fail with this error.
//
// Run closes ln. Cancelling ctx fails the migration. Run returns only
// after every goroutine it started has stopped; an Out runs one Run at a
// time.
func (g *Out) Run(ctx context.Context, ln net.Listener) (core.Stats, error) {
	defer ln.Close()
	if !g.running.CompareAndSwap(false, true) {
		return core.Stats{}, errRunning
	}
	defer g.running.Store(false)
	if g.Dest == nil {
		return core.Stats{}, &LegError{LegDestination, errors.New("no Dialer")}
	}
	if err := qemu.CheckMethod(g.DestConfig.Method); err != nil {
		return core.Stats{}, &LegError{LegDestination, err}
	}
	g.link.Store(nil)
	g.ram.Store(0)
	g.dialect.Store(core.Dialect(""))
	g.stopped.Store(0)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	r := &outRun{g: g, ctx: ctx, cancel: cancel, ramCopy: ramCopy{total: &g.ram}, cfg: g.DestConfig}
	if r.cfg.Channels == 0 {
		r.cfg.Channels = qemuChannels
	}
	r.fwd = newForwarder(ctx, func() sender { return legOf(r.qsp.Load()) })
	methods := g.Link.Methods
	if methods == nil {
		methods = builtin.Methods()
	}
	rcv := core.NewReceiver(core.ReceiverConfig{
		Method: g.Link.Method, Methods: methods, Timeout: g.Link.Timeout, HandshakeTimeout: g.Link.HandshakeTimeout,
		MaxDeviceState: maxChunk,
		Alloc:          r.alloc,
		OnDeviceState: func(idstr string, instance uint32, blob []byte) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.deviceState(idstr, instance, blob)
		},
		OnSync:  r.sync,
		OnPages: r.fwd.pages,
	})
	g.link.Store(rcv)
	_, err := rcv.Receive(ctx, ln)
	err = r.finish(err)
	return rcv.Stats(), err
}

// outRun is the state of one Out.Run.
type outRun struct {
	g      *Out
	ctx    context.Context
	cancel context.CancelCauseFunc
	cfg    core.SenderConfig // the destination leg's
	ramCopy
	fwd *forwarder // pages to qs as they land

	mu        sync.Mutex   // device-state blobs come from any link channel
	qs        *qemu.Sender // the destination, from the hello on
	qsp       atomic.Pointer[qemu.Sender]
	stopWatch func()        // stops watching qs
	markers   atomic.Uint64 // main-stream chunks written, each ending at a marker
	early     []byte        // the first chunk, when it came before the hello
}

// deviceState is the OnDeviceState hook, under mu: the link protocol.
func (r *outRun) deviceState(idstr string, instance uint32, blob []byte) error {
	switch idstr {
	case blobHello:
		if r.qs != nil {
			return errors.New("a second hello from the In")
		}
		var h hello
		if err := json.Unmarshal(blob, &h); err != nil {
			return fmt.Errorf("hello from the In: %w", err)
		}
		if h.Dialect != core.Dialect72 && h.Dialect != core.Dialect10 {
			return fmt.Errorf("hello from the In: dialect %q", h.Dialect)
		}
		cfg := r.cfg
		cfg.UUID, cfg.Dialect = h.UUID, h.Dialect
		r.g.dialect.Store(h.Dialect)
		qs, err := qemu.NewSender(r.ctx, r.g.Dest, r.mem, cfg)
		if err != nil {
			return &LegError{LegDestination, err}
		}
		r.qs = qs
		r.qsp.Store(qs)
		r.stopWatch = watch(qs, r.cancel, LegDestination)
		if r.early != nil {
			b := r.early
			r.early = nil
			return r.deviceState(blobMain, 1, b)
		}
		return nil
	case blobMain, blobMainTail:
		if r.qs == nil {
			// The hello and the first chunk share a sync interval, so
			// they may arrive in either order.
			if idstr != blobMain || instance != 1 || r.early != nil {
				return fmt.Errorf("main stream chunk %d before the hello", instance)
			}
			r.early = bytes.Clone(blob)
			return nil
		}
		if idstr == blobMain {
			if want := r.markers.Load() + 1; uint64(instance) != want {
				return fmt.Errorf("main stream chunk %d, want %d", instance, want)
			}
		}
		if err := r.qs.WriteMain(blob); err != nil {
			return &LegError{LegDestination, err}
		}
		if idstr == blobMain {
			r.markers.Add(1)
		}
		return nil
	case blobStopped:
		var st stopped
		if err := json.Unmarshal(blob, &st); err != nil || st.UnixNano <= 0 {
			return fmt.Errorf("the In's %s message %q: want {\"unix_nano\": N > 0}", idstr, blob[:min(len(blob), 64)])
		}
		r.g.stopped.Store(st.UnixNano)
		return nil
	}
	return fmt.Errorf("unexpected device state %q from the In", idstr)
}

// sync is the OnSync hook: it sends the interval's pages to the
// destination, and a SYNC on every channel when the interval ended at a
// main-stream marker (the link's last sync point, from its Close, ends
// none).
func (r *outRun) sync(p *core.SyncPoint) error {
	if r.qs == nil {
		return errors.New("sync point before the hello")
	}
	if err := r.fwd.drain(); err != nil {
		return legError(LegDestination, err)
	}
	if p.N <= r.markers.Load() {
		if err := r.qs.Sync(); err != nil {
			return &LegError{LegDestination, err}
		}
		return nil
	}
	// No SYNC, but the destination's channels must be done with the
	// pages before the link may write memory again.
	if err := r.qs.Flush(); err != nil {
		return &LegError{LegDestination, err}
	}
	return nil
}

// finish ends the run once the link has returned err: it closes the
// destination leg, or aborts it.
func (r *outRun) finish(err error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	qs := r.qs
	if ferr := r.fwd.drain(); err == nil && qs != nil && ferr != nil {
		err = legError(LegDestination, ferr)
	}
	r.fwd.stop(legOf(qs), err)
	if r.stopWatch != nil {
		r.stopWatch()
	}
	if err == nil && qs == nil {
		err = errors.New("the link carried no migration")
	}
	if err != nil {
		if qs == nil {
			return legError(LegLink, err)
		}
		if derr := qs.Err(); derr != nil {
			err = &LegError{LegDestination, derr}
		} else if le := legError(LegLink, err); le.Leg == LegLink {
			err = le
			r.release(err)
		} else {
			err = le
		}
		qs.Abort(err)
		return err
	}
	if _, err := qs.Close(); err != nil {
		return &LegError{LegDestination, err}
	}
	return nil
}

// release makes a destination that waits at a sync marker fail instead
// of hanging: QEMU 7.2 does not wake a main thread waiting for its
// channels' SYNCs when a channel ends, so it would wait forever. A SYNC
// on every channel lets it read on, find the main stream cut short, and
// fail the migration (and exit).
func (r *outRun) release(err error) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.qs.Sync()
	}()
	t := time.NewTimer(releasePatience)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		r.qs.Fail(err)
		<-done
	}
}
