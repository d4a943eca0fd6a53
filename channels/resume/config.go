package resume

import (
	"errors"
	"net"
	"sync"
	"time"
)

// Config tunes sessions. The zero value is usable.
type Config struct {
	// Retry bounds one outage: a session that has been without a
	// connection for this long fails (Read and Write return an error
	// wrapping ErrRetryBudget). 0 is 3 minutes.
	Retry time.Duration
	// Window is the replay buffer: the bytes written and not yet
	// acknowledged by the peer, per session and direction; a Write waits
	// while it is full. It bounds what a reconnection writes again. 0 is
	// 4 MiB.
	Window int
	// RecvBuffer holds bytes received and not yet read, per session; 0 is
	// 1 MiB.
	RecvBuffer int
	// Heartbeat is how often an end with nothing to write says it is
	// there; 0 is 1s.
	Heartbeat time.Duration
	// StallTimeout replaces a connection that delivers nothing (no data,
	// no heartbeat) for this long while the reader waits for it: a black
	// hole. 0 is 10s.
	StallTimeout time.Duration
	// HandshakeTimeout bounds one connection's set-up: the dial (with
	// its TLS handshake) and the hellos. 0 is 10s.
	HandshakeTimeout time.Duration
	// Linger bounds how long Close waits for the peer to acknowledge
	// what was written and the end of the stream (reconnecting if need
	// be). 0 is 10s.
	Linger time.Duration
	// Events, when set, is told of every lost connection, reconnection,
	// refusal and failed session, from the session's goroutines; it must
	// not block.
	Events func(Event)
}

// DefaultRetry is Config.Retry's default.
const DefaultRetry = 3 * time.Minute

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Retry, DefaultRetry)
	def(&c.Heartbeat, time.Second)
	def(&c.StallTimeout, 10*time.Second)
	def(&c.HandshakeTimeout, 10*time.Second)
	def(&c.Linger, 10*time.Second)
	if c.Window <= 0 {
		c.Window = 4 << 20
	}
	if c.RecvBuffer <= 0 {
		c.RecvBuffer = 1 << 20
	}
	c.Window = max(c.Window, maxFrame)
	c.RecvBuffer = max(c.RecvBuffer, maxFrame)
	return c
}

// EventKind says what happened.
type EventKind int

const (
	// Lost: a session's connection failed (Err says how); the dialer
	// reconnects.
	Lost EventKind = iota + 1
	// Resumed: a session has a connection again after Outage; Resent
	// bytes are written again.
	Resumed
	// Refused: a connection claiming a session was refused (Err).
	Refused
	// Failed: a session failed for good (Err wraps ErrRetryBudget or
	// ErrRefused).
	Failed
	// Retrying: Dial's first attempt at a new session failed (Err); it
	// tries again within the retry budget.
	Retrying
)

func (k EventKind) String() string {
	switch k {
	case Lost:
		return "lost"
	case Resumed:
		return "resumed"
	case Refused:
		return "refused"
	case Failed:
		return "failed"
	case Retrying:
		return "retrying"
	}
	return "?"
}

// Event is one thing that happened to a session.
type Event struct {
	Kind   EventKind
	Remote net.Addr      // the connection's peer, when known
	Err    error         // Lost, Refused, Failed: why
	Outage time.Duration // Resumed: how long the session was down
	Resent int64         // Resumed: bytes this end writes again
}

var (
	// ErrRetryBudget is how a session fails when its connection stayed
	// lost past Config.Retry.
	ErrRetryBudget = errors.New("resume: the connection stayed lost past the retry budget")
	// ErrRefused is how a dialer's session fails when the listening end
	// refuses it (the session is gone there, or it is another peer).
	ErrRefused = errors.New("resume: the listening end refused the session")
	// ErrProtocol reports bytes from the peer that break the protocol.
	ErrProtocol = errors.New("resume: protocol violation")
	// ErrNotResuming reports a listening end that does not resume
	// sessions (another program, or one run without it).
	ErrNotResuming = errors.New("resume: the listening end does not resume sessions")
)

// Stats are the counters of a Dialer's or a Listener's sessions.
type Stats struct {
	Sessions   int64         // sessions opened
	Reconnects int64         // connections that replaced a lost one (a listener counts one once the dialer has spoken on it)
	Resent     int64         // bytes written again after reconnections
	Outage     time.Duration // time with at least one session down
	Down       time.Duration // how long the current outage has lasted; 0 when all are up
	Refused    int64         // returning connections refused
	Failed     int64         // sessions that failed
}

// counters are shared by the sessions of one Dialer or Listener.
type counters struct {
	mu    sync.Mutex
	st    Stats
	down  int       // sessions down now
	since time.Time // when down became > 0
}

func (c *counters) add(f func(*Stats)) {
	c.mu.Lock()
	f(&c.st)
	c.mu.Unlock()
}

// goDown and goUp track the union of the sessions' outages.
func (c *counters) goDown(now time.Time) {
	c.mu.Lock()
	if c.down == 0 {
		c.since = now
	}
	c.down++
	c.mu.Unlock()
}

func (c *counters) goUp(now time.Time) {
	c.mu.Lock()
	c.down--
	if c.down == 0 {
		c.st.Outage += now.Sub(c.since)
	}
	c.mu.Unlock()
}

func (c *counters) stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	if c.down > 0 {
		st.Down = time.Since(c.since)
		st.Outage += st.Down
	}
	return st
}
