package core

import "github.com/pagewire/pagewire/internal/engine"

// SetSentHook makes f see every RAM packet a Sender writes; the returned
// func removes it. Tests using it must not run in parallel.
func SetSentHook(f func(ch int, offsets []uint64)) (restore func()) {
	return engine.SetSentHook(f)
}

// ParkedAtSync reports how many channels of r's running transfer wait at
// the SYNC barrier.
func ParkedAtSync(r *Receiver) int { return engine.ParkedAtSync(r.r) }

// SetDeltaHelloHook may change whether a Sender's hello offers delta
// pages, while it sends them anyway.
func SetDeltaHelloHook(f func(offer *bool)) (restore func()) {
	return engine.SetDeltaHelloHook(f)
}
