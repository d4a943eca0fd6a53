package engine

// Hooks for the tests of the packages built on the engine (core, qemu).

// SetSentHook makes f see every RAM packet a Sender writes; the returned
// func removes it. Tests using it must not run in parallel.
func SetSentHook(f func(ch int, offsets []uint64)) (restore func()) {
	testHookSent = f
	return func() { testHookSent = nil }
}

// ParkedAtSync reports how many channels of r's running transfer wait at
// the SYNC barrier.
func ParkedAtSync(r *Receiver) int {
	r.mu.Lock()
	chans := r.chans
	r.mu.Unlock()
	if len(chans) == 0 || chans[0] == nil {
		return 0
	}
	b := &chans[0].t.bar
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.arrived
}

// testHookDeltaHello, when set, may change whether a Sender's hello
// offers delta pages (while it sends them anyway).
var testHookDeltaHello func(offer *bool)

// SetDeltaHelloHook sets testHookDeltaHello; the returned func removes
// it. Tests using it must not run in parallel.
func SetDeltaHelloHook(f func(offer *bool)) (restore func()) {
	testHookDeltaHello = f
	return func() { testHookDeltaHello = nil }
}
