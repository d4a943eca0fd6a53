package engine

import (
	"fmt"
	"time"

	"github.com/pagewire/pagewire/core/wire"
	"github.com/pagewire/pagewire/sdk"
)

// Defaults of a transfer.
const (
	DefaultChannels         = 4
	DefaultPageSize         = 4096
	DefaultPacketPages      = 128 // QEMU: MULTIFD_PACKET_SIZE / page size
	DefaultHandshakeTimeout = 30 * time.Second
)

// SenderConfig configures a [Sender]. The zero value is usable: four
// channels, 128 pages of 4 KiB per packet, nocomp.
type SenderConfig struct {
	Channels    int        // multifd channels, 1..255
	PageSize    int        // bytes per page, a power of two
	PacketPages int        // most pages per packet
	Method      sdk.Method // nil is nocomp
	Level       int        // compression level; 0 is the method's default
	UUID        [16]byte   // must match the receiver's
	// Dialect is how zero pages and syncs travel: [Dialect10] (the
	// default: zero pages as offsets in packets) or [Dialect72] (zero
	// pages as records on the control channel, QEMU 7.2's way).
	Dialect Dialect
	// Timeout bounds every single write and the wait for the receiver's
	// final acknowledgement; 0 means no bound (TCP keepalive still
	// notices a vanished host).
	Timeout time.Duration
	// HandshakeTimeout bounds opening the transfer; 0 is 30s.
	HandshakeTimeout time.Duration
	// DeltaCache, when not 0, keeps the last version of up to this many
	// bytes of sent pages (as QEMU's xbzrle-cache-size), so that a page
	// sent again goes as its differences from that version when they are
	// small (a quarter of a page at most). pagewire's protocol with the
	// 10.0 dialect only; a receiver that predates delta pages refuses
	// the transfer at its start.
	DeltaCache int64
}

// ReceiverConfig configures a [Receiver]. The zero value accepts nocomp
// only (give it Methods, such as package plugins/builtin's, for more),
// any channel count, and allocates destination memory for the blocks the
// sender announces.
type ReceiverConfig struct {
	// Channels, when not 0, is the channel count the sender must use.
	Channels int
	// Method, when not nil, is the method the sender must use; otherwise
	// the sender's method is looked up in Methods.
	Method  sdk.Method
	Methods Methods // nil has [Nocomp] only
	Level   int
	UUID    [16]byte // must match the sender's
	// Memory, when not nil, is the destination: the sender's blocks must
	// be among its blocks, with the same sizes.
	Memory Memory
	// Alloc makes the destination from the sender's block list when
	// Memory is nil; nil is [Alloc]. New memory that reads as zeros
	// should say so ([ZeroedMemory]): the receiver then skips zero pages
	// for pages it has not written. (Memory is never trusted to.)
	Alloc func([]BlockInfo) (Memory, error)
	// OnDeviceState receives every device-state blob. It is called from
	// channel goroutines, possibly concurrently, and must not keep blob.
	// Nil discards blobs.
	OnDeviceState func(idstr string, instance uint32, blob []byte) error
	// OnSync, when not nil, runs at every sync point while all channels
	// wait there (see [SyncPoint]); an error fails the transfer. It
	// blocks the whole transfer while it runs.
	OnSync func(*SyncPoint) error
	// OnPages, when not nil, is called from the channel goroutines
	// (concurrently) with the offsets of every packet's pages, normal and
	// zero, once they are in memory; offs is valid only during the call.
	// A page is reported once per sync interval, by the channel that wrote
	// it, so a gateway can forward pages as they land rather than at the
	// sync point; then [SyncPoint.Pages] reports nothing.
	OnPages func(block string, offs []uint64)
	// Finish, when not nil, runs once every page has landed and the
	// sender's account of the transfer checks out, before the receiver
	// confirms the end: make the destination durable there (sync it,
	// rename it into place). An error fails the transfer, and the sender
	// reports it instead of success. The sender waits for it, within its
	// Timeout.
	Finish func(Memory) error
	// MaxDeviceState bounds one blob; 0 is 256 MiB.
	MaxDeviceState int
	// Timeout bounds every single read once the transfer runs; 0 means no
	// bound.
	Timeout time.Duration
	// HandshakeTimeout bounds how long the receiver waits for the control
	// channel and all multifd channels, and each handshake read; 0 is 30s.
	HandshakeTimeout time.Duration
}

func (c *SenderConfig) withDefaults() (SenderConfig, error) {
	cfg := *c
	if cfg.Channels == 0 {
		cfg.Channels = DefaultChannels
	}
	if cfg.PageSize == 0 {
		cfg.PageSize = DefaultPageSize
	}
	if cfg.PacketPages == 0 {
		cfg.PacketPages = DefaultPacketPages
	}
	if cfg.Method == nil {
		cfg.Method = Nocomp()
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.Dialect != "" && cfg.Dialect != Dialect72 && cfg.Dialect != Dialect10 {
		return cfg, fmt.Errorf("sender config: unknown dialect %q", cfg.Dialect)
	}
	if err := cfg.Method.Info().Check(); err != nil {
		return cfg, err
	}
	h := wire.Hello{Channels: cfg.Channels, PageSize: cfg.PageSize, PacketPages: cfg.PacketPages, Method: cfg.Method.Info().Name, MethodFlag: cfg.Method.Info().Flag}
	if err := h.Check(); err != nil {
		return cfg, fmt.Errorf("sender config: %w", err)
	}
	return cfg, nil
}

func (c *ReceiverConfig) withDefaults() ReceiverConfig {
	cfg := *c
	if cfg.Methods == nil {
		cfg.Methods = onlyNocomp{}
	}
	if cfg.Alloc == nil {
		cfg.Alloc = Alloc
	}
	if cfg.MaxDeviceState == 0 {
		cfg.MaxDeviceState = 256 << 20
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	return cfg
}

func methodOptions(level, pageSize, packetPages int) sdk.Options {
	return sdk.Options{Level: level, PageSize: pageSize, PacketPages: packetPages}
}
