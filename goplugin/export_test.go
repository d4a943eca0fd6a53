package goplugin

// PacketsByOffset is how many packets m's senders sent by offset in
// shared memory.
func PacketsByOffset(m *Method) uint64 {
	n, _ := m.SharedPackets()
	return n
}
