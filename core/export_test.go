package core

// SetSentHook makes f see every RAM packet a Sender writes; the returned
// func removes it. Tests using it must not run in parallel.
func SetSentHook(f func(ch int, offsets []uint64)) (restore func()) {
	testHookSent = f
	return func() { testHookSent = nil }
}
