// Package vmbus implements the Hyper-V VMBus ring buffer and connection
// protocol between two processes. A Ring allows one reader and one writer
// goroutine; Close unblocks both and later calls return [ErrClosed].
//
// Layers, bottom up: [Ring] (one ring in shared memory), [Channel] (an
// outbound and an inbound ring in one memfd, with eventfd signals, as a
// framed [net.Conn]), and the connection protocol of docs/vmbus.md
// section 3 over a unix SOCK_SEQPACKET socket: [Guest] (negotiates,
// opens channels over memory it creates) and [Host] (answers, maps the
// guest's memory, hands opened channels to Accept).
//
// # Ring
//
// A [Ring] is a view of one ring's shared memory, a plain []byte (usually an
// mmap of a memfd shared with the peer process): a 4096-byte header page
// (write_index, read_index, interrupt_mask, pending_send_sz, feature_bits)
// followed by the circular data area, exactly the layout of Linux's
// struct hv_ring_buffer (docs/vmbus.md). The memory is owned by the
// caller; the Ring never allocates it, never unmaps it, and never touches
// bytes outside it.
//
// Each ring has one writer end and one reader end, normally in different
// processes. The writer owns write_index and pending_send_sz, the reader owns
// read_index and interrupt_mask. A process usually uses a Ring for one role
// only (outbound ring: writer methods; inbound ring: reader methods); tests
// and in-process pipes use both on one Ring. Writer methods (TryWrite, Write,
// Writable) may be called by one goroutine, reader methods (Peek, Next,
// NextView, Commit, TryRead, TryReadRaw, Read, Readable, WaitReadable,
// BeginRead, EndRead) by another; Close by any goroutine.
//
// Header words are read and written with sync/atomic (sequentially
// consistent, which covers every barrier of the kernel's ring code): the
// writer copies a packet, then stores write_index; the reader loads
// write_index, then copies the packet, then stores read_index. Packet bytes
// are plain copies.
//
// # Signals
//
// The writer signals the reader ([Config].NotifyReader) only on an
// empty->non-empty transition while the reader has not set interrupt_mask;
// the reader signals a blocked writer ([Config].NotifyWriter) only when the
// space it freed crosses the writer's pending_send_sz (spec section 2).
// Write and Read block on [Config].SpaceReady and [Config].DataReady, the
// channels the peer's signals arrive on, with a bounded poll as a safety net;
// both return when their context is done or the Ring is closed. [Doorbell]
// connects the two in one process and counts signals.
//
// # Hostile peer
//
// Half of the shared memory belongs to the peer and may change at any time.
// Every index, length and offset read from it is checked before use (spec
// section 4): a lie is a [*ProtocolError] (matching [ErrProtocol]), the ring
// is left as it was (read_index is not advanced), and nothing outside the
// ring memory is read or written. The Ring does not remember the error; a
// channel should treat it as fatal.
//
// # Connection
//
// A Guest and a Host each run one reader goroutine for the control socket,
// started by [NewGuest] or [NewHost] and waited for by Close; every open
// Channel has one more, which reads its eventfd and wakes the Channel's
// reader and writer, stopped by the Channel's Close. Every message from the
// peer is decoded by [ParseMessage] (lengths, types, relids: a
// [*MessageError] matching [ErrBadMessage]) and then checked against the
// connection's state (known relid and GPADL, right direction, descriptors
// attached where the protocol passes them and nowhere else); a violation
// ends the connection with that error and fails every channel. Waits for
// replies are bounded ([GuestConfig].Timeout, [ErrTimeout]); the peer going
// away (socket EOF, [ErrPeerGone]) fails every channel, whose Read still
// returns what the ring holds first. Host-side mappings of the guest's
// memfd stay valid until both the GPADL is torn down and the Channel is
// closed; the guest seals the memfd against shrinking and the host refuses
// one that is not sealed.
//
// Departures from the kernel, all in docs/vmbus.md:
// messages travel on the socket, memory and eventfds as SCM_RIGHTS; the
// post retry policy (100 tries, 1 µs doubling to 262,144 µs) applies to
// socket buffer shortage; bad messages end the connection instead of being
// dropped; memfd seals (not in the spec).
package vmbus
