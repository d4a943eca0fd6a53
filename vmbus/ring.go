package vmbus

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Layout constants (docs/vmbus.md).
const (
	// PageSize is the page size of the ring layout.
	PageSize = 4096
	// HeaderSize is the size of the header page in front of the data area.
	HeaderSize = PageSize
	// MinRingSize is the smallest ring: the header page and one data page.
	MinRingSize = 2 * PageSize
	// MaxRingSize is the largest ring pagewire accepts.
	MaxRingSize = 1 << 30
	// DescriptorSize is the size of struct vmpacket_descriptor.
	DescriptorSize = 16
	// TrailerSize is the size of the previous-indices word after a packet.
	TrailerSize = 8
	// MaxPacketLen is the largest packet len8 can describe: descriptor,
	// header extension, payload and padding, without the trailer.
	MaxPacketLen = 0xffff * 8
	// DefaultMaxPacketSize is the default [Config].MaxPacketSize, Linux's
	// VMBUS_DEFAULT_MAX_PKT_SIZE.
	DefaultMaxPacketSize = 4096
	// FlagCompletionRequested is VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED.
	FlagCompletionRequested = 1
	// FeaturePendingSendSize is bit 0 of feature_bits
	// (feat_pending_send_sz).
	FeaturePendingSendSize = 1
)

// Header word offsets in the header page.
const (
	offWriteIndex    = 0
	offReadIndex     = 4
	offInterruptMask = 8
	offPendingSendSz = 12
	offFeatureBits   = 64
)

// PacketType is enum vmbus_packet_type.
type PacketType uint16

// Packet types.
const (
	PacketInvalid                   PacketType = 0x0
	PacketSynch                     PacketType = 0x1
	PacketAddXferPageset            PacketType = 0x2
	PacketRmXferPageset             PacketType = 0x3
	PacketEstablishGPADL            PacketType = 0x4
	PacketTeardownGPADL             PacketType = 0x5
	PacketDataInband                PacketType = 0x6
	PacketDataUsingXferPages        PacketType = 0x7
	PacketDataUsingGPADL            PacketType = 0x8
	PacketDataUsingGPADirect        PacketType = 0x9
	PacketCancelRequest             PacketType = 0xa
	PacketCompletion                PacketType = 0xb
	PacketDataUsingAdditionalPacket PacketType = 0xc
	PacketAdditionalData            PacketType = 0xd
)

// Descriptor is a packet's struct vmpacket_descriptor as read from a ring,
// after validation.
type Descriptor struct {
	Type PacketType
	// Offset8 is the offset of the payload from the start of the packet, in
	// 8-byte units (DPDK's hlen).
	Offset8 uint16
	// Len8 is the packet length without the trailer, in 8-byte units
	// (DPDK's tlen).
	Len8    uint16
	Flags   uint16
	TransID uint64
}

// Len is the packet's length in bytes without the trailer.
func (d Descriptor) Len() int { return int(d.Len8) * 8 }

// PayloadLen is the payload length in bytes, the sender's padding included.
func (d Descriptor) PayloadLen() int { return (int(d.Len8) - int(d.Offset8)) * 8 }

// Header is what a writer puts in front of a payload.
type Header struct {
	Type    PacketType
	Flags   uint16
	TransID uint64
	// Ext is the type-specific header that follows the descriptor (GPA
	// ranges, transfer-page ranges), written verbatim; its length must be a
	// multiple of 8. Offset8 becomes (16+len(Ext))/8.
	Ext []byte
}

// Config configures a Ring. The zero value is usable: 4096-byte packets,
// no signals, polling waits.
type Config struct {
	// MaxPacketSize bounds len8*8 (descriptor, header extension, payload
	// and padding) of packets read and written. 0 means
	// DefaultMaxPacketSize; at most MaxPacketLen.
	MaxPacketSize int

	// NotifyReader is signaled by the writer when the reader needs it
	// (docs/vmbus.md). Nil: no signals are sent.
	NotifyReader Signaler
	// NotifyWriter is signaled by the reader when the space it freed lets
	// a blocked writer continue (docs/vmbus.md). Nil: no signals are sent.
	NotifyWriter Signaler

	// DataReady delivers the writer's signals to this end's reader: Read
	// and WaitReadable block on it. Nil: they poll.
	DataReady <-chan struct{}
	// SpaceReady delivers the reader's signals to this end's writer: Write
	// blocks on it. Nil: it polls.
	SpaceReady <-chan struct{}

	// PollInterval bounds how long a blocked Read, WaitReadable or Write
	// sleeps without looking at the ring when its Ready channel is set
	// (a safety net against a peer that does not signal). 0 means 10ms;
	// negative means rely on signals alone. Without a Ready channel, or
	// for a writer whose ring lacks FeaturePendingSendSize, waits poll
	// with a backoff from 8µs up to PollInterval (10ms if not positive).
	PollInterval time.Duration

	// Spin is how long a Read, WaitReadable or Write that would block keeps
	// looking at the ring (yielding the processor in between) before it
	// waits for a signal; 0 means not at all. The reader spins with
	// interrupt_mask set and the writer before it stores pending_send_sz,
	// so a peer caught while spinning is not signaled: between processes,
	// a signal and the wake-up it causes cost tens of microseconds.
	Spin time.Duration
}

const defaultPoll = 10 * time.Millisecond

// cacheLine pads the two ends' private state apart.
type cacheLine [64]byte

// Ring is one VMBus ring buffer over caller-owned shared memory. See the
// package documentation for roles and goroutines.
type Ring struct {
	mem    []byte
	data   []byte // mem[HeaderSize:]
	size   uint32 // len(data), the kernel's ring_datasize
	maxPkt uint32 // len8*8 limit
	cfg    Config
	poll   time.Duration

	windex, rindex, imask, pending, features *uint32

	closed    atomic.Bool
	done      chan struct{}
	closeOnce sync.Once

	_  cacheLine
	wr writerState
	_  cacheLine
	rd readerState
	_  cacheLine
}

type writerState struct {
	priv       uint32 // next write offset: the write_index this end publishes
	lastR      uint32 // last valid read_index seen
	pendingSet bool   // this end stored pending_send_sz != 0
	timer      *time.Timer
	blocks     uint64 // times Write stored pending_send_sz
	spin       spinState
}

type readerState struct {
	priv      uint32 // priv_read_index: next packet
	committed uint32 // the read_index this end last stored
	masked    bool   // this end stored interrupt_mask = 1
	timer     *time.Timer
	unmasks   uint64 // times WaitReadable cleared interrupt_mask
	sleeps    uint64 // times WaitReadable blocked
	spin      spinState
}

// checkMem validates ring memory: size and alignment.
func checkMem(mem []byte) error {
	n := len(mem)
	switch {
	case n < MinRingSize:
		return fmt.Errorf("%w: ring size %d below %d", ErrInvalid, n, MinRingSize)
	case n > MaxRingSize:
		return fmt.Errorf("%w: ring size %d above %d", ErrInvalid, n, MaxRingSize)
	case n%PageSize != 0:
		return fmt.Errorf("%w: ring size %d not a multiple of %d", ErrInvalid, n, PageSize)
	case uintptr(unsafe.Pointer(unsafe.SliceData(mem)))%8 != 0:
		return fmt.Errorf("%w: ring memory not 8-byte aligned", ErrInvalid)
	}
	return nil
}

func word(mem []byte, off int) *uint32 {
	return (*uint32)(unsafe.Pointer(&mem[off]))
}

// InitRing initialises a ring's header as Linux's hv_ringbuffer_init does:
// indices, interrupt_mask and pending_send_sz 0, feature_bits
// FeaturePendingSendSize, the rest of the header page zero. The data area is
// left alone. Only the end that owns the memory calls it, before the peer
// attaches.
func InitRing(mem []byte) error {
	if err := checkMem(mem); err != nil {
		return err
	}
	clear(mem[16:offFeatureBits])
	clear(mem[offFeatureBits+4 : HeaderSize])
	atomic.StoreUint32(word(mem, offWriteIndex), 0)
	atomic.StoreUint32(word(mem, offReadIndex), 0)
	atomic.StoreUint32(word(mem, offInterruptMask), 0)
	atomic.StoreUint32(word(mem, offPendingSendSz), 0)
	atomic.StoreUint32(word(mem, offFeatureBits), FeaturePendingSendSize)
	return nil
}

// NewRing attaches to the ring in mem (header page and data area,
// len(mem) is the kernel's ring_size) without changing it. mem must be a
// multiple of PageSize between MinRingSize and MaxRingSize, 8-byte aligned,
// and stay valid until the Ring is no longer used. The writer continues at
// write_index, the reader at read_index. The header is not checked here but
// at every use: a write_index or read_index that is out of the data area or
// not a multiple of 8 makes the writes or reads fail with a
// [*ProtocolError] (Writable and Readable check a ring before use).
func NewRing(mem []byte, cfg Config) (*Ring, error) {
	if err := checkMem(mem); err != nil {
		return nil, err
	}
	maxPkt := cfg.MaxPacketSize
	if maxPkt == 0 {
		maxPkt = DefaultMaxPacketSize
	}
	if maxPkt < DescriptorSize || maxPkt > MaxPacketLen {
		return nil, fmt.Errorf("%w: MaxPacketSize %d not in [%d, %d]", ErrInvalid, cfg.MaxPacketSize, DescriptorSize, MaxPacketLen)
	}
	r := &Ring{
		mem:      mem,
		data:     mem[HeaderSize:],
		size:     uint32(len(mem) - HeaderSize),
		maxPkt:   uint32(maxPkt) &^ 7,
		cfg:      cfg,
		poll:     cfg.PollInterval,
		windex:   word(mem, offWriteIndex),
		rindex:   word(mem, offReadIndex),
		imask:    word(mem, offInterruptMask),
		pending:  word(mem, offPendingSendSz),
		features: word(mem, offFeatureBits),
		done:     make(chan struct{}),
	}
	if r.poll == 0 {
		r.poll = defaultPoll
	}
	// The indices are checked when used: a bad write_index fails this
	// end's writes, a bad read_index its reads.
	w, rd := atomic.LoadUint32(r.windex), atomic.LoadUint32(r.rindex)
	r.wr.priv, r.wr.lastR = w, rd
	r.rd.priv, r.rd.committed = rd, rd
	return r, nil
}

// DataSize is the size of the data area, the kernel's ring_datasize.
func (r *Ring) DataSize() int { return int(r.size) }

// MaxPacketSize is the configured limit on len8*8.
func (r *Ring) MaxPacketSize() int { return int(r.maxPkt) }

// Close releases blocked Read, WaitReadable and Write calls with ErrClosed;
// later calls return ErrClosed. It does not touch or unmap the ring memory
// (a released Write clears the pending_send_sz it had set; a blocked
// WaitReadable has interrupt_mask clear). Close is idempotent.
func (r *Ring) Close() error {
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		close(r.done)
	})
	return nil
}

func (r *Ring) validIndex(i uint32) bool { return i < r.size && i&7 == 0 }

// dist is the distance from a forward to b in the circular data area.
func (r *Ring) dist(a, b uint32) uint32 {
	if b >= a {
		return b - a
	}
	return r.size - a + b
}

// add advances an index by n (n <= size).
func (r *Ring) add(i, n uint32) uint32 {
	i += n
	if i >= r.size {
		i -= r.size
	}
	return i
}

// copyTo copies src into the data area at off (off < size, len(src) <= size),
// wrapping at the end, and returns the offset after it.
func (r *Ring) copyTo(off uint32, src []byte) uint32 {
	n := copy(r.data[off:], src)
	if n < len(src) {
		copy(r.data, src[n:])
	}
	return r.add(off, uint32(len(src)))
}

// copyFrom fills dst from the data area at off, wrapping at the end.
func (r *Ring) copyFrom(dst []byte, off uint32) {
	n := copy(dst, r.data[off:])
	if n < len(dst) {
		copy(dst[n:], r.data)
	}
}

// zeroAt writes n zero bytes at off, wrapping, and returns the offset after.
func (r *Ring) zeroAt(off, n uint32) uint32 {
	end := off + n
	if end <= r.size {
		clear(r.data[off:end])
	} else {
		clear(r.data[off:])
		clear(r.data[:end-r.size])
	}
	return r.add(off, n)
}

// wait blocks until ready delivers, the poll time d passes (d <= 0: no
// timeout), ctx is done, or the Ring is closed.
func (r *Ring) wait(ctx context.Context, ready <-chan struct{}, t **time.Timer, d time.Duration) error {
	var tc <-chan time.Time
	if d > 0 {
		if *t == nil {
			*t = time.NewTimer(d)
		} else {
			(*t).Reset(d)
		}
		tc = (*t).C
	}
	select {
	case <-ready:
	case <-tc:
	case <-ctx.Done():
		return ctx.Err()
	case <-r.done:
		return ErrClosed
	}
	return nil
}

// spinState makes spinning adaptive for one end: after a spin that found
// nothing, the next 2^misses-1 waits do not spin (misses up to 3), so a
// peer that is slow, or a machine too busy to run it, costs at most one
// spin in 8 waits. (Backing off further, up to 1 in 64, let both ends of a
// ping-pong settle into sleeping: 15-30µs round trips instead of 1.5µs.)
type spinState struct {
	misses uint8
	skip   uint8
}

// spin calls ready until it reports true or an error, the Ring is closed,
// ctx is done or cfg.Spin has passed; false when it gave up (or skipped
// this spin, see spinState).
func (r *Ring) spin(ctx context.Context, st *spinState, ready func() (bool, error)) (bool, error) {
	if st.skip > 0 {
		st.skip--
		return false, nil
	}
	start := time.Now()
	for i := 0; ; i++ {
		ok, err := ready()
		if ok {
			st.misses = 0
		}
		if ok || err != nil {
			return ok, err
		}
		if r.closed.Load() {
			return false, ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return false, err
		}
		if i&15 == 15 && time.Since(start) > r.cfg.Spin {
			st.misses = min(st.misses+1, 3)
			st.skip = 1<<st.misses - 1
			return false, nil
		}
		runtime.Gosched()
	}
}

// backoff doubles a polling delay up to the ring's limit.
func (r *Ring) backoff(d time.Duration) time.Duration {
	limit := r.poll
	if limit <= 0 {
		limit = defaultPoll
	}
	if d <= 0 {
		return 8 * time.Microsecond
	}
	d *= 2
	if d > limit {
		d = limit
	}
	return d
}
