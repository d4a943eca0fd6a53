package sdk

import (
	"errors"
	"fmt"
)

// Method is one entry of the method table (QEMU's multifd_ops).
type Method interface {
	// Info describes the method; it must return the same value every time.
	Info() Info
	// NewSender sets up the sending side of channel ch (send_setup).
	NewSender(ch int, o Options) (Sender, error)
	// NewReceiver sets up the receiving side of channel ch (recv_setup).
	NewReceiver(ch int, o Options) (Receiver, error)
}

// Info names a method and its value on the wire.
type Info struct {
	// Name is what users type: "nocomp", "zlib", "zstd", "lz4".
	Name string
	// Flag is the method's value in the compression bits of a packet's
	// flags field (QEMU's MULTIFD_FLAG_*): 0 nocomp, 0x02 zlib, 0x04 zstd;
	// QEMU reserves 0x08, 0x10 and 0x20, and pagewire's lz4 is 0x3c. It
	// must be an even number inside [FlagMask] (docs/plugin-authors.md
	// lists the free ones).
	Flag uint32
	// Raw reports that the payload of a packet is its normal pages,
	// unchanged and back to back (nocomp). The engine then writes the pages
	// from source memory with one vectored write and reads them straight
	// into destination memory; Prepare and Recv are not called.
	Raw bool
}

// FlagMask covers the compression bits of a packet's flags field
// (QEMU 10's MULTIFD_FLAG_COMPRESSION_MASK).
const FlagMask = 0x3e

// Options configure one channel of a method. The zero value asks for the
// method's defaults.
type Options struct {
	// Level is the compression level; 0 means the method's default.
	Level int
	// PageSize is the size of every page in bytes (4096 unless configured).
	PageSize int
	// PacketPages is the most pages a packet can carry (128 unless
	// configured). A payload never needs more than
	// [MaxPayload](PacketPages, PageSize) bytes.
	PacketPages int
}

// Packet is one batch of pages of one RAM block.
type Packet struct {
	// Pages are the normal (non-zero) pages of the packet, in wire order,
	// each exactly PageSize bytes. On the sender they are read-only views
	// of source memory; on the receiver they are the destination memory
	// the method must fill completely.
	Pages [][]byte
	// Seq counts the packets of this channel from 1; useful in errors.
	Seq uint64
}

// Sender is the sending side of one channel.
type Sender interface {
	// Prepare appends the payload for p's pages to dst and returns the
	// extended slice (send_prepare). It must not keep p or its pages.
	Prepare(p *Packet, dst []byte) ([]byte, error)
	// Close releases the channel's state (send_cleanup).
	Close() error
}

// Receiver is the receiving side of one channel.
type Receiver interface {
	// Recv decodes payload into p.Pages, filling every page completely
	// (recv). A payload that is corrupt, or that decodes to more or fewer
	// bytes than the pages hold, is an error wrapping [ErrCorrupt].
	Recv(p *Packet, payload []byte) error
	// Close releases the channel's state (recv_cleanup).
	Close() error
}

// ErrCorrupt reports a payload that does not decode to the packet's pages.
var ErrCorrupt = errors.New("corrupt payload")

// ErrPlugin is what every plugin host's failure matches (wasm.ErrPlugin
// and goplugin.ErrPlugin wrap it), so that an engine, and the far end of
// a transfer, can tell a failed plugin without knowing how it was loaded.
var ErrPlugin = errors.New("plugin failed")

// ErrDeadline is what a plugin call that ran past its host's deadline
// matches (wasm.ErrDeadline wraps it), besides [ErrPlugin].
var ErrDeadline = errors.New("deadline exceeded")

// MaxPayload is the largest payload the engine accepts for a packet of
// pages pages of pageSize bytes: twice the raw size plus 64 KiB, room for
// the worst expansion of any sane codec on incompressible data.
func MaxPayload(pages, pageSize int) int {
	return 2*pages*pageSize + 64<<10
}

// Check reports whether info is well formed.
func (info Info) Check() error {
	switch {
	case info.Name == "":
		return errors.New("method has no name")
	case info.Flag&^FlagMask != 0 || info.Flag&1 != 0:
		return fmt.Errorf("method %s: flag %#x outside the compression bits %#x", info.Name, info.Flag, FlagMask)
	}
	return nil
}
