//go:build wasip1

package wasmguest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/pagewire/pagewire/sdk"
)

// ABIVersion is the version of sdk/ABI.md this package implements.
const ABIVersion = 1

// Error codes of the ABI.
const (
	codeCorrupt  = -1
	codeArgument = -2
	codeMemory   = -3
	codeOther    = -4
)

var (
	method  sdk.Method
	info    []byte
	buffers [][]byte // allocations kept alive for the instance's life
	sender  sdk.Sender
	recver  sdk.Receiver
	opts    sdk.Options
	lastErr []byte
	packet  sdk.Packet
)

// Serve makes m the module's method.
func Serve(m sdk.Method) {
	method = m
	in := m.Info()
	info = binary.LittleEndian.AppendUint32(nil, in.Flag)
	raw := byte(0)
	if in.Raw {
		raw = 1
	}
	info = append(info, raw, byte(len(in.Name)))
	info = append(info, in.Name...)
}

func ptrLen(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b))))<<32 | uint64(len(b))
}

// view is the guest memory at p as a slice; the host checked nothing, so
// the length comes from the ABI's own arithmetic.
func view(p, n uint32) []byte {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(uintptr(p))), n)
}

func fail(code int32, err error) int32 {
	lastErr = []byte(err.Error())
	return code
}

func failErr(err error) int32 {
	if errors.Is(err, sdk.ErrCorrupt) {
		return fail(codeCorrupt, err)
	}
	return fail(codeOther, err)
}

// guard turns a panic in the method into an error code.
func guard(res *int32) {
	if r := recover(); r != nil {
		*res = fail(codeOther, fmt.Errorf("panic: %v", r))
	}
}

//go:wasmexport pagewire_abi_version
func abiVersion() int32 { return ABIVersion }

//go:wasmexport pagewire_info
func infoExport() uint64 { return ptrLen(info) }

//go:wasmexport pagewire_last_error
func lastError() uint64 { return ptrLen(lastErr) }

//go:wasmexport pagewire_alloc
func alloc(size int32) uint32 {
	if size <= 0 {
		return 0
	}
	b := make([]byte, size)
	buffers = append(buffers, b)
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
}

//go:wasmexport pagewire_setup
func setup(role, channel, level, pageSize, packetPages int32) (res int32) {
	defer guard(&res)
	if method == nil {
		return fail(codeOther, errors.New("the module called no wasmguest.Serve"))
	}
	if pageSize <= 0 || packetPages <= 0 || channel < 0 {
		return fail(codeArgument, fmt.Errorf("setup: page size %d, %d pages per packet, channel %d", pageSize, packetPages, channel))
	}
	opts = sdk.Options{Level: int(level), PageSize: int(pageSize), PacketPages: int(packetPages)}
	packet.Pages = make([][]byte, 0, packetPages)
	var err error
	switch role {
	case 1:
		sender, err = method.NewSender(int(channel), opts)
	case 2:
		recver, err = method.NewReceiver(int(channel), opts)
	default:
		return fail(codeArgument, fmt.Errorf("setup: role %d", role))
	}
	if err != nil {
		return fail(codeArgument, err)
	}
	return 0
}

func pagesAt(p uint32, n int32) bool {
	if n <= 0 || int(n) > opts.PacketPages {
		return false
	}
	all := view(p, uint32(n)*uint32(opts.PageSize))
	packet.Pages = packet.Pages[:0]
	for i := range int(n) {
		off := i * opts.PageSize
		packet.Pages = append(packet.Pages, all[off:off+opts.PageSize:off+opts.PageSize])
	}
	return true
}

//go:wasmexport pagewire_prepare
func prepare(pages uint32, npages int32, out uint32, outCap int32) (res int32) {
	defer guard(&res)
	if sender == nil {
		return fail(codeArgument, errors.New("prepare on an instance not set up to send"))
	}
	if !pagesAt(pages, npages) || outCap <= 0 {
		return fail(codeArgument, fmt.Errorf("prepare: %d pages, %d bytes of output", npages, outCap))
	}
	dst := view(out, uint32(outCap))
	payload, err := sender.Prepare(&packet, dst[:0])
	if err != nil {
		return failErr(err)
	}
	if len(payload) > len(dst) {
		return fail(codeMemory, fmt.Errorf("payload of %d bytes, room for %d", len(payload), len(dst)))
	}
	if len(payload) > 0 && unsafe.SliceData(payload) != unsafe.SliceData(dst) {
		copy(dst, payload) // the method did not append in place
	}
	return int32(len(payload))
}

//go:wasmexport pagewire_recv
func recv(in uint32, inLen int32, pages uint32, npages int32) (res int32) {
	defer guard(&res)
	if recver == nil {
		return fail(codeArgument, errors.New("recv on an instance not set up to receive"))
	}
	if !pagesAt(pages, npages) || inLen < 0 {
		return fail(codeArgument, fmt.Errorf("recv: %d pages, %d bytes of payload", npages, inLen))
	}
	if err := recver.Recv(&packet, view(in, uint32(inLen))); err != nil {
		return failErr(err)
	}
	return 0
}

//go:wasmexport pagewire_cleanup
func cleanup() (res int32) {
	defer guard(&res)
	var err error
	if sender != nil {
		err = sender.Close()
		sender = nil
	}
	if recver != nil {
		if e := recver.Close(); err == nil {
			err = e
		}
		recver = nil
	}
	if err != nil {
		return failErr(err)
	}
	return 0
}
