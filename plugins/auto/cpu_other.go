//go:build !unix

package auto

// processCPU is unknown here: the controller then models the CPU from
// its probes alone.
func processCPU() (int64, bool) { return 0, false }
