package qmp

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeQEMU answers QMP on a unix socket: the greeting, then for each
// command the answers script gives (lines, events included).
func fakeQEMU(t *testing.T, script map[string][]string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte(`{"QMP": {"version": {}, "capabilities": []}}` + "\n"))
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return
			}
			var cmd struct {
				Execute string `json:"execute"`
			}
			json.Unmarshal(line, &cmd)
			answer, ok := script[cmd.Execute]
			if !ok {
				answer = []string{`{"return": {}}`}
			}
			c.Write([]byte(strings.Join(answer, "\n") + "\n"))
		}
	}()
	return sock
}

func TestClient(t *testing.T) {
	sock := fakeQEMU(t, map[string][]string{
		"query-migrate": {
			`{"timestamp": {"seconds": 1700000000, "microseconds": 250000}, "event": "STOP"}`,
			`{"event": "MIGRATION", "data": {"status": "completed"}, "timestamp": {"seconds": 1700000001, "microseconds": 0}}`,
			`{"return": {"status": "completed", "total-time": 1234, "downtime": 56, "ram": {"dirty-sync-count": 7, "transferred": 99}}}`,
		},
		"migrate": {`{"error": {"class": "GenericError", "desc": "no such thing"}}`},
	})
	q, err := Dial(sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	m, err := q.WaitMigration(5*time.Second, 10*time.Millisecond)
	if err != nil || m.Status != "completed" || m.TotalTime != 1234 || m.Downtime != 56 || m.RAM.DirtySyncCount != 7 || m.RAM.Transferred != 99 {
		t.Fatalf("%+v, %v", m, err)
	}
	stop, ok := q.First("STOP")
	if !ok || !stop.Time().Equal(time.Unix(1700000000, 250000000)) || stop.At.IsZero() {
		t.Errorf("STOP %+v", stop)
	}
	if ev := q.Events(); len(ev) != 2 || ev[1].Name != "MIGRATION" || !strings.Contains(string(ev[1].Data), "completed") {
		t.Errorf("events %+v", ev)
	}
	_, err = q.Do("migrate", map[string]any{"uri": "tcp:x"})
	var qe *Error
	if !errors.As(err, &qe) || qe.Desc != "no such thing" || qe.Class != "GenericError" {
		t.Errorf("migrate: %v", err)
	}
}

// TestDialNobody: a socket nobody serves is an error once the time is up.
func TestDialNobody(t *testing.T) {
	start := time.Now()
	_, err := Dial(filepath.Join(t.TempDir(), "none.sock"), 200*time.Millisecond)
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("%v after %v", err, time.Since(start))
	}
}

// TestGarbage: a peer that answers something other than JSON is an
// error naming the command, not a hang or a panic.
func TestGarbage(t *testing.T) {
	sock := fakeQEMU(t, map[string][]string{"query-migrate": {"HTTP/1.1 400 Bad Request"}})
	q, err := Dial(sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := q.QueryMigrate(); err == nil || !strings.Contains(err.Error(), "qmp query-migrate") {
		t.Fatalf("%v", err)
	}
}

// TestWatch: a watching client collects events that come without a
// command, WaitEvent finds them or gives up in time, and Close ends the
// watch.
func TestWatch(t *testing.T) {
	sock := fakeQEMU(t, map[string][]string{
		"qmp_capabilities": {
			`{"return": {}}`,
			`{"timestamp": {"seconds": 1700000000, "microseconds": 250000}, "event": "STOP"}`,
			`{"event": "MIGRATION", "data": {"status": "active"}, "timestamp": {"seconds": 1700000000, "microseconds": 500000}}`,
			`{"event": "MIGRATION", "data": {"status": "completed"}, "timestamp": {"seconds": 1700000001, "microseconds": 0}}`,
		},
	})
	q, err := Dial(sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	q.Watch()
	e, ok := q.WaitEvent(MigrationStatus("completed"), 5*time.Second)
	if !ok || !e.Time().Equal(time.Unix(1700000001, 0)) {
		t.Fatalf("completed: %+v, %v", e, ok)
	}
	if e, ok := q.WaitEvent(func(e Event) bool { return e.Name == "STOP" }, time.Second); !ok || !e.Time().Equal(time.Unix(1700000000, 250000000)) {
		t.Fatalf("STOP: %+v, %v", e, ok)
	}
	start := time.Now()
	if _, ok := q.WaitEvent(func(e Event) bool { return e.Name == "RESUME" }, 100*time.Millisecond); ok || time.Since(start) > 5*time.Second {
		t.Fatalf("RESUME found, or not given up in time (%v)", time.Since(start))
	}
	q.Close()
}
