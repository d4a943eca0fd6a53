package wasm

import "fmt"

// LiveInstances counts the module's instances that are not closed: one
// per open Sender or Receiver.
func LiveInstances(m *Module) int {
	n := 0
	for i := uint64(1); i <= m.seq.Load(); i++ {
		if mod := m.rt.Module(fmt.Sprintf("%s#%d", m.name, i)); mod != nil && !mod.IsClosed() {
			n++
		}
	}
	return n
}
