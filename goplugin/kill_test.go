package goplugin_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/goplugin"
	"github.com/pagewire/pagewire/internal/pagegen"
	"github.com/pagewire/pagewire/plugins/zstd"
	"github.com/pagewire/pagewire/sdk"
)

// killer wraps a method: channel 0's sender kills pid before packet at.
type killer struct {
	sdk.Method
	pid int
	at  uint64
}

func (k killer) NewSender(ch int, o sdk.Options) (sdk.Sender, error) {
	s, err := k.Method.NewSender(ch, o)
	if err != nil || ch != 0 {
		return s, err
	}
	return &killSender{Sender: s, k: k}, nil
}

type killSender struct {
	sdk.Sender
	k killer
}

func (s *killSender) Prepare(p *sdk.Packet, dst []byte) ([]byte, error) {
	if p.Seq == s.k.at {
		syscall.Kill(s.k.pid, syscall.SIGKILL)
	}
	return s.Sender.Prepare(p, dst)
}

// alive reports whether pid is a running process (not gone, not a zombie
// waiting for a reaper).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// gone waits up to d for pid to stop running.
func gone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for alive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// TestKilledMidTransfer: the plugin process dies mid-transfer (the sender
// kills it by pid before channel 0's 20th packet): both ends fail within
// seconds with an error naming the plugin, and nothing is leaked.
func TestKilledMidTransfer(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, side := range []string{"sender", "both"} {
		t.Run(side, func(t *testing.T) {
			m, err := goplugin.Load(bins["zstd"], goplugin.Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			pid := m.Pid()
			ms := sdk.Method(killer{Method: m, pid: pid, at: 20})
			var mr sdk.Method = zstd.New()
			if side == "both" {
				mr = m
			}
			img := pagegen.Image(64<<20, 4096, 3)
			dst := make([]byte, len(img))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			p := channels.NewPipe()
			done := make(chan error, 1)
			r := core.NewReceiver(core.ReceiverConfig{Method: mr, Memory: core.Blocks{{Name: "pc.ram", Data: dst}}})
			go func() {
				_, err := r.Receive(ctx, p)
				done <- err
			}()
			start := time.Now()
			s, err := core.NewSender(ctx, p, core.Blocks{{Name: "pc.ram", Data: img}}, core.SenderConfig{Channels: 2, Method: ms})
			if err != nil {
				t.Fatal(err)
			}
			s.SendBlock("pc.ram")
			_, serr := s.Close()
			var rerr error
			select {
			case rerr = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the receiver did not stop")
			}
			if el := time.Since(start); el > 5*time.Second {
				t.Errorf("both ends took %v to stop", el)
			}
			for _, e := range []struct {
				end string
				err error
			}{{"sender", serr}, {"receiver", rerr}} {
				if e.err == nil || !strings.Contains(e.err.Error(), "pw-zstd") {
					t.Errorf("%s: %v, want an error naming pw-zstd", e.end, e.err)
				}
				t.Logf("%s: %v", e.end, e.err)
			}
			// core keeps the method's error as text (ErrMethod). With the
			// plugin on both ends, the receiver may notice first: then the
			// sender reports the receiver's reason.
			var re *core.RemoteError
			if own := errors.Is(serr, core.ErrMethod); !(own || side == "both" && errors.As(serr, &re)) ||
				!strings.Contains(serr.Error(), goplugin.ErrPlugin.Error()) {
				t.Errorf("sender: %v, want ErrMethod (or, with the plugin on both ends, the receiver's reason) with the plugin's ErrPlugin", serr)
			}
			// SIGKILL is delivered asynchronously: the sockets close
			// (which is how both ends learn of it) before the process
			// becomes a zombie, so give the kernel a moment.
			if !gone(pid, 5*time.Second) {
				t.Errorf("plugin %d still running 5s after it was killed", pid)
			}
		})
	}
}

// TestHostExit: whether the host closes the plugin, exits without closing
// it, fails with exit status 1, or is killed, no plugin process is left.
func TestHostExit(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, how := range []string{"close", "normal", "error", "crash"} {
		t.Run(how, func(t *testing.T) {
			cmd := exec.Command(self)
			cmd.Env = append(os.Environ(), modeEnv+"=host", "PAGEWIRE_HOST_PLUGIN="+bins["zstd"], "PAGEWIRE_HOST_EXIT="+how)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(out).ReadString('\n')
			pid, perr := strconv.Atoi(strings.TrimSpace(line))
			if err != nil || perr != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("host printed %q: %v %v", line, err, perr)
			}
			if how == "crash" {
				cmd.Process.Kill()
			}
			err = cmd.Wait()
			t.Logf("host: %v", err)
			if !gone(pid, 5*time.Second) {
				syscall.Kill(pid, syscall.SIGKILL)
				t.Fatalf("plugin %d still running 5s after its host exited", pid)
			}
		})
	}
}
