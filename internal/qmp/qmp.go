// Package qmp is a small client of QEMU's machine protocol (QMP) for the
// migration lab and the gateways: it runs commands and keeps the events
// QEMU sends, each with QEMU's timestamp, so that a run can tell when the
// source stopped its guest and when the destination took over.
package qmp

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Event is one asynchronous QMP event.
type Event struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data"`
	// At is when the client read it.
	At time.Time `json:"-"`
	// Timestamp is QEMU's own, from the clock of QEMU's host.
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// Time is QEMU's timestamp of the event (the clock of QEMU's host), or
// At if it has none.
func (e Event) Time() time.Time {
	if e.Timestamp.Seconds == 0 {
		return e.At
	}
	return time.Unix(e.Timestamp.Seconds, e.Timestamp.Microseconds*1000)
}

// Client is a QMP connection. Its methods are safe for one goroutine at a
// time; events are collected as commands read them, or all the time
// after Watch.
type Client struct {
	c       net.Conn
	r       *bufio.Reader
	mu      sync.Mutex
	events  []Event
	arrived chan struct{} // closed and replaced on every event
	watched chan struct{} // closed when the watching goroutine ends
}

// Dial connects to a QMP unix socket, retrying until within has passed
// (QEMU creates the socket as it starts), and negotiates capabilities.
func Dial(sock string, within time.Duration) (*Client, error) {
	deadline := time.Now().Add(within)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			q := &Client{c: c, r: bufio.NewReader(c), arrived: make(chan struct{})}
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := q.r.ReadBytes('\n'); err != nil { // greeting
				c.Close()
				return nil, fmt.Errorf("qmp %s: greeting: %w", sock, err)
			}
			if _, err := q.Do("qmp_capabilities", nil); err != nil {
				c.Close()
				return nil, err
			}
			return q, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("qmp %s: %w", sock, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Close closes the connection, and returns once a Watch has ended.
func (q *Client) Close() error {
	err := q.c.Close()
	if q.watched != nil {
		<-q.watched
	}
	return err
}

// Watch reads events from now on in a goroutine of its own, until the
// connection ends: use it for a connection that only listens (Do must
// not be called after it). Close ends it.
func (q *Client) Watch() {
	q.watched = make(chan struct{})
	q.c.SetDeadline(time.Time{})
	go func() {
		defer close(q.watched)
		for {
			line, err := q.r.ReadBytes('\n')
			if err != nil {
				return
			}
			q.keep(line)
		}
	}()
}

// WaitEvent returns the first event read so far, or until within has
// passed, for which match is true.
func (q *Client) WaitEvent(match func(Event) bool, within time.Duration) (Event, bool) {
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		q.mu.Lock()
		arrived := q.arrived
		for _, e := range q.events {
			if match(e) {
				q.mu.Unlock()
				return e, true
			}
		}
		q.mu.Unlock()
		select {
		case <-arrived:
		case <-timer.C:
			return Event{}, false
		}
	}
}

// MigrationStatus matches a MIGRATION event of that status.
func MigrationStatus(status string) func(Event) bool {
	return func(e Event) bool {
		if e.Name != "MIGRATION" {
			return false
		}
		var d struct {
			Status string `json:"status"`
		}
		return json.Unmarshal(e.Data, &d) == nil && d.Status == status
	}
}

// Error is an error QEMU answered a command with.
type Error struct {
	Command, Class, Desc string
}

func (e *Error) Error() string { return fmt.Sprintf("qmp %s: %s", e.Command, e.Desc) }

// Do runs a command with its arguments (nil for none) and returns its
// "return" value. Events read meanwhile are kept.
func (q *Client) Do(cmd string, args any) (json.RawMessage, error) {
	msg := map[string]any{"execute": cmd}
	if args != nil {
		msg["arguments"] = args
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	q.c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := q.c.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return nil, fmt.Errorf("qmp %s: %w: %s", cmd, err, line)
		}
		if resp.Event != "" {
			q.keep(line)
			continue
		}
		if resp.Error != nil {
			return nil, &Error{Command: cmd, Class: resp.Error.Class, Desc: resp.Error.Desc}
		}
		return resp.Return, nil
	}
}

func (q *Client) keep(line []byte) {
	var e Event
	if json.Unmarshal(line, &e) == nil {
		e.At = time.Now()
		q.mu.Lock()
		q.events = append(q.events, e)
		close(q.arrived)
		q.arrived = make(chan struct{})
		q.mu.Unlock()
	}
}

// Events returns the events read so far.
func (q *Client) Events() []Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]Event(nil), q.events...)
}

// First returns the first event of that name read so far.
func (q *Client) First(name string) (Event, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, e := range q.events {
		if e.Name == name {
			return e, true
		}
	}
	return Event{}, false
}

// Migration is what query-migrate reports.
type Migration struct {
	Status     string `json:"status"`
	ErrorDesc  string `json:"error-desc"`
	TotalTime  int64  `json:"total-time"` // ms
	Downtime   int64  `json:"downtime"`   // ms
	SetupTime  int64  `json:"setup-time"` // ms
	ExpectedDT int64  `json:"expected-downtime"`
	RAM        struct {
		Transferred    int64   `json:"transferred"`
		Total          int64   `json:"total"`
		Remaining      int64   `json:"remaining"`
		Duplicate      int64   `json:"duplicate"`
		Normal         int64   `json:"normal"`
		DirtySyncCount int64   `json:"dirty-sync-count"`
		Mbps           float64 `json:"mbps"`
		DirtyRate      int64   `json:"dirty-pages-rate"`
	} `json:"ram"`
	CPUThrottle int `json:"cpu-throttle-percentage"`
}

// QueryMigrate runs query-migrate.
func (q *Client) QueryMigrate() (Migration, error) {
	var m Migration
	b, err := q.Do("query-migrate", nil)
	if err != nil {
		return m, err
	}
	err = json.Unmarshal(b, &m)
	return m, err
}

// ErrTimeout reports a migration still active when WaitMigration gave up.
var ErrTimeout = errors.New("migration still active")

// WaitMigration polls query-migrate every poll until the migration is
// completed, failed or cancelled, or within has passed (ErrTimeout, with
// the last answer).
func (q *Client) WaitMigration(within, poll time.Duration) (Migration, error) {
	deadline := time.Now().Add(within)
	for {
		m, err := q.QueryMigrate()
		if err != nil {
			return m, err
		}
		switch m.Status {
		case "completed", "failed", "cancelled":
			return m, nil
		}
		if time.Now().After(deadline) {
			return m, ErrTimeout
		}
		time.Sleep(poll)
	}
}
