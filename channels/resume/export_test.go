package resume

import "net"

// Token is a session's token, for tests that play an impostor.
func Token(c net.Conn) [16]byte { return c.(*Conn).token }

// TransportOf is the transport under d.
func TransportOf(d *Dialer) Transport { return d.t }

// Hello is a dialer's hello.
func Hello(kind byte, token [16]byte, recvd uint64) []byte {
	return hello{kind: kind, token: token, recvd: recvd}.marshal()
}
