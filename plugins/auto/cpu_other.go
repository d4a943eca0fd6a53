//go:build !linux

package auto

// schedstat is Linux's: elsewhere the controller models the CPU from its
// probes alone.
func (m *cpuMeter) schedstat() (run, wait int64, ok bool) { return 0, 0, false }
