//go:build race

package linkemu

// raceEnabled is whether the race detector is on: it slows the proxy
// too much for rate accuracy to be checked at 1 Gbit/s.
const raceEnabled = true
