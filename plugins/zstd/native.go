//go:build cgo && libzstd

package zstd

/*
#cgo pkg-config: libzstd
#define ZSTD_STATIC_LINKING_ONLY // ZSTD_getCParams, stable since libzstd 1.0
#include <zstd.h>

static unsigned pw_window_log(int level) {
	return ZSTD_getCParams(level, ZSTD_CONTENTSIZE_UNKNOWN, 0).windowLog;
}

// pw_compress feeds src[*inpos:n) to c and appends what it outputs to
// dst[*outpos:cap). mode is ZSTD_e_continue (0), ZSTD_e_flush (1: end the
// current block, as QEMU does at the end of every packet) or ZSTD_e_end
// (2: end the frame). It returns an error code, or 0 once the input is
// used up (and, unless continuing, everything is out); otherwise dst is
// full and the caller calls again with more room.
static size_t pw_compress(ZSTD_CCtx *c, const void *src, size_t n, size_t *inpos,
		void *dst, size_t cap, size_t *outpos, int mode) {
	ZSTD_inBuffer in = { src, n, *inpos };
	ZSTD_outBuffer out = { dst, cap, *outpos };
	int flush = mode != 0;
	size_t r;
	for (;;) {
		r = ZSTD_compressStream2(c, &out, &in, (ZSTD_EndDirective)mode);
		if (ZSTD_isError(r))
			break;
		if (in.pos == in.size && (!flush || r == 0)) {
			r = 0;
			break;
		}
		if (out.pos == out.size) {
			r = 1;
			break;
		}
	}
	*inpos = in.pos;
	*outpos = out.pos;
	return r;
}

// pw_decompress decodes src[*inpos:n) with d into dst[*outpos:cap) until
// dst is full or d can make no more progress with the input it has.
static size_t pw_decompress(ZSTD_DCtx *d, const void *src, size_t n, size_t *inpos,
		void *dst, size_t cap, size_t *outpos) {
	ZSTD_inBuffer in = { src, n, *inpos };
	ZSTD_outBuffer out = { dst, cap, *outpos };
	size_t r = 0;
	while (out.pos < out.size) {
		size_t ip = in.pos, op = out.pos;
		r = ZSTD_decompressStream(d, &out, &in);
		if (ZSTD_isError(r))
			break;
		if (in.pos == ip && out.pos == op)
			break;
	}
	*inpos = in.pos;
	*outpos = out.pos;
	return r;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"unsafe"

	"github.com/pagewire/pagewire/internal/feed"
	"github.com/pagewire/pagewire/sdk"
)

// Native reports whether this build has the native tier: the libzstd
// build tag, with cgo. [New] then returns it.
const Native = true

// minWindowLog is the smallest window the native encoder uses: 4 MiB,
// frames of eight full packets. With 2 MiB, frames of four lost enough
// history at their ends to cost up to 1% more bytes than QEMU's level 1
// puts on the wire.
const minWindowLog = 22

// nativeVersion is the libzstd the process runs.
func nativeVersion() string { return "libzstd " + C.GoString(C.ZSTD_versionString()) }

func zerr(r C.size_t) error {
	return errors.New(C.GoString(C.ZSTD_getErrorName(r)))
}

// ptr is the address of b's first byte, for C (nil for an empty slice:
// libzstd never reads a buffer of size 0).
func ptr(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }

type nativeSender struct {
	c       *C.ZSTD_CCtx
	in, out C.size_t // positions for pw_compress (fields: a local would escape)
	// window is the encoder's window, frameIn what the current frame has
	// taken so far, maxPacket the largest packet the channel's options
	// allow: see Prepare.
	window, frameIn, maxPacket int
	cleanup                    runtime.Cleanup
}

func newNativeSender(level, maxPacket int) (sdk.Sender, error) {
	c := C.ZSTD_createCCtx()
	if c == nil {
		return nil, errors.New("zstd: libzstd cannot allocate a compression context")
	}
	if r := C.ZSTD_CCtx_setParameter(c, C.ZSTD_c_compressionLevel, C.int(level)); C.ZSTD_isError(r) != 0 {
		C.ZSTD_freeCCtx(c)
		return nil, fmt.Errorf("zstd level %d: %w", level, zerr(r))
	}
	// A window of at least 4 MiB (level 1's is 512 KiB): eight full
	// packets of history, where QEMU's level 1 keeps one. Any libzstd
	// decodes it (QEMU's accepts up to 128 MiB).
	wlog := max(int(C.pw_window_log(C.int(level))), minWindowLog)
	if r := C.ZSTD_CCtx_setParameter(c, C.ZSTD_c_windowLog, C.int(wlog)); C.ZSTD_isError(r) != 0 {
		C.ZSTD_freeCCtx(c)
		return nil, fmt.Errorf("zstd level %d: window: %w", level, zerr(r))
	}
	s := &nativeSender{c: c, window: 1 << wlog, maxPacket: maxPacket}
	// A sender that is never closed still frees its context.
	s.cleanup = runtime.AddCleanup(s, func(c *C.ZSTD_CCtx) { C.ZSTD_freeCCtx(c) }, c)
	return s, nil
}

// Prepare compresses the pages one by one into the channel's stream and
// flushes it at the end, as QEMU's zstd_send_prepare does.
//
// Unlike QEMU, the stream is a run of frames, each ended at a packet's
// end before it takes in more than its window: libzstd keeps a frame's
// input in a ring of window + block size, and once the ring wraps it
// matches every block across two segments (its extDict path), which is
// slower. A frame that never outgrows its window never wraps. Every zstd
// decoder, QEMU's included, goes on from one frame to the next by itself.
func (s *nativeSender) Prepare(p *sdk.Packet, dst []byte) ([]byte, error) {
	if s.c == nil {
		return dst, errors.New("zstd: sender used after Close")
	}
	n := 0
	for _, pg := range p.Pages {
		n += len(pg)
	}
	// End the frame with this packet if a next one as large might not fit.
	end := C.int(1) // ZSTD_e_flush
	if s.frameIn += n; s.frameIn+max(n, s.maxPacket) > s.window {
		end, s.frameIn = 2, 0 // ZSTD_e_end
	}
	// compressBound of the packet is enough for its blocks and the
	// frame's header: growing below is for the unexpected.
	dst = slices.Grow(dst, int(C.ZSTD_compressBound(C.size_t(n)))+64)
	for i := 0; i <= len(p.Pages); i++ {
		var src []byte
		mode := C.int(0) // ZSTD_e_continue
		if i < len(p.Pages) {
			src = p.Pages[i]
		} else {
			mode = end
		}
		s.in = 0
		for {
			s.out = C.size_t(len(dst))
			r := C.pw_compress(s.c, ptr(src), C.size_t(len(src)), &s.in,
				ptr(dst[:cap(dst)]), C.size_t(cap(dst)), &s.out, mode)
			dst = dst[:s.out]
			if C.ZSTD_isError(r) != 0 {
				return dst, fmt.Errorf("zstd: packet %d: %w", p.Seq, zerr(r))
			}
			if r == 0 {
				break
			}
			dst = slices.Grow(dst, 64<<10)
		}
	}
	runtime.KeepAlive(p)
	return dst, nil
}

func (s *nativeSender) Close() error {
	if s.c != nil {
		s.cleanup.Stop()
		C.ZSTD_freeCCtx(s.c)
		s.c = nil
	}
	return nil
}

type nativeReceiver struct {
	d       *C.ZSTD_DCtx
	cleanup runtime.Cleanup
	in, out C.size_t // positions for pw_decompress (fields: a local would escape)
	broken  error
	probe   [1]byte
}

func newNativeReceiver() (sdk.Receiver, error) {
	d := C.ZSTD_createDCtx()
	if d == nil {
		return nil, errors.New("zstd: libzstd cannot allocate a decompression context")
	}
	// A hostile frame header costs at most MaxWindow per channel.
	if r := C.ZSTD_DCtx_setParameter(d, C.ZSTD_d_windowLogMax, C.int(maxWindowLog)); C.ZSTD_isError(r) != 0 {
		C.ZSTD_freeDCtx(d)
		return nil, fmt.Errorf("zstd: window limit: %w", zerr(r))
	}
	r := &nativeReceiver{d: d}
	r.cleanup = runtime.AddCleanup(r, func(d *C.ZSTD_DCtx) { C.ZSTD_freeDCtx(d) }, d)
	return r, nil
}

// Recv decodes the payload into the pages, then checks that the stream
// holds nothing more for this packet: it asks for one more byte, which a
// well-formed payload cannot give.
func (r *nativeReceiver) Recv(p *sdk.Packet, payload []byte) error {
	if r.broken != nil {
		return r.broken
	}
	if r.d == nil {
		return errors.New("zstd: receiver used after Close")
	}
	r.in = 0
	src, n := ptr(payload), C.size_t(len(payload))
	fail := func(err error) error {
		// The stream cannot be trusted past a bad packet.
		r.broken = fmt.Errorf("%w: %w", sdk.ErrCorrupt, err)
		return r.broken
	}
	for i, pg := range p.Pages {
		r.out = 0
		ret := C.pw_decompress(r.d, src, n, &r.in, ptr(pg), C.size_t(len(pg)), &r.out)
		if C.ZSTD_isError(ret) != 0 {
			return fail(fmt.Errorf("page %d of %d: %w", i, len(p.Pages), zerr(ret)))
		}
		if int(r.out) < len(pg) {
			return fail(fmt.Errorf("page %d of %d: %w", i, len(p.Pages), feed.ErrShort))
		}
	}
	r.out = 0
	ret := C.pw_decompress(r.d, src, n, &r.in, ptr(r.probe[:]), 1, &r.out)
	runtime.KeepAlive(payload)
	switch {
	case C.ZSTD_isError(ret) != 0:
		return fail(zerr(ret))
	case r.out > 0 || r.in < n:
		return fail(feed.ErrExtra)
	}
	return nil
}

func (r *nativeReceiver) Close() error {
	if r.d != nil {
		r.cleanup.Stop()
		C.ZSTD_freeDCtx(r.d)
		r.d = nil
	}
	return nil
}
