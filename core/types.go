package core

import (
	"io"

	"github.com/pagewire/pagewire/core/wire"
	"github.com/pagewire/pagewire/internal/engine"
)

// The engine (internal/engine) runs both of pagewire's protocols, its own
// (this package) and QEMU's (package qemu); the types they share are
// declared there and named here.

// Defaults of a transfer.
const (
	DefaultChannels         = engine.DefaultChannels
	DefaultPageSize         = engine.DefaultPageSize
	DefaultPacketPages      = engine.DefaultPacketPages // QEMU: MULTIFD_PACKET_SIZE / page size
	DefaultHandshakeTimeout = engine.DefaultHandshakeTimeout
)

// SenderConfig configures a [Sender]. The zero value is usable: four
// channels, 128 pages of 4 KiB per packet, nocomp, QEMU 10.0's dialect.
// Its fields: Channels (1..255), PageSize (a power of two), PacketPages,
// Method (nil is nocomp), Level (0 is the method's default), UUID (must
// match the receiver's), Dialect ([Dialect10] or [Dialect72]: how zero
// pages and syncs travel), Timeout (bounds every write and the wait for
// the receiver's confirmation; 0: none) and HandshakeTimeout (0 is 30s).
type SenderConfig = engine.SenderConfig

// ReceiverConfig configures a [Receiver]. The zero value accepts nocomp
// only (set Methods, such as plugins/builtin's, for more), any channel
// count, and allocates destination memory for the blocks the sender
// announces. Its hooks (OnDeviceState, OnSync, OnPages) run in the
// engine's goroutines; see the fields' docs in the engine.
type ReceiverConfig = engine.ReceiverConfig

// Dialect is how zero pages and syncs travel: [Dialect10] (zero pages as
// offsets in packets) or [Dialect72] (zero pages as records on the
// control channel, as QEMU 7.2 sends them on its main channel).
type Dialect = engine.Dialect

// The dialects.
const (
	Dialect72 = engine.Dialect72
	Dialect10 = engine.Dialect10
)

// ParseDialect parses "7.2" or "10.0"; "" and "auto" give "".
func ParseDialect(s string) (Dialect, error) { return engine.ParseDialect(s) }

// Memory is a set of named RAM blocks: the source of a Sender and the
// destination of a Receiver. Blocks must return the same blocks, with the
// same backing memory, for the whole transfer.
type Memory = engine.Memory

// Block is one named RAM block: a whole number of pages (Name, Data).
// File and Offset, when set, say that Data is a shared mapping of File
// from Offset, which an out-of-process method may map itself (see
// [MemorySharer]).
type Block = engine.Block

// Blocks is a [Memory] of plain byte slices.
type Blocks = engine.Blocks

// BlockInfo names a RAM block and its size, as the sender announces it.
type BlockInfo = wire.BlockInfo

// ZeroedMemory is a [Memory] that says whether it still reads as zeros
// (see [FreshZeros]): a receiver then leaves unread the zero pages of
// pages it has not written.
type ZeroedMemory = engine.ZeroedMemory

// MemorySharer is implemented by methods that run in another process and
// can map a sender's memory themselves (goplugin.Method).
type MemorySharer = engine.MemorySharer

// Image is a [Memory] of one block mapped from a file; Close unmaps it.
type Image = engine.Image

// InPlaceSender and InPlaceReceiver are optional interfaces of a
// method's channel ends whose payloads live in memory of their own (a
// Wasm instance's, a plugin's shared region).
type (
	InPlaceSender   = engine.InPlaceSender
	InPlaceReceiver = engine.InPlaceReceiver
)

// WriteObserver is an optional interface of a method's channel sender
// that adapts to its link: the engine tells it the bytes and time of
// every write (package plugins/auto uses it).
type WriteObserver = engine.WriteObserver

// RawSender is an optional interface of a method's channel sender that
// sends some packets as a prefix and the pages themselves, which the
// engine then writes straight from memory, as for nocomp (package
// plugins/auto's raw choice).
type RawSender = engine.RawSender

// Stats describes a transfer: pages, bytes on the wire, time, per channel.
type Stats = engine.Stats

// ChannelStats is one channel's share of a transfer's [Stats].
type ChannelStats = engine.ChannelStats

// SyncPoint is a sync point of a running transfer as an OnSync hook sees
// it: every channel waits there, so nothing writes the destination until
// the hook returns.
type SyncPoint = engine.SyncPoint

// Alloc returns zeroed blocks of the given sizes: the receiver's default
// destination.
func Alloc(infos []BlockInfo) (Memory, error) { return engine.Alloc(infos) }

// FreshZeros marks m, new memory that reads as zeros, as a
// [ZeroedMemory] for a receiver's Alloc to return.
func FreshZeros(m Memory) ZeroedMemory { return engine.FreshZeros(m) }

// OpenImage maps the file at path read-only as one block named name.
func OpenImage(path, name string) (*Image, error) { return engine.OpenImage(path, name) }

// ReadImage reads r to its end into sealed anonymous shared memory (a
// memfd on Linux) mapped read-only as one block named name.
func ReadImage(r io.Reader, name string) (*Image, error) {
	return engine.ReadImage(r, name)
}

// CreateImage creates (or truncates) the file at path, sizes it to size
// bytes (sparse, reading as zeros) and maps it writable as one block.
func CreateImage(path, name string, size int64) (*Image, error) {
	return engine.CreateImage(path, name, size)
}

// IsZero reports whether page is all zero bytes.
func IsZero(page []byte) bool { return engine.IsZero(page) }
