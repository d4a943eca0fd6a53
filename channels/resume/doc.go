// Package resume makes a stream survive the loss of its connection: a
// [Dialer] and a [Listener] wrap a transport's (TCP, unix, TLS, a rate
// cap), and the net.Conn they hand out is a session that outlives any one
// connection under it. When a connection is reset, closed, or delivers
// nothing for [Config.StallTimeout], the dialing end dials again (with
// backoff, for at most [Config.Retry] per outage), the listening end
// takes the returning connection as the same session, and both go on
// where they were: no byte is lost, duplicated or reordered. The user of
// the Conn sees a slow stream, not a failure.
//
// # How
//
// Each end keeps what it wrote until the other end acknowledges it, in a
// replay buffer of [Config.Window] bytes per session and direction (a
// Write waits while it is full). After a reconnection each end says how
// many bytes it has received, and the other writes again from there.
// Bytes are replayed as they were, so a stateful encoding above (a
// compressed stream, deltas against earlier pages) needs nothing of its
// own. Memory is bounded: per session, Window for the replay buffer and
// [Config.RecvBuffer] for received bytes not yet read.
//
// # Who may resume a session
//
// The listener hands every new session a random 128-bit token; a
// returning connection must present it and, when the connections are TLS
// (mutual TLS: crypto/tls conns with a peer certificate), the same peer
// certificate as the session's first connection. The dialing end checks
// that the listener's certificate is the same too before it presents the
// token. A refused returning connection is counted and closed; the
// session it claimed goes on waiting for the real one. Without TLS the
// token crosses in the clear: anyone who can read the link can take a
// session over, as they can read and change its bytes anyway.
//
// # Wire
//
// A connection opens with the dialer's hello, 40 bytes: the magic
// "PWRESUM1", a kind byte (1 new session, 2 resume), 7 zero bytes, the
// token (zero for a new session), and the number of bytes the dialer has
// received in the session (big-endian uint64). The listener answers 40
// bytes: the magic, a status byte (0 accepted, else refused: 1 unknown
// session, 2 another peer, 3 not accepting, 4 bad hello, 5 past the
// session's end), 7 zero bytes, the token, and the number of bytes it has
// received. Then both directions carry frames: a 16-byte header (type:
// 1 data, 2 acknowledgement, 3 end of stream, 4 bye (the writer's
// session is over and it closes the connection); a flags byte whose bit 0
// says "your end of stream came"; 2 zero bytes; the payload's length,
// uint32, at most 64 KiB and zero but for data; the number of bytes this
// end has received, uint64) and, for data, the payload. An end with
// nothing to write sends an acknowledgement every [Config.Heartbeat], so
// silence means a dead connection.
//
// Closing, each end sends its end of stream and waits for the other to
// acknowledge it and every byte; the listening end may then take its
// session down (bye), and a dialer that returns to find its session gone
// while closing, with everything acknowledged, is done too.
//
// A listener also serves dialers that do not resume: a connection whose
// first 8 bytes are not the magic is handed to Accept as it is, those
// bytes first.
//
// # Deadlines
//
// A Conn's read and write deadlines count only time when the session has
// a connection: an outage stops their clocks, so a bound meant for a
// stalled peer does not fire while the link is being re-established.
// The retry budget bounds the outage itself.
package resume
