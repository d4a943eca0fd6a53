package vmbus_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pagewire/pagewire/vmbus"
)

// peerEnv makes the test binary a guest process: "ROLE:SOCKETPATH".
const peerEnv = "PAGEWIRE_VMBUS_PEER"

// echoBytes is what the guest sends on each channel and expects back.
const echoBytes = 3 << 20

// peerMain runs a guest role and returns the exit code.
func peerMain(env string) int {
	role, path, _ := strings.Cut(env, ":")
	if r, ok := strings.CutPrefix(role, "bench-"); ok {
		return benchPeer(r, path)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g, err := vmbus.Dial(ctx, path, vmbus.GuestConfig{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "guest:", err)
		return 1
	}
	defer g.Close()
	switch role {
	case "echo":
		// Open the primary and every sub-channel; each sends a pattern and
		// reads the host's echo of it.
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for i, o := range g.Offers() {
			ch, err := g.Open(ctx, o.Relid)
			if err != nil {
				fmt.Fprintln(os.Stderr, "guest:", err)
				return 1
			}
			wg.Go(func() {
				defer ch.Close()
				src := pattern(i+7, echoBytes)
				go ch.Write(src) // the echo comes back while we write
				got := make([]byte, len(src))
				if _, err := io.ReadFull(ch, got); err != nil {
					errs <- fmt.Errorf("relid %d: %w", o.Relid, err)
					return
				}
				if !bytes.Equal(got, src) {
					errs <- fmt.Errorf("relid %d: echo differs", o.Relid)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			fmt.Fprintln(os.Stderr, "guest:", err)
			return 1
		}
		fmt.Println("guest: ok", len(g.Offers()), "channels")
		return 0
	case "hang":
		ch, err := g.Open(ctx, 1)
		if err != nil {
			fmt.Fprintln(os.Stderr, "guest:", err)
			return 1
		}
		ch.Write([]byte("partial"))
		fmt.Println("ready")
		time.Sleep(time.Minute) // the test kills us
		return 0
	}
	fmt.Fprintln(os.Stderr, "guest: unknown role", role)
	return 2
}

// startPeer starts the test binary as a guest process; it is killed by
// PID and reaped when the test ends.
func startPeer(t *testing.T, role, path string) (*exec.Cmd, *bufio.Reader, chan error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), peerEnv+"="+role+":"+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	rd := bufio.NewReader(out)
	var once sync.Once
	wait := func() {
		once.Do(func() {
			io.Copy(io.Discard, rd)
			err := cmd.Wait()
			if err != nil {
				err = fmt.Errorf("%w: %s", err, stderr.Bytes())
			}
			exited <- err
		})
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		wait()
	})
	return cmd, rd, exited
}

// TestTwoProcesses: the guest is another process; it connects, negotiates,
// opens the primary channel and three sub-channels over memfds it creates,
// and every byte it sends comes back through the host's echo.
func TestTwoProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vmbus.sock")
	ln, err := vmbus.Listen(path, vmbus.HostConfig{Offers: offers(3)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd, out, _ := startPeer(t, "echo", path)
	h, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx := ctxT(t)
	var wg sync.WaitGroup
	defer wg.Wait()
	for range 4 {
		ch, err := h.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer ch.Close()
			n, err := io.Copy(ch, ch)
			if err != nil || n != echoBytes {
				t.Errorf("relid %d: echoed %d bytes: %v", ch.Relid(), n, err)
			}
		})
	}
	line, _ := out.ReadString('\n')
	if line != "guest: ok 4 channels\n" {
		t.Errorf("guest said %q", line)
	}
	done := make(chan error, 1)
	go func() { io.Copy(io.Discard, out); done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("guest: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("guest did not exit")
	}
	select {
	case <-h.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("host did not see the guest leave")
	}
	if h.Version() != vmbus.VersionV5_3 {
		t.Errorf("version %#x", h.Version())
	}
}

// TestPeerProcessKilled: a guest killed mid-transfer fails the host's
// channel with ErrPeerGone after what it wrote is read; nothing hangs.
func TestPeerProcessKilled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vmbus.sock")
	ln, err := vmbus.Listen(path, vmbus.HostConfig{Offers: offers(0)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd, out, _ := startPeer(t, "hang", path)
	h, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ch, err := h.Accept(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if line, _ := out.ReadString('\n'); line != "ready\n" {
		t.Fatalf("guest said %q", line)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	ch.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(ch)
	if string(got) != "partial" || !errors.Is(err, vmbus.ErrPeerGone) {
		t.Fatalf("read %q, %v; want the partial write, then ErrPeerGone", got, err)
	}
}
