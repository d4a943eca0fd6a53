package goplugin

// PacketsByOffset is how many packets m's senders sent by offset in
// shared memory.
func PacketsByOffset(m *Method) uint64 {
	n, _ := m.SharedPackets()
	return n
}

// SetTestHookAfterHash makes Load call f right after it hashed the
// plugin file; the returned function undoes it.
func SetTestHookAfterHash(f func()) (restore func()) {
	old := testHookAfterHash
	testHookAfterHash = f
	return func() { testHookAfterHash = old }
}
