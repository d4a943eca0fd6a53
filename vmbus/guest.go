package vmbus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// GuestConfig configures the guest end of a connection. The zero value is
// usable.
type GuestConfig struct {
	// Versions are proposed in this order; the first the host accepts
	// wins. Default: [Versions], newest first.
	Versions []uint32
	// Timeout bounds the wait for each reply. Default 10s.
	Timeout time.Duration
	// Channel sizes the rings of channels this guest opens.
	Channel ChannelConfig
}

// Guest is the guest end of a connection: it negotiates the version,
// collects the host's offers, and opens channels over memory it creates.
// Its methods may be called from any goroutine. Close closes every open
// channel (sub-channels first), unloads and closes the socket.
type Guest struct {
	*link
	cfg     GuestConfig
	version uint32

	mu        sync.Mutex
	relids    [MaxRelid]*guestOffer // relid2channel
	primaries []*guestOffer
	allOffers chan struct{}
	gotAll    bool
	nextGPADL uint32

	closeOnce sync.Once
}

type guestOffer struct {
	offer     Offer
	primary   *guestOffer // nil for a primary
	subs      []*guestOffer
	ch        *Channel
	opening   bool
	rescinded bool
}

// Dial connects to a host listening on the unix socket path, negotiates a
// version and waits for the host's offers.
func Dial(ctx context.Context, path string, cfg GuestConfig) (*Guest, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		return nil, err
	}
	return NewGuest(ctx, c.(*net.UnixConn), cfg)
}

// NewGuest runs the guest side of the connection protocol on uc, a
// SOCK_SEQPACKET unix socket, which it owns from now on (also on error).
func NewGuest(ctx context.Context, uc *net.UnixConn, cfg GuestConfig) (*Guest, error) {
	if len(cfg.Versions) == 0 {
		cfg.Versions = Versions
	}
	if _, err := cfg.Channel.withDefaults(); err != nil {
		uc.Close()
		return nil, err
	}
	g := &Guest{link: newLink(uc, cfg.Timeout), cfg: cfg, allOffers: make(chan struct{}), nextGPADL: FirstGPADL}
	g.onFail = g.failChannels
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		g.readLoop(g.handle)
	}()
	if err := g.connect(ctx); err != nil {
		if f := g.failure(); f != nil {
			err = f // the root cause: what the host sent, or that it went
		}
		g.fail(fmt.Errorf("%w: %w", ErrPeerGone, err))
		g.wg.Wait()
		return nil, err
	}
	return g, nil
}

// connect is vmbus_connect and vmbus_request_offers.
func (g *Guest) connect(ctx context.Context) error {
	g.state.Store(int32(Connecting))
	for _, v := range g.cfg.Versions {
		ok, err := g.negotiate(ctx, v)
		if err != nil {
			if errors.Is(err, ErrTimeout) || ctx.Err() != nil || g.failure() != nil {
				return err // -ETIMEDOUT aborts at once
			}
			continue // a post error: try the next version
		}
		if ok {
			g.version = v
			g.state.Store(int32(Connected))
			break
		}
	}
	if g.State() != Connected {
		return fmt.Errorf("%w: the host refused %d versions", ErrNoVersion, len(g.cfg.Versions))
	}
	if err := g.post(ctx, BareMsg{MsgRequestOffers}, nil); err != nil {
		return err
	}
	timer := time.NewTimer(g.timeout)
	defer timer.Stop()
	select {
	case <-g.allOffers:
		return nil
	case <-timer.C:
		return fmt.Errorf("%w: ALLOFFERS_DELIVERED within %v", ErrTimeout, g.timeout)
	case <-ctx.Done():
		return ctx.Err()
	case <-g.done:
		return g.failure()
	}
}

func (g *Guest) negotiate(ctx context.Context, v uint32) (bool, error) {
	m := Initiate{Version: v}
	if v >= VersionV5 {
		m.InterruptPage = 2 // msg_sint = VMBUS_MESSAGE_SINT
	}
	r, err := g.request(ctx, m, nil, MsgVersionResponse, 0)
	if err != nil {
		return false, err
	}
	return r.(VersionResponse).Supported, nil
}

// Version is the negotiated protocol version.
func (g *Guest) Version() uint32 { return g.version }

// handle is the guest's message dispatch (vmbus_onmessage).
func (g *Guest) handle(m Message, fds []int) error {
	closeFDs(fds) // the host never passes descriptors
	if len(fds) > 0 {
		return &MessageError{Type: m.Type(), Field: "fds", Value: uint64(len(fds)), Err: errors.New("the host passes no descriptors")}
	}
	switch m := m.(type) {
	case VersionResponse:
		if g.State() != Connecting {
			return unexpected(m, "guest", g.State())
		}
		g.deliver(MsgVersionResponse, 0, m)
		return nil
	}
	if g.State() != Connected {
		return unexpected(m, "guest", g.State())
	}
	switch m := m.(type) {
	case Offer:
		return g.onOffer(m)
	case BareMsg:
		switch m.Kind {
		case MsgAllOffersDelivered:
			g.mu.Lock()
			if !g.gotAll {
				g.gotAll = true
				close(g.allOffers)
			}
			g.mu.Unlock()
			return nil
		case MsgUnloadResponse:
			g.deliver(MsgUnloadResponse, 0, m)
			return nil
		}
	case RelidMsg:
		if m.Kind == MsgRescindOffer {
			return g.onRescind(m.Relid)
		}
	case OpenResult:
		g.deliver(MsgOpenResult, m.Relid, m)
		return nil
	case GPADLCreated:
		g.deliver(MsgGPADLCreated, m.GPADL, m)
		return nil
	case GPADLTorndown:
		g.deliver(MsgGPADLTorndown, m.GPADL, m)
		return nil
	}
	return unexpected(m, "guest", g.State())
}

// onOffer is vmbus_onoffer and vmbus_process_offer.
func (g *Guest) onOffer(o Offer) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.relids[o.Relid] != nil {
		return &MessageError{Type: MsgOfferChannel, Field: "child_relid", Value: uint64(o.Relid), Err: errors.New("already offered")}
	}
	e := &guestOffer{offer: o}
	for _, p := range g.primaries {
		if p.offer.IfType == o.IfType && p.offer.IfInstance == o.IfInstance {
			if o.SubChannelIndex == 0 {
				return nil // Linux drops it with a warning
			}
			e.primary = p
			p.subs = append(p.subs, e)
			g.relids[o.Relid] = e
			return nil
		}
	}
	g.primaries = append(g.primaries, e)
	g.relids[o.Relid] = e
	return nil
}

// onRescind is vmbus_onoffer_rescind: unknown relids and second rescinds
// are ignored; an open channel fails with ErrRescinded and is removed at
// Close, a closed one now (RELID_RELEASED).
func (g *Guest) onRescind(relid uint32) error {
	g.mu.Lock()
	e := g.relids[relid]
	if e == nil || e.rescinded {
		g.mu.Unlock()
		return nil
	}
	e.rescinded = true
	ch := e.ch
	if ch == nil && !e.opening {
		g.remove(e)
	}
	g.mu.Unlock()
	if ch != nil {
		ch.fail(fmt.Errorf("%w: relid %d", ErrRescinded, relid))
		return nil
	}
	if !e.opening {
		return g.post(context.Background(), RelidMsg{MsgRelidReleased, relid}, nil)
	}
	return nil
}

// remove takes a channel out of the relid table; g.mu held.
func (g *Guest) remove(e *guestOffer) {
	g.relids[e.offer.Relid] = nil
	if p := e.primary; p != nil {
		p.subs = slices.DeleteFunc(p.subs, func(s *guestOffer) bool { return s == e })
	} else {
		g.primaries = slices.DeleteFunc(g.primaries, func(s *guestOffer) bool { return s == e })
	}
}

// Offers returns the offers known now: each primary followed by its
// sub-channels in the order they were offered.
func (g *Guest) Offers() []Offer {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []Offer
	for _, p := range g.primaries {
		out = append(out, p.offer)
		for _, s := range p.subs {
			out = append(out, s.offer)
		}
	}
	return out
}

// Lookup returns the offer with this relid, primary or sub-channel
// (relid2channel).
func (g *Guest) Lookup(relid uint32) (Offer, bool) {
	if relid >= MaxRelid {
		return Offer{}, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if e := g.relids[relid]; e != nil {
		return e.offer, true
	}
	return Offer{}, false
}

// Open opens the offered channel relid: it creates the ring memory (a
// memfd with the outbound ring first), establishes a GPADL for it and
// posts OPENCHANNEL with the two doorbell eventfds (docs/vmbus.md).
// On any failure everything is undone and the channel can be opened again.
func (g *Guest) Open(ctx context.Context, relid uint32) (*Channel, error) {
	if g.State() != Connected {
		return nil, fmt.Errorf("vmbus: open relid %d: connection %v", relid, g.State())
	}
	cfg, _ := g.cfg.Channel.withDefaults()
	g.mu.Lock()
	var e *guestOffer
	if relid < MaxRelid {
		e = g.relids[relid]
	}
	switch {
	case e == nil:
		g.mu.Unlock()
		return nil, fmt.Errorf("%w: relid %d is not offered", ErrUnknownChannel, relid)
	case e.rescinded:
		g.mu.Unlock()
		return nil, fmt.Errorf("%w: relid %d", ErrRescinded, relid)
	case e.ch != nil || e.opening:
		g.mu.Unlock()
		return nil, fmt.Errorf("%w: relid %d is already open", ErrUnknownChannel, relid)
	}
	e.opening = true
	gpadl := g.nextGPADL
	g.nextGPADL++
	g.mu.Unlock()

	ch, err := g.open(ctx, e, gpadl, cfg)
	g.mu.Lock()
	e.opening = false
	if err == nil {
		e.ch = ch
	}
	rescinded := e.rescinded
	if rescinded && err != nil {
		g.remove(e)
	}
	g.mu.Unlock()
	if rescinded && err != nil {
		g.post(context.Background(), RelidMsg{MsgRelidReleased, relid}, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("vmbus: open relid %d: %w", relid, err)
	}
	return ch, nil
}

func (g *Guest) open(ctx context.Context, e *guestOffer, gpadl uint32, cfg ChannelConfig) (_ *Channel, err error) {
	relid := e.offer.Relid
	size := cfg.SendSize + cfg.RecvSize
	fd, err := unix.MemfdCreate("pagewire-vmbus-ring", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("memfd: %w", err)
	}
	// Sealed at its size: the host may map it without fearing SIGBUS.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, memfdSeals); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("memfd seals: %w", err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mmap: %w", err)
	}
	mp := &mapping{mem: mem, fd: fd}
	mp.ref()
	defer func() {
		if err != nil {
			mp.unref()
		}
	}()
	send, recv := mem[:cfg.SendSize], mem[cfg.SendSize:]
	InitRing(send)
	InitRing(recv)

	if err := g.establishGPADL(ctx, relid, gpadl, fd, size); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			g.teardownGPADL(relid, gpadl)
		}
	}()

	toHost, err := newEventfd()
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	toGuest, err := newEventfd()
	if err != nil {
		unix.Close(toHost)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	open := OpenChannel{Relid: relid, OpenID: relid, GPADL: gpadl, DownstreamOffset: uint32(cfg.SendSize / PageSize)}
	r, err := g.request(ctx, open, []int{toHost, toGuest}, MsgOpenResult, relid)
	if err == nil {
		if res := r.(OpenResult); res.OpenID != relid || res.Status != 0 {
			err = fmt.Errorf("%w: OPENCHANNEL_RESULT openid %d status %#x", ErrRefused, res.OpenID, res.Status)
		}
	}
	if err == nil && g.rescinded(e) {
		err = ErrRescinded
	}
	if err != nil {
		unix.Close(toHost)
		unix.Close(toGuest)
		return nil, err
	}

	w := wiring{dataReady: make(chan struct{}, 1), spaceReady: make(chan struct{}, 1)}
	sig := &eventfdSignaler{fd: toHost}
	w.signal = sig
	ch, err := newChannel(relid, e.offer.SubChannelIndex, send, recv, cfg.FrameSize, w, 0, cfg.Spin)
	if err != nil {
		// Our own fresh rings: cannot fail unless the host scribbled.
		sig.closeFd()
		unix.Close(toGuest)
		g.post(ctx, RelidMsg{MsgCloseChannel, relid}, nil)
		return nil, err
	}
	pump := startPump(toGuest, w)
	ch.onClose = func(c *Channel) { g.closeChannel(e, gpadl) }
	ch.release = func() {
		pump.stop()
		sig.closeFd()
		mp.unref()
	}
	return ch, nil
}

func (g *Guest) rescinded(e *guestOffer) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return e.rescinded
}

// establishGPADL posts GPADL_HEADER (with the memfd) and the GPADL_BODY
// messages, then waits for GPADL_CREATED.
func (g *Guest) establishGPADL(ctx context.Context, relid, gpadl uint32, fd, size int) error {
	pages := size / PageSize
	pfns := make([]uint64, pages)
	for i := range pfns {
		pfns[i] = uint64(i)
	}
	first := min(pages, gpadlHeaderPFNs)
	ch, err := g.expect(MsgGPADLCreated, gpadl)
	if err != nil {
		return err
	}
	err = g.post(ctx, GPADLHeader{Relid: relid, GPADL: gpadl, ByteCount: uint32(size), Pages: pages, PFNs: pfns[:first]}, []int{fd})
	for rest := pfns[first:]; err == nil && len(rest) > 0; {
		n := min(len(rest), gpadlBodyPFNs)
		err = g.post(ctx, GPADLBody{GPADL: gpadl, PFNs: rest[:n]}, nil)
		rest = rest[n:]
	}
	if err != nil {
		g.unexpect(MsgGPADLCreated, gpadl)
		return err
	}
	r, err := g.wait(ctx, ch, MsgGPADLCreated, gpadl)
	if err != nil {
		return err
	}
	if c := r.(GPADLCreated); c.Relid != relid || c.Status != 0 {
		return fmt.Errorf("%w: GPADL_CREATED relid %d status %#x (EDQUOT)", ErrRefused, c.Relid, c.Status)
	}
	return nil
}

// teardownGPADL posts GPADL_TEARDOWN and waits for GPADL_TORNDOWN.
func (g *Guest) teardownGPADL(relid, gpadl uint32) error {
	if g.failure() != nil {
		return nil
	}
	_, err := g.request(context.Background(), GPADLTeardown{Relid: relid, GPADL: gpadl}, nil, MsgGPADLTorndown, gpadl)
	return err
}

// closeChannel is vmbus_close_internal: CLOSECHANNEL unless rescinded,
// then the GPADL teardown; a rescinded channel is removed
// (RELID_RELEASED), another can be opened again.
func (g *Guest) closeChannel(e *guestOffer, gpadl uint32) {
	g.mu.Lock()
	e.ch = nil
	rescinded := e.rescinded
	if rescinded {
		g.remove(e)
	}
	g.mu.Unlock()
	if g.failure() != nil {
		return
	}
	ctx := context.Background()
	if !rescinded {
		g.post(ctx, RelidMsg{MsgCloseChannel, e.offer.Relid}, nil)
	}
	g.teardownGPADL(e.offer.Relid, gpadl)
	if rescinded {
		g.post(ctx, RelidMsg{MsgRelidReleased, e.offer.Relid}, nil)
	}
}

// Close closes the open channels (sub-channels before their primary),
// posts UNLOAD and waits for UNLOAD_RESPONSE if the version has it (WIN8_1
// and later), closes the socket and waits for the reader goroutine.
func (g *Guest) Close() error {
	var err error
	g.closeOnce.Do(func() {
		g.mu.Lock()
		var chans []*Channel
		for _, p := range g.primaries {
			for _, s := range p.subs {
				if s.ch != nil {
					chans = append(chans, s.ch)
				}
			}
			if p.ch != nil {
				chans = append(chans, p.ch)
			}
		}
		g.mu.Unlock()
		for _, c := range chans {
			c.Close()
		}
		if g.State() == Connected && g.version >= VersionWin8_1 {
			_, err = g.request(context.Background(), BareMsg{MsgUnload}, nil, MsgUnloadResponse, 0)
		}
		g.fail(fmt.Errorf("%w: the guest closed the connection", net.ErrClosed))
		g.wg.Wait()
	})
	return err
}

// failChannels fails every open channel when the connection ends.
func (g *Guest) failChannels(err error) {
	g.mu.Lock()
	var chans []*Channel
	for _, e := range g.relids {
		if e != nil && e.ch != nil {
			chans = append(chans, e.ch)
		}
	}
	g.mu.Unlock()
	for _, c := range chans {
		c.fail(fmt.Errorf("%w: %w", ErrPeerGone, err))
	}
}

// Done is closed when the connection has ended; Err then says why.
func (g *Guest) Done() <-chan struct{} { return g.done }

// Err is why the connection ended, nil while it is up.
func (g *Guest) Err() error { return g.failure() }
