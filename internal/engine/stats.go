package engine

import (
	"sync/atomic"
	"time"
)

// ChannelStats counts what one multifd channel carried.
type ChannelStats struct {
	Channel      int    `json:"channel"`
	WireBytes    uint64 `json:"wire_bytes"` // headers and payloads
	Packets      uint64 `json:"packets"`    // RAM packets with pages
	NormalPages  uint64 `json:"normal_pages"`
	ZeroPages    uint64 `json:"zero_pages"`
	Syncs        uint64 `json:"syncs"`
	DeviceStates uint64 `json:"device_states"`
	DeltaPages   uint64 `json:"delta_pages,omitempty"` // normal pages sent as deltas
}

// Stats describes a transfer, so far or in all.
type Stats struct {
	Method       string `json:"method"`
	PageSize     int    `json:"page_size"`
	WireBytes    uint64 `json:"wire_bytes"`
	Packets      uint64 `json:"packets"`
	NormalPages  uint64 `json:"normal_pages"`
	ZeroPages    uint64 `json:"zero_pages"`
	Syncs        uint64 `json:"syncs"`
	DeviceStates uint64 `json:"device_states"`
	// DeltaPages are the normal pages that went as deltas against the
	// version the receiver held (SenderConfig.DeltaCache).
	DeltaPages   uint64         `json:"delta_pages,omitempty"`
	ControlBytes uint64         `json:"control_bytes"` // control channel, after the hello
	Dialect      string         `json:"dialect"`
	Elapsed      time.Duration  `json:"elapsed_ns"`
	Channels     []ChannelStats `json:"channels"`
}

// RAMBytes is the memory the transfer moved: normal and zero pages.
func (s *Stats) RAMBytes() uint64 {
	return (s.NormalPages + s.ZeroPages) * uint64(s.PageSize)
}

// Ratio is RAM bytes per byte on the wire, control channel included (1
// for nocomp without zero pages).
func (s *Stats) Ratio() float64 {
	if s.WireBytes+s.ControlBytes == 0 {
		return 0
	}
	return float64(s.RAMBytes()) / float64(s.WireBytes+s.ControlBytes)
}

// MBps is RAM megabytes (10^6 bytes) moved per second.
func (s *Stats) MBps() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.RAMBytes()) / 1e6 / s.Elapsed.Seconds()
}

// counters are one channel's live statistics, written by its goroutine.
type counters struct {
	wire, packets, normal, zero, syncs, devs, delta atomic.Uint64
}

func (c *counters) snapshot(id int) ChannelStats {
	return ChannelStats{
		Channel:      id,
		WireBytes:    c.wire.Load(),
		Packets:      c.packets.Load(),
		NormalPages:  c.normal.Load(),
		ZeroPages:    c.zero.Load(),
		Syncs:        c.syncs.Load(),
		DeviceStates: c.devs.Load(),
		DeltaPages:   c.delta.Load(),
	}
}

func collect(method string, pageSize int, elapsed time.Duration, cs []*counters) Stats {
	s := Stats{Method: method, PageSize: pageSize, Elapsed: elapsed, Channels: make([]ChannelStats, len(cs))}
	for i, c := range cs {
		st := c.snapshot(i)
		s.Channels[i] = st
		s.WireBytes += st.WireBytes
		s.Packets += st.Packets
		s.NormalPages += st.NormalPages
		s.ZeroPages += st.ZeroPages
		s.Syncs += st.Syncs
		s.DeviceStates += st.DeviceStates
		s.DeltaPages += st.DeltaPages
	}
	return s
}
