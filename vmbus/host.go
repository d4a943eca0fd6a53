package vmbus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// HostConfig configures the host end of a connection. The zero value
// accepts every known version and offers nothing.
type HostConfig struct {
	// Versions the host accepts. Default: [Versions].
	Versions []uint32
	// Offers are the channels offered, in this order; an offer whose
	// IfType and IfInstance match an earlier one is its sub-channel and
	// needs a non-zero SubChannelIndex. Relids must be unique, 1 to
	// MaxRelid-1.
	Offers []Offer
	// Timeout bounds the host's waits. Default 10s.
	Timeout time.Duration
	// MaxRingSize bounds each ring a guest may open; default 64 MiB.
	MaxRingSize int
}

// Host is the host end of one guest's connection: it answers version
// negotiation and offer requests, maps the guest's GPADLs and hands each
// channel the guest opens to Accept. Its methods may be called from any
// goroutine. Close closes the accepted channels still open and the socket
// and waits for the reader goroutine.
type Host struct {
	*link
	cfg     HostConfig
	version uint32

	mu       sync.Mutex
	offers   map[uint32]*hostOffer
	gpadls   map[uint32]*hostGPADL
	accepted chan *Channel
	queue    []*Channel // opened, not yet accepted

	closeOnce sync.Once
}

type hostOffer struct {
	offer      Offer
	ch         *Channel
	rescinded  bool
	awaitClose bool // the host closed after the guest's end of stream; CLOSECHANNEL is due
}

type hostGPADL struct {
	relid uint32
	size  uint32
	pages int
	next  int // PFNs received so far
	fd    int // until complete
	mp    *mapping
}

// NewHost runs the host side of the connection protocol on uc, a
// SOCK_SEQPACKET unix socket, which it owns from now on.
func NewHost(uc *net.UnixConn, cfg HostConfig) (*Host, error) {
	if len(cfg.Versions) == 0 {
		cfg.Versions = Versions
	}
	if cfg.MaxRingSize == 0 {
		cfg.MaxRingSize = 64 << 20
	}
	h := &Host{link: newLink(uc, cfg.Timeout), cfg: cfg, offers: map[uint32]*hostOffer{},
		gpadls: map[uint32]*hostGPADL{}, accepted: make(chan *Channel, 1)}
	for _, o := range cfg.Offers {
		if o.Relid == 0 || o.Relid >= MaxRelid || h.offers[o.Relid] != nil {
			uc.Close()
			return nil, fmt.Errorf("%w: offer relid %d", ErrInvalid, o.Relid)
		}
		h.offers[o.Relid] = &hostOffer{offer: o}
	}
	h.onFail = h.failAll
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.readLoop(h.handle)
	}()
	return h, nil
}

// Version is the negotiated version, 0 before.
func (h *Host) Version() uint32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.version
}

// handle is the host's message dispatch.
func (h *Host) handle(m Message, fds []int) error {
	want := 0
	switch m.Type() {
	case MsgGPADLHeader:
		want = 1
	case MsgOpenChannel:
		want = 2
	}
	if len(fds) != want {
		closeFDs(fds)
		return &MessageError{Type: m.Type(), Field: "fds", Value: uint64(len(fds)), Err: fmt.Errorf("want %d descriptors", want)}
	}
	if ini, ok := m.(Initiate); ok {
		return h.onInitiate(ini)
	}
	if h.State() != Connected {
		closeFDs(fds)
		return unexpected(m, "host", h.State())
	}
	switch m := m.(type) {
	case BareMsg:
		switch m.Kind {
		case MsgRequestOffers:
			return h.onRequestOffers()
		case MsgUnload:
			h.failAll(fmt.Errorf("%w: the guest unloaded", ErrPeerGone))
			return h.post(context.Background(), BareMsg{MsgUnloadResponse}, nil)
		}
	case GPADLHeader:
		return h.onGPADLHeader(m, fds[0])
	case GPADLBody:
		return h.onGPADLBody(m)
	case GPADLTeardown:
		return h.onGPADLTeardown(m)
	case OpenChannel:
		return h.onOpen(m, fds[0], fds[1])
	case RelidMsg:
		switch m.Kind {
		case MsgCloseChannel:
			return h.onClose(m.Relid)
		case MsgRelidReleased:
			return nil
		}
	}
	return unexpected(m, "host", h.State())
}

func (h *Host) onInitiate(m Initiate) error {
	ok := knownVersion(m.Version) && slices.Contains(h.cfg.Versions, m.Version)
	if h.State() == Connected {
		return unexpected(m, "host", Connected)
	}
	if ok {
		h.mu.Lock()
		h.version = m.Version
		h.mu.Unlock()
		h.state.Store(int32(Connected))
	} else {
		h.state.Store(int32(Connecting))
	}
	return h.post(context.Background(), VersionResponse{Supported: ok, ConnID: 1}, nil)
}

func (h *Host) onRequestOffers() error {
	ctx := context.Background()
	for _, o := range h.cfg.Offers {
		h.mu.Lock()
		gone := h.offers[o.Relid].rescinded
		h.mu.Unlock()
		if gone {
			continue
		}
		if err := h.post(ctx, o, nil); err != nil {
			return err
		}
	}
	return h.post(ctx, BareMsg{MsgAllOffersDelivered}, nil)
}

// offer returns the offer relid, or a *MessageError for msg.
func (h *Host) offer(t MsgType, relid uint32) (*hostOffer, error) {
	o := h.offers[relid]
	if o == nil || o.rescinded {
		return nil, &MessageError{Type: t, Field: "child_relid", Value: uint64(relid), Err: errors.New("not offered")}
	}
	return o, nil
}

func (h *Host) onGPADLHeader(m GPADLHeader, fd int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	bad := func(field string, v uint64, why string) error {
		unix.Close(fd)
		return &MessageError{Type: MsgGPADLHeader, Field: field, Value: v, Err: errors.New(why)}
	}
	if _, err := h.offer(MsgGPADLHeader, m.Relid); err != nil {
		unix.Close(fd)
		return err
	}
	if h.gpadls[m.GPADL] != nil {
		return bad("gpadl", uint64(m.GPADL), "handle in use")
	}
	if m.ByteOffset != 0 || uint64(m.ByteCount) != uint64(m.Pages)*PageSize {
		return bad("byte_count", uint64(m.ByteCount), fmt.Sprintf("want %d pages from offset 0", m.Pages))
	}
	if m.Pages < 2*MinRingSize/PageSize || m.Pages > 2*h.cfg.MaxRingSize/PageSize {
		return bad("range_buflen", uint64(m.Pages), "not two rings of allowed size")
	}
	for i, p := range m.PFNs {
		if p != uint64(i) {
			return bad("pfn", p, fmt.Sprintf("PFN %d must be the page index %d", i, i))
		}
	}
	g := &hostGPADL{relid: m.Relid, size: m.ByteCount, pages: m.Pages, next: len(m.PFNs), fd: fd}
	h.gpadls[m.GPADL] = g
	if g.next == g.pages {
		return h.gpadlComplete(m.GPADL, g)
	}
	return nil
}

func (h *Host) onGPADLBody(m GPADLBody) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	g := h.gpadls[m.GPADL]
	if g == nil || g.mp != nil {
		return &MessageError{Type: MsgGPADLBody, Field: "gpadl", Value: uint64(m.GPADL), Err: errors.New("no GPADL_HEADER awaits a body")}
	}
	if len(m.PFNs) > g.pages-g.next {
		return &MessageError{Type: MsgGPADLBody, Field: "length", Value: uint64(len(m.PFNs)), Err: errors.New("more PFNs than the range")}
	}
	for _, p := range m.PFNs {
		if p != uint64(g.next) {
			return &MessageError{Type: MsgGPADLBody, Field: "pfn", Value: p, Err: fmt.Errorf("want page index %d", g.next)}
		}
		g.next++
	}
	if g.next == g.pages {
		return h.gpadlComplete(m.GPADL, g)
	}
	return nil
}

// gpadlComplete maps the memfd and answers GPADL_CREATED; h.mu held.
func (h *Host) gpadlComplete(handle uint32, g *hostGPADL) error {
	status := uint32(0)
	var st unix.Stat_t
	fd := g.fd
	g.fd = -1
	seals, serr := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size < int64(g.size) {
		status = 1 // not a regular file of the size promised: mapping it could SIGBUS
	} else if serr != nil || seals&unix.F_SEAL_SHRINK == 0 {
		status = 3 // the guest could shrink it under our mapping: SIGBUS
	} else if mem, err := unix.Mmap(fd, 0, int(g.size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		status = 2
	} else {
		g.mp = &mapping{mem: mem, fd: fd}
		g.mp.ref()
	}
	if status != 0 {
		unix.Close(fd)
		delete(h.gpadls, handle)
	}
	return h.post(context.Background(), GPADLCreated{Relid: g.relid, GPADL: handle, Status: status}, nil)
}

func (h *Host) onGPADLTeardown(m GPADLTeardown) error {
	h.mu.Lock()
	g := h.gpadls[m.GPADL]
	if g == nil || g.mp == nil || g.relid != m.Relid {
		h.mu.Unlock()
		return &MessageError{Type: MsgGPADLTeardown, Field: "gpadl", Value: uint64(m.GPADL), Err: errors.New("no such GPADL for this relid")}
	}
	delete(h.gpadls, m.GPADL)
	h.mu.Unlock()
	g.mp.unref() // an open channel keeps its own reference
	return h.post(context.Background(), GPADLTorndown{GPADL: m.GPADL}, nil)
}

// onOpen validates the rings the guest created and opens the channel.
func (h *Host) onOpen(m OpenChannel, toHost, toGuest int) error {
	fail := func(status uint32, err error) error {
		unix.Close(toHost)
		unix.Close(toGuest)
		if perr := h.post(context.Background(), OpenResult{Relid: m.Relid, OpenID: m.OpenID, Status: status}, nil); perr != nil {
			return perr
		}
		return err
	}
	h.mu.Lock()
	o, err := h.offer(MsgOpenChannel, m.Relid)
	if err != nil {
		h.mu.Unlock()
		return fail(1, err)
	}
	if o.ch != nil {
		h.mu.Unlock()
		return fail(1, &MessageError{Type: MsgOpenChannel, Field: "child_relid", Value: uint64(m.Relid), Err: errors.New("already open")})
	}
	g := h.gpadls[m.GPADL]
	if g == nil || g.mp == nil || g.relid != m.Relid {
		h.mu.Unlock()
		return fail(1, &MessageError{Type: MsgOpenChannel, Field: "ringbuffer_gpadlhandle", Value: uint64(m.GPADL), Err: errors.New("no such GPADL for this relid")})
	}
	send := int(m.DownstreamOffset) * PageSize
	if m.DownstreamOffset < MinRingSize/PageSize || send > int(g.size)-MinRingSize || send > h.cfg.MaxRingSize || int(g.size)-send > h.cfg.MaxRingSize {
		h.mu.Unlock()
		return fail(1, &MessageError{Type: MsgOpenChannel, Field: "downstream_ringbuffer_pageoffset", Value: uint64(m.DownstreamOffset),
			Err: fmt.Errorf("does not split %d bytes into two rings", g.size)})
	}
	for _, fd := range []int{toHost, toGuest} {
		if !isEventfd(fd) {
			h.mu.Unlock()
			return fail(1, &MessageError{Type: MsgOpenChannel, Field: "fds", Value: uint64(fd), Err: errors.New("not an eventfd")})
		}
		// The guest chose the flags: a blocking eventfd would let it hang
		// the host's signals (counter near its maximum) and the pump.
		if err := unix.SetNonblock(fd, true); err != nil {
			h.mu.Unlock()
			return fail(1, nil)
		}
	}
	mp := g.mp
	mp.ref()
	h.mu.Unlock()

	w := wiring{dataReady: make(chan struct{}, 1), spaceReady: make(chan struct{}, 1)}
	sig := &eventfdSignaler{fd: toGuest}
	w.signal = sig
	// The host writes the guest's inbound ring and reads its outbound one.
	ch, err := newChannel(m.Relid, o.offer.SubChannelIndex, mp.mem[send:], mp.mem[:send], DefaultFrameSize, w, 0, DefaultSpin)
	if err != nil {
		mp.unref()
		return fail(1, nil) // bad ring headers: refuse the open, keep the connection
	}
	pump := startPump(toHost, w)
	ch.onClose = func(c *Channel) { h.closed(o, c) }
	ch.release = func() {
		pump.stop()
		sig.closeFd()
		mp.unref()
	}
	h.mu.Lock()
	o.ch = ch
	h.queue = append(h.queue, ch)
	h.mu.Unlock()
	if err := h.post(context.Background(), OpenResult{Relid: m.Relid, OpenID: m.OpenID}, nil); err != nil {
		return err
	}
	h.pushAccept()
	return nil
}

// pushAccept moves queued channels to Accept without blocking.
func (h *Host) pushAccept() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(h.queue) > 0 {
		select {
		case h.accepted <- h.queue[0]:
			h.queue = h.queue[1:]
		default:
			return
		}
	}
}

// memfdSeals are the seals a guest puts on its ring memfd and the host
// requires (F_SEAL_SHRINK): the file can never become shorter than the
// host's mapping, whose pages would then SIGBUS.
const memfdSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

func isEventfd(fd int) bool {
	p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	return err == nil && p == "anon_inode:[eventfd]"
}

// onClose is the guest's CLOSECHANNEL: its end-of-stream frame is in the
// ring already; the channel's writes fail and Read ends after draining.
func (h *Host) onClose(relid uint32) error {
	h.mu.Lock()
	o := h.offers[relid]
	var ch *Channel
	ok := false
	if o != nil {
		ch = o.ch
		switch {
		case ch != nil:
			o.ch = nil // the guest may open it again
			ok = true
		case o.awaitClose:
			o.awaitClose = false
			ok = true
		case o.rescinded:
			ok = true // the guest closed while the host rescinded
		}
	}
	h.mu.Unlock()
	if !ok {
		return &MessageError{Type: MsgCloseChannel, Field: "child_relid", Value: uint64(relid), Err: errors.New("not open")}
	}
	if ch != nil {
		ch.fail(fmt.Errorf("%w: the guest closed channel %d", ErrPeerGone, relid))
	}
	return nil
}

// closed is the host's part of a Channel's Close (which holds the read
// lock, so rfin is stable): a channel the guest has not closed is
// rescinded, so that the guest's writers stop.
func (h *Host) closed(o *hostOffer, c *Channel) {
	h.mu.Lock()
	rescind := false
	if o.ch == c {
		o.ch = nil
		if c.rfin { // the guest is closing it: CLOSECHANNEL follows its end of stream
			o.awaitClose = true
		} else {
			o.rescinded = true
			rescind = h.failure() == nil
		}
	}
	h.mu.Unlock()
	if rescind {
		h.post(context.Background(), RelidMsg{MsgRescindOffer, o.offer.Relid}, nil)
	}
}

// Rescind withdraws the offer relid (RESCIND_CHANNELOFFER); an open
// channel of it fails with ErrRescinded.
func (h *Host) Rescind(relid uint32) error {
	h.mu.Lock()
	o := h.offers[relid]
	if o == nil || o.rescinded {
		h.mu.Unlock()
		return fmt.Errorf("%w: relid %d", ErrUnknownChannel, relid)
	}
	o.rescinded = true
	ch := o.ch
	h.mu.Unlock()
	if ch != nil {
		ch.fail(fmt.Errorf("%w: relid %d", ErrRescinded, relid))
	}
	return h.post(context.Background(), RelidMsg{MsgRescindOffer, relid}, nil)
}

// Accept returns the next channel the guest opened. It returns the
// connection's error when the connection has ended and net.ErrClosed
// after Close.
func (h *Host) Accept(ctx context.Context) (*Channel, error) {
	h.pushAccept()
	select {
	case c := <-h.accepted:
		h.pushAccept()
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-h.done:
		h.pushAccept()
		select {
		case c := <-h.accepted:
			return c, nil
		default:
		}
		return nil, h.failure()
	}
}

// failAll fails every open channel when the connection ends.
func (h *Host) failAll(err error) {
	h.mu.Lock()
	var chans []*Channel
	for _, o := range h.offers {
		if o.ch != nil {
			chans = append(chans, o.ch)
		}
	}
	h.mu.Unlock()
	for _, c := range chans {
		c.fail(fmt.Errorf("%w: %v", ErrPeerGone, err))
	}
}

// Close closes the channels not yet accepted, ends the connection and
// waits for the reader goroutine; it unmaps GPADLs no channel uses.
// Channels returned by Accept stay usable until their own Close (their
// peer is gone).
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		h.fail(fmt.Errorf("%w: the host closed the connection", net.ErrClosed))
		h.wg.Wait()
		h.mu.Lock()
		q := h.queue
		h.queue = nil
		h.mu.Unlock()
	drain:
		for {
			select {
			case c := <-h.accepted:
				q = append(q, c)
			default:
				break drain
			}
		}
		for _, c := range q {
			c.Close()
		}
		h.mu.Lock()
		for k, g := range h.gpadls {
			if g.mp != nil {
				g.mp.unref()
			} else if g.fd >= 0 {
				unix.Close(g.fd)
			}
			delete(h.gpadls, k)
		}
		h.mu.Unlock()
	})
	return nil
}

// Done is closed when the connection has ended; Err then says why.
func (h *Host) Done() <-chan struct{} { return h.done }

// Err is why the connection ended, nil while it is up.
func (h *Host) Err() error { return h.failure() }

// Listener accepts guest connections on a unix SOCK_SEQPACKET socket.
type Listener struct {
	ul  *net.UnixListener
	cfg HostConfig
}

// Listen listens on the unix socket path; a stale socket file is not
// removed (the caller decides).
func Listen(path string, cfg HostConfig) (*Listener, error) {
	ul, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, err
	}
	return &Listener{ul: ul, cfg: cfg}, nil
}

// Accept waits for a guest and starts its Host.
func (l *Listener) Accept() (*Host, error) {
	uc, err := l.ul.AcceptUnix()
	if err != nil {
		return nil, err
	}
	return NewHost(uc, l.cfg)
}

// Addr is the socket's address.
func (l *Listener) Addr() net.Addr { return l.ul.Addr() }

// Close stops listening and removes the socket file; connected Hosts are
// not affected.
func (l *Listener) Close() error { return l.ul.Close() }
