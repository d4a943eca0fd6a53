package goplugin

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// runFile makes cmd run f, the plugin file Load opened and hashed, and
// not whatever is at its path by the time the process starts: a file
// swapped in at the path after the check never runs. The child inherits
// f and executes it through /proc/self/fd (inherited, not close-on-exec,
// so that a #! script's interpreter can open it too), under the number
// f has here when it can: then what go-plugin reports about cmd.Path
// when the plugin fails to start (its mode, its ELF architecture) is
// about f. f must stay open until the process has started. Without
// /proc, an unpinned plugin runs by path; a pinned one is refused.
func runFile(cmd *exec.Cmd, f *os.File, pinned bool) error {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		if pinned {
			return fmt.Errorf("cannot run the pinned file through its descriptor: %w", err)
		}
		return nil
	}
	n := max(int(f.Fd()), 3+len(cmd.ExtraFiles))
	for 3+len(cmd.ExtraFiles) < n {
		cmd.ExtraFiles = append(cmd.ExtraFiles, nil) // closed in the child
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	cmd.Path = fmt.Sprintf("/proc/self/fd/%d", n)
	return nil
}

// ownGroup starts the plugin in a process group of its own, so that
// endGroup can end the processes it started too.
func ownGroup(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
}

// endGroup SIGKILLs what is left of the process group of the plugin
// process pid (its leader, see ownGroup) once pid has ended, or once
// killed is closed (go-plugin's Kill returned: the process was reaped).
// It waits for the leader first so that go-plugin's graceful shutdown
// runs, and does not wait for go-plugin's Kill, which does not return
// while the plugin's children hold its output pipes. A group's id is not
// reused while any process is in it, so the SIGKILL cannot reach others.
func endGroup(pid int, killed <-chan struct{}) {
	if pid <= 0 {
		return
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
wait:
	for !exited(pid) {
		select {
		case <-killed:
			break wait
		case <-tick.C:
		}
	}
	syscall.Kill(-pid, syscall.SIGKILL)
}

// exited reports whether the child process pid has ended: a zombie (not
// reaped: WNOWAIT leaves that to go-plugin), or gone.
func exited(pid int) bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	return err != nil || info.Signo != 0
}
