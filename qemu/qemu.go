package qemu

import (
	"context"
	"errors"
	"fmt"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/internal/engine"
	"github.com/pagewire/pagewire/plugins/zlib"
	"github.com/pagewire/pagewire/plugins/zstd"
	"github.com/pagewire/pagewire/sdk"
)

// Dialect is the multifd dialect of a QEMU: [Dialect72] or [Dialect10].
type Dialect = engine.Dialect

// The dialects.
const (
	Dialect72 = engine.Dialect72 // QEMU 7.2: zero pages on the main channel, a SYNC per section
	Dialect10 = engine.Dialect10 // QEMU 10.0: zero pages in packets, MULTIFD_FLUSH markers
)

// ParseDialect parses "7.2" or "10.0"; "" and "auto" give "" (the
// stream tells).
func ParseDialect(s string) (Dialect, error) { return engine.ParseDialect(s) }

// ErrBadStream reports a main migration stream that breaks its format.
var ErrBadStream = engine.ErrBadStream

// Methods returns a new registry of QEMU's multifd-compression methods:
// none (nocomp), zlib and zstd, byte for byte as QEMU's.
func Methods() *core.Registry {
	return core.NewRegistry(core.Nocomp(), zlib.New(), zstd.New())
}

// Compressed reports whether flag is the wire flag of one of QEMU's
// compressed multifd methods: zlib (0x2) or zstd (0x4).
func Compressed(flag uint32) bool { return flag == 0x02 || flag == 0x04 }

// ErrForeignMethod reports a compression method QEMU's multifd does not
// have.
var ErrForeignMethod = errors.New("not one of QEMU's multifd methods none, zlib (0x2) and zstd (0x4)")

// CheckMethod returns nil when m can speak to a QEMU: nil (none), or a
// method whose wire flag is none's (0), zlib's (0x2) or zstd's (0x4).
// Otherwise it returns an error wrapping [ErrForeignMethod].
func CheckMethod(m sdk.Method) error {
	if m == nil {
		return nil
	}
	if info := m.Info(); info.Flag != 0 && !Compressed(info.Flag) {
		return fmt.Errorf("method %s (flag %#x): %w", info.Name, info.Flag, ErrForeignMethod)
	}
	return nil
}

// Sender migrates to a real QEMU destination (QEMU run with -incoming,
// the multifd capability, the same multifd-channels and
// multifd-compression): the caller writes the main stream with
// WriteMain, and places a Sync (a SYNC on every channel) before each of
// its sync markers. Close sends no SYNC of its own and closes every
// channel, the main one last.
type Sender struct {
	s *engine.Sender
}

// NewSender connects to the destination at d: the main channel first, as
// QEMU 7.2 requires, then cfg.Channels multifd channels with their
// handshakes (uuid cfg.UUID). cfg.Dialect, the destination's QEMU, is
// required: zero pages travel as normal pages to 7.2.
func NewSender(ctx context.Context, d core.Dialer, mem core.Memory, cfg core.SenderConfig) (*Sender, error) {
	s, err := engine.NewQEMUSender(ctx, d, mem, cfg)
	if err != nil {
		return nil, err
	}
	return &Sender{s}, nil
}

// WriteMain writes b to the destination's main channel.
func (s *Sender) WriteMain(b []byte) error { return s.s.WriteMain(b) }

// SendPages queues the pages of block at the given byte offsets.
func (s *Sender) SendPages(block string, offsets []uint64) error {
	return s.s.SendPages(block, offsets)
}

// SendBlock queues every page of the named block.
func (s *Sender) SendBlock(block string) error { return s.s.SendBlock(block) }

// Sync sends a SYNC on every channel after everything queued so far and
// returns once all of it is written; the main stream's marker follows.
func (s *Sender) Sync() error { return s.s.Sync() }

// Flush returns once everything queued so far is written, without a
// SYNC: after it, the queued pages may change.
func (s *Sender) Flush() error { return s.s.Flush() }

// Close writes what is queued and closes every channel, the main one
// last.
func (s *Sender) Close() (core.Stats, error) { return s.s.Close() }

// Abort fails the migration with err and releases everything: the
// destination sees its connections close before the end of the stream.
func (s *Sender) Abort(err error) (core.Stats, error) { return s.s.Abort(err) }

// Fail fails the migration with err; any goroutine may call it. Close
// must still be called.
func (s *Sender) Fail(err error) { s.s.Fail(err) }

// Done is closed when the migration has failed or been closed.
func (s *Sender) Done() <-chan struct{} { return s.s.Done() }

// Err returns the migration's failure, or nil while it is healthy.
func (s *Sender) Err() error { return s.s.Err() }

// Stats returns the statistics so far; any goroutine may call.
func (s *Sender) Stats() core.Stats { return s.s.Stats() }
