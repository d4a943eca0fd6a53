package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pagewire/pagewire/internal/certs"
	"github.com/pagewire/pagewire/internal/lab/guest"
	"github.com/pagewire/pagewire/internal/lab/linkemu"
	"github.com/pagewire/pagewire/internal/qmp"
	"github.com/pagewire/pagewire/plugins/auto"
)

// Link is an emulated link between the two hosts.
type Link struct {
	Name  string        `json:"name"`
	Rate  int64         `json:"rate_bits"` // per direction; 0: unlimited
	Delay time.Duration `json:"delay_ns"`  // one way
}

// Path is how a migration crosses the link.
type Path struct {
	Name string `json:"name"`
	// QEMU is the version at both ends: "7.2" or "10.0".
	QEMU string `json:"qemu"`
	// Method is QEMU's multifd-compression on a direct path; through the
	// gateways the QEMU legs run none and LinkMethod compresses the link.
	Method     string `json:"method"`
	TLS        bool   `json:"tls"`
	Gateways   bool   `json:"gateways"`
	LinkMethod string `json:"link_method,omitempty"`
	// Delta runs gateway-in with a delta cache as large as the
	// workload's memory (--delta-cache).
	Delta bool `json:"delta,omitempty"`
}

// Scenario is one run of the matrix.
type Scenario struct {
	Model    string         `json:"model"` // "shared" or "two-host"
	Workload guest.Workload `json:"workload"`
	Link     Link           `json:"link"`
	Path     Path           `json:"path"`
	Fault    Fault          `json:"fault"`
}

// Fault is what happens to the link during a run: resets or a black
// hole, at a time after the migrate command or at an event.
type Fault struct {
	Name string        `json:"name"`           // as given: none, reset@3s, reset@stop, blackhole:5s@3s, storm
	Kind string        `json:"kind,omitempty"` // reset, blackhole, storm; "" for none
	For  time.Duration `json:"for_ns,omitempty"`
	At   time.Duration `json:"at_ns,omitempty"`
	// On, when set, is the event that fires it instead of At: "stop"
	// (the source stopped the guest: the final round) or "sync2" (the
	// source's second dirty sync: a sync point).
	On string `json:"on,omitempty"`
}

// stormResets and stormEvery are the storm fault: 10 resets in 20 s.
const (
	stormResets = 10
	stormEvery  = 2 * time.Second
)

func parseFault(s string) (Fault, error) {
	f := Fault{Name: s}
	if s == "none" || s == "" {
		f.Name = "none"
		return f, nil
	}
	if s == "storm" {
		f.Kind, f.At = "storm", stormEvery
		return f, nil
	}
	what, when, ok := strings.Cut(s, "@")
	bad := fmt.Errorf("fault %q: want none, storm, reset@TIME|stop|sync2 or blackhole:DURATION@TIME|stop|sync2", s)
	if !ok {
		return f, bad
	}
	switch kind, d, _ := strings.Cut(what, ":"); kind {
	case "reset":
		f.Kind = "reset"
	case "blackhole":
		dur, err := time.ParseDuration(d)
		if err != nil || dur <= 0 {
			return f, bad
		}
		f.Kind, f.For = "blackhole", dur
	default:
		return f, bad
	}
	switch when {
	case "stop", "sync2":
		f.On = when
	default:
		at, err := time.ParseDuration(when)
		if err != nil || at < 0 {
			return f, bad
		}
		f.At = at
	}
	return f, nil
}

// injector fires a Fault on a link; tick is called every poll of the
// migration with what the lab knows.
type injector struct {
	f     Fault
	link  *linkemu.Link
	fired int
	next  time.Time
}

func (in *injector) tick(begin time.Time, stopped bool, syncs int64) {
	f := in.f
	switch {
	case f.Kind == "":
		return
	case f.Kind == "storm":
		if in.fired >= stormResets || time.Since(begin) < f.At+time.Duration(in.fired)*stormEvery {
			return
		}
	case in.fired > 0:
		return
	case f.On == "stop" && !stopped, f.On == "sync2" && syncs < 2, f.On == "" && time.Since(begin) < f.At:
		return
	}
	in.fired++
	if f.Kind == "blackhole" {
		in.link.Blackhole(f.For)
	} else {
		in.link.Reset()
	}
}

// Result is what one run measured.
type Result struct {
	Scenario
	Status string `json:"status"` // completed, failed, not-converged, error
	Error  string `json:"error,omitempty"`
	// Seconds is from the migrate command to the destination's
	// completion, as the lab saw them (polling every 20 ms).
	Seconds float64 `json:"seconds"`
	// QEMU's own figures, from the source's query-migrate.
	QEMUTotalMs  int64 `json:"qemu_total_ms"`
	QEMUDowntime int64 `json:"qemu_downtime_ms"`
	Rounds       int64 `json:"rounds"`
	// EndToEndDowntime is from the source's STOP event to the
	// destination's completion (ms).
	EndToEndDowntime int64 `json:"e2e_downtime_ms"`
	LinkBytes        int64 `json:"link_bytes"` // both directions
	// CPU seconds of each process during the migration.
	CPU map[string]float64 `json:"cpu_s"`
	// The guest's own progress (updates per second): the mean over the
	// 3 s before the migration, and the mean and the lowest one-second
	// figure during it.
	GuestBefore float64 `json:"guest_rate_before"`
	GuestDuring float64 `json:"guest_rate_during"`
	GuestMin    float64 `json:"guest_rate_min"`
	RAMEqual    *bool   `json:"ram_equal,omitempty"`
	// Auto is what the link's auto method chose (gateway-in's summary).
	Auto *auto.Report `json:"auto,omitempty"`
	// GatewayE2E is the end-to-end downtime gateway-out reported (with
	// --qmp on both gateways); EndToEndDowntime is the lab's own reading.
	GatewayE2E *int64 `json:"gateway_e2e_downtime_ms,omitempty"`
	// Faults is how many times the fault fired; Resume is gateway-in's
	// resuming of the link (its summary's link_resume).
	Faults  int            `json:"faults_fired,omitempty"`
	Resume  *resumeFigures `json:"link_resume,omitempty"`
	Started string         `json:"started"`
}

// resumeFigures is a gateway's link_resume summary.
type resumeFigures struct {
	Reconnects  int64   `json:"reconnects"`
	Outage      float64 `json:"outage_s"`
	ResentBytes int64   `json:"resent_bytes"`
}

// Lab holds what every run shares.
type Lab struct {
	Root     string // the repository
	Pagewire string // the pagewire binary
	QEMU     map[string]string
	Kernel   string
	Initrd   string // the guest's initramfs (the command line picks the workload)
	Channels int
	Limit    time.Duration // not converged after this
	MemKiB   int
	Accel    string // tcg or kvm
	AccelWhy string // how it was chosen
	Work     string // a directory for RAM files
	Profile  string // a directory for the gateways' CPU profiles, or ""
	// LocalTCP runs the QEMU legs of the gateways (each QEMU to its
	// gateway, on the same host) over loopback TCP instead of unix
	// sockets.
	LocalTCP bool
	Log      io.Writer
	certs    certs.Files
	qemuTLS  string // a directory in QEMU's tls-creds-x509 layout
}

// profileArgs asks a gateway of sc for a CPU profile in l.Profile.
func (l *Lab) profileArgs(sc Scenario, gw string) []string {
	if l.Profile == "" {
		return nil
	}
	name := strings.Join([]string{sc.Model, sc.Workload.Kind, sc.Link.Name, sc.Path.Name, gw}, "-")
	return []string{"--cpuprofile", filepath.Join(l.Profile, strings.ReplaceAll(name, "+", "_")+".prof")}
}

// proc is a process the lab started.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{}
}

// syncBuffer is a bytes.Buffer a process writes while the lab reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cpuset returns the taskset prefix of a side under a CPU model.
func cpuset(model, side string) []string {
	if model != "two-host" {
		return nil
	}
	if side == "src" {
		return []string{"taskset", "-c", "0"}
	}
	return []string{"taskset", "-c", "1"}
}

func (l *Lab) start(name string, prefix []string, bin string, args ...string) (*proc, error) {
	argv := append(append(append([]string(nil), prefix...), bin), args...)
	p := &proc{name: name, cmd: exec.Command(argv[0], argv[1:]...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	return p, nil
}

// stop ends p: SIGTERM, then SIGKILL after a grace, by PID.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// wait waits for p to exit within d.
func (p *proc) wait(d time.Duration) error {
	select {
	case <-p.done:
		if !p.cmd.ProcessState.Success() {
			return fmt.Errorf("%s: %v: %s", p.name, p.cmd.ProcessState, lastLine(p.stderr.String()))
		}
		return nil
	case <-time.After(d):
		return fmt.Errorf("%s still running after %v", p.name, d)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// cpuSeconds is a process's user+system time: from /proc while it runs,
// from its exit status once it has exited.
func cpuSeconds(p *proc) float64 {
	select {
	case <-p.done:
		st := p.cmd.ProcessState
		return (st.UserTime() + st.SystemTime()).Seconds()
	default:
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100 // USER_HZ
}

// freePort returns a loopback TCP port nobody listens on (QEMU's
// -incoming needs a number).
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// console follows a guest's serial log, stamping each progress line with
// the host's time.
type console struct {
	path  string
	mu    sync.Mutex
	ready time.Time
	marks []mark
	stop  chan struct{}
	done  chan struct{}
}

type mark struct {
	at   time.Time
	rate float64
}

func follow(path string) *console {
	c := &console{path: path, stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c
}

func (c *console) run() {
	defer close(c.done)
	var f *os.File
	var r *bufio.Reader
	var part []byte
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if f == nil {
			if ff, err := os.Open(c.path); err == nil {
				f, r = ff, bufio.NewReader(ff)
				defer f.Close()
			}
		}
		for r != nil {
			b, err := r.ReadBytes('\n')
			part = append(part, b...)
			if err != nil {
				break
			}
			line := string(bytes.TrimSpace(part))
			part = part[:0]
			now := time.Now()
			c.mu.Lock()
			if line == "PAGEWIRE-READY" && c.ready.IsZero() {
				c.ready = now
			}
			if ps := guest.ParseProgress([]byte(line + "\n")); len(ps) == 1 {
				c.marks = append(c.marks, mark{at: now, rate: float64(ps[0].Rate)})
			}
			c.mu.Unlock()
		}
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
	}
}

func (c *console) close() {
	close(c.stop)
	<-c.done
}

// ready4 reports whether the workload is ready and has printed four
// progress lines since.
func (c *console) ready4() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.ready.IsZero() && len(c.marks) >= 4
}

// rates returns the mean rate of the lines in [from, to) and the lowest.
func (c *console) rates(from, to time.Time) (mean, low float64, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	low = -1
	for _, m := range c.marks {
		if m.at.Before(from) || !m.at.Before(to) {
			continue
		}
		mean += m.rate
		n++
		if low < 0 || m.rate < low {
			low = m.rate
		}
	}
	if n > 0 {
		mean /= float64(n)
	}
	// A second without a line is a second the guest did not run.
	if gap := to.Sub(from).Seconds() - float64(n); gap >= 1.5 {
		low = 0
	}
	return mean, max(low, 0), n
}

// probeKVM boots the lab's guest with KVM and reports whether its
// workload gets ready within a bound: on some machines /dev/kvm opens and
// a paused guest migrates, but a KVM guest never gets past early boot.
func (l *Lab) probeKVM(ctx context.Context, qemu string) (bool, string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false, err.Error()
	}
	f.Close()
	dir, err := os.MkdirTemp(l.Work, "kvm-")
	if err != nil {
		return false, err.Error()
	}
	defer os.RemoveAll(dir)
	console := filepath.Join(dir, "console.log")
	w := guest.Records
	w.MemMiB = 16
	p, err := l.start("KVM probe", nil, qemu, "-accel", "kvm", "-cpu", "host", "-m", "256M", "-machine", "pc-i440fx-7.2",
		"-nodefaults", "-vga", "none", "-display", "none", "-kernel", l.Kernel, "-initrd", l.Initrd,
		"-append", guest.Append(w), "-serial", "file:"+console)
	if err != nil {
		return false, err.Error()
	}
	defer p.stop()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		b, _ := os.ReadFile(console)
		if guest.Ready(b) {
			return true, "a KVM guest boots"
		}
		select {
		case <-p.done:
			return false, "QEMU with KVM exited: " + lastLine(p.stderr.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	return false, "/dev/kvm opens, but a KVM guest did not get its workload ready within 30 s"
}

// qemuArgs are a QEMU's arguments for the lab's machine.
func (l *Lab) qemuArgs(ram, sock string) []string {
	mem := fmt.Sprintf("%dK", l.MemKiB)
	return []string{
		"-machine", "pc-i440fx-7.2,memory-backend=pc.ram", "-accel", l.Accel, "-cpu", "max", "-m", mem,
		"-object", "memory-backend-file,id=pc.ram,size=" + mem + ",mem-path=" + ram + ",share=on",
		"-nodefaults", "-vga", "none", "-display", "none",
		"-qmp", "unix:" + sock + ",server=on,wait=off",
		// The gateways' own monitor (their --qmp).
		"-qmp", "unix:" + strings.TrimSuffix(sock, ".qmp") + "-gw.qmp,server=on,wait=off",
	}
}

// tlsObject is the -object of QEMU's TLS credentials for an endpoint.
func (l *Lab) tlsObject(endpoint string) []string {
	return []string{"-object", "tls-creds-x509,id=tls0,dir=" + l.qemuTLS + ",endpoint=" + endpoint + ",verify-peer=on"}
}

// prepareTLS makes the certificates of every run: pagewire's files for
// the gateways, and a copy in QEMU's layout.
func (l *Lab) prepareTLS() error {
	dir := filepath.Join(l.Work, "tls")
	f, err := certs.Make(dir, []string{"127.0.0.1", "localhost"}, 24*time.Hour)
	if err != nil {
		return err
	}
	l.certs = f
	l.qemuTLS = filepath.Join(l.Work, "qemu-tls")
	if err := os.MkdirAll(l.qemuTLS, 0o700); err != nil {
		return err
	}
	for src, dst := range map[string]string{
		f.CA: "ca-cert.pem", f.ServerCert: "server-cert.pem", f.ServerKey: "server-key.pem",
		f.ClientCert: "client-cert.pem", f.ClientKey: "client-key.pem",
	} {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(l.qemuTLS, dst), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// Run runs one scenario; a run that cannot be set up is a Result with
// status "error".
func (l *Lab) Run(ctx context.Context, sc Scenario) Result {
	res := Result{Scenario: sc, Status: "error", CPU: map[string]float64{}, Started: time.Now().UTC().Format(time.RFC3339)}
	if err := l.run(ctx, sc, &res); err != nil {
		res.Error = err.Error()
		if res.Status == "" {
			res.Status = "error"
		}
	}
	return res
}

func (l *Lab) run(ctx context.Context, sc Scenario, res *Result) error {
	dir, err := os.MkdirTemp(l.Work, "run-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var procs []*proc
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop()
		}
	}()
	qbin := l.QEMU[sc.Path.QEMU]
	if qbin == "" {
		return fmt.Errorf("no QEMU %s", sc.Path.QEMU)
	}
	srcRAM, dstRAM := filepath.Join(dir, "src.ram"), filepath.Join(dir, "dst.ram")
	srcSock, dstSock := filepath.Join(dir, "src.qmp"), filepath.Join(dir, "dst.qmp")
	consolePath := filepath.Join(dir, "console.log")

	// The destination, listening.
	dstPort, err := freePort()
	if err != nil {
		return err
	}
	args := append(l.qemuArgs(dstRAM, dstSock), "-S", "-incoming", "defer", "-serial", "null")
	directTLS := sc.Path.TLS && !sc.Path.Gateways
	if directTLS {
		args = append(args, l.tlsObject("server")...)
	}
	dst, err := l.start("destination QEMU", cpuset(sc.Model, "dst"), qbin, args...)
	if err != nil {
		return err
	}
	procs = append(procs, dst)
	dq, err := dialQMP(dst, dstSock)
	if err != nil {
		return err
	}
	defer dq.Close()
	method := sc.Path.Method
	if sc.Path.Gateways {
		method = "none"
	}
	params := map[string]any{"multifd-channels": l.Channels, "multifd-compression": method}
	if directTLS {
		params["tls-creds"] = "tls0"
	}
	caps := map[string]any{"capabilities": []any{
		map[string]any{"capability": "multifd", "state": true},
		map[string]any{"capability": "events", "state": true},
	}}
	// A gateway's QEMU leg stays on its host: a unix socket, unless
	// LocalTCP.
	incoming := fmt.Sprintf("tcp:127.0.0.1:%d", dstPort)
	local := sc.Path.Gateways && !l.LocalTCP
	if local {
		incoming = "unix:" + filepath.Join(dir, "dst.mig")
	}
	if err := doAll(dq, "destination", "migrate-set-capabilities", caps, "migrate-set-parameters", params,
		"migrate-incoming", map[string]any{"uri": incoming}); err != nil {
		return err
	}

	// The link, and the gateways around it.
	target := fmt.Sprintf("127.0.0.1:%d", dstPort)
	var in, out *proc
	if sc.Path.Gateways {
		args := []string{"qemu", "gateway-out", "--listen", "tcp:127.0.0.1:0", "--to", incoming,
			"--qmp", strings.TrimSuffix(dstSock, ".qmp") + "-gw.qmp",
			"--qemu-channels", strconv.Itoa(l.Channels), "--qemu-method", "none", "--json", "--progress=false",
			"--tls-cert", l.certs.ServerCert, "--tls-key", l.certs.ServerKey, "--tls-ca", l.certs.CA}
		args = append(args, l.profileArgs(sc, "gateway-out")...)
		if out, err = l.start("gateway-out", cpuset(sc.Model, "dst"), l.Pagewire, args...); err != nil {
			return err
		}
		procs = append(procs, out)
		outAddr, err := listening(out, 30*time.Second)
		if err != nil {
			return err
		}
		target = strings.TrimPrefix(outAddr, "tcp:")
	}
	link, err := linkemu.Listen("127.0.0.1:0", target, linkemu.Config{Rate: sc.Link.Rate, Delay: sc.Link.Delay})
	if err != nil {
		return err
	}
	defer link.Close()
	migrateTo := "tcp:" + link.Addr().String()
	if sc.Path.Gateways {
		listen := "tcp:127.0.0.1:0"
		if local {
			listen = "unix:" + filepath.Join(dir, "gw-in.sock")
		}
		args := []string{"qemu", "gateway-in", "--listen", listen, "--to", "tcp:" + link.Addr().String(),
			"--qemu-channels", strconv.Itoa(l.Channels), "--qemu-method", "none",
			"--channels", strconv.Itoa(l.Channels), "--method", sc.Path.LinkMethod, "--json", "--progress=false",
			"--qmp", strings.TrimSuffix(srcSock, ".qmp") + "-gw.qmp",
			"--tls-cert", l.certs.ClientCert, "--tls-key", l.certs.ClientKey, "--tls-ca", l.certs.CA}
		if sc.Path.Delta {
			args = append(args, "--delta-cache", fmt.Sprintf("%dM", sc.Workload.MemMiB))
		}
		args = append(args, l.profileArgs(sc, "gateway-in")...)
		if in, err = l.start("gateway-in", cpuset(sc.Model, "src"), l.Pagewire, args...); err != nil {
			return err
		}
		procs = append(procs, in)
		if migrateTo, err = listening(in, 30*time.Second); err != nil {
			return err
		}
	}

	// The source: boot the guest and let its workload fill its memory.
	args = append(l.qemuArgs(srcRAM, srcSock), "-kernel", l.Kernel, "-initrd", l.Initrd,
		"-append", guest.Append(sc.Workload), "-serial", "file:"+consolePath)
	if directTLS {
		args = append(args, l.tlsObject("client")...)
	}
	src, err := l.start("source QEMU", cpuset(sc.Model, "src"), qbin, args...)
	if err != nil {
		return err
	}
	procs = append(procs, src)
	con := follow(consolePath)
	defer con.close()
	sq, err := dialQMP(src, srcSock)
	if err != nil {
		return err
	}
	defer sq.Close()
	// Ready, then four progress lines: the 3 s before the migration
	// that the guest's rate before is taken from.
	bootBy := time.Now().Add(5 * time.Minute)
	for !con.ready4() {
		if time.Now().After(bootBy) {
			b, _ := os.ReadFile(consolePath)
			return fmt.Errorf("the guest's workload was not ready and running within 5 minutes: %s", lastLine(string(b)))
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		select {
		case <-src.done:
			return fmt.Errorf("source QEMU exited: %s", lastLine(src.stderr.String()))
		case <-time.After(200 * time.Millisecond):
		}
	}
	params = map[string]any{"multifd-channels": l.Channels, "multifd-compression": method,
		"downtime-limit": 300, "max-bandwidth": int64(64) << 30}
	if directTLS {
		params["tls-creds"] = "tls0"
	}
	if err := doAll(sq, "source", "migrate-set-capabilities", caps, "migrate-set-parameters", params); err != nil {
		return err
	}

	// Migrate.
	cpu0 := map[string]float64{}
	for _, p := range procs {
		cpu0[p.name] = cpuSeconds(p)
	}
	begin := time.Now()
	if _, err := sq.Do("migrate", map[string]any{"uri": migrateTo}); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	fault := &injector{f: sc.Fault, link: link}
	defer func() { res.Faults = fault.fired }()
	res.Status = ""
	var srcDone, dstDone time.Time
	var m qmp.Migration
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if srcDone.IsZero() {
			if m, err = sq.QueryMigrate(); err != nil {
				return err
			}
			switch m.Status {
			case "failed", "cancelled":
				res.Status = "failed"
				return fmt.Errorf("source: %s %s%s", m.Status, m.ErrorDesc, gatewayErrors(in, out))
			case "completed":
				srcDone = time.Now()
			}
		}
		d, err := dq.QueryMigrate()
		if err != nil {
			return err
		}
		switch d.Status {
		case "failed", "cancelled":
			res.Status = "failed"
			return fmt.Errorf("destination: %s %s%s", d.Status, d.ErrorDesc, gatewayErrors(in, out))
		case "completed":
			dstDone = time.Now()
		}
		if !dstDone.IsZero() && !srcDone.IsZero() {
			break
		}
		_, stopped := sq.First("STOP")
		fault.tick(begin, stopped, m.RAM.DirtySyncCount)
		if time.Since(begin) > l.Limit {
			if srcDone.IsZero() {
				for _, p := range procs {
					res.CPU[p.name] = cpuSeconds(p) - cpu0[p.name]
				}
				sq.Do("migrate_cancel", nil)
				res.Status = "not-converged"
				res.QEMUTotalMs = m.TotalTime
				res.Seconds = time.Since(begin).Seconds()
				res.Rounds = m.RAM.DirtySyncCount
				res.LinkBytes = link.Stats().Up + link.Stats().Down
				res.GuestBefore, _, _ = con.rates(begin.Add(-3*time.Second), begin)
				res.GuestDuring, res.GuestMin, _ = con.rates(begin, time.Now())
				return fmt.Errorf("not converged within %v (%d rounds, %s remaining)", l.Limit, m.RAM.DirtySyncCount, mib(m.RAM.Remaining))
			}
			if time.Since(srcDone) > time.Minute {
				res.Status = "failed"
				return fmt.Errorf("the destination did not complete within a minute of the source%s", gatewayErrors(in, out))
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	res.Seconds = dstDone.Sub(begin).Seconds()
	for _, p := range procs {
		res.CPU[p.name] = cpuSeconds(p) - cpu0[p.name]
	}
	res.QEMUTotalMs, res.QEMUDowntime, res.Rounds = m.TotalTime, m.Downtime, m.RAM.DirtySyncCount
	// Both QEMUs stamp their events with this host's clock: the source's
	// STOP to the destination's MIGRATION completed.
	if stop, ok := sq.First("STOP"); ok {
		end := dstDone
		for _, e := range dq.Events() {
			if qmp.MigrationStatus("completed")(e) {
				end = e.Time()
			}
		}
		res.EndToEndDowntime = end.Sub(stop.Time()).Milliseconds()
	}
	st := link.Stats()
	res.LinkBytes = st.Up + st.Down
	res.GuestBefore, _, _ = con.rates(begin.Add(-3*time.Second), begin)
	res.GuestDuring, res.GuestMin, _ = con.rates(begin, srcDone)
	for _, p := range []*proc{in, out} {
		if p != nil {
			if err := p.wait(time.Minute); err != nil {
				res.Status = "failed"
				return err
			}
		}
	}
	if in != nil {
		var sum struct {
			Auto   *auto.Report   `json:"auto"`
			Resume *resumeFigures `json:"link_resume"`
		}
		if json.Unmarshal([]byte(in.stdout.String()), &sum) == nil {
			res.Auto, res.Resume = sum.Auto, sum.Resume
		}
	}
	if out != nil {
		var sum struct {
			E2E *int64 `json:"e2e_downtime_ms"`
		}
		if json.Unmarshal([]byte(out.stdout.String()), &sum) == nil {
			res.GatewayE2E = sum.E2E
		}
	}
	eq, err := sameFiles(srcRAM, dstRAM)
	if err != nil {
		return err
	}
	res.RAMEqual = &eq
	res.Status = "completed"
	if !eq {
		res.Status = "failed"
		return errors.New("the destination's RAM differs from the source's")
	}
	return nil
}

// dialQMP connects to the QMP socket of the QEMU p; an error says why
// QEMU did not start, if it exited.
func dialQMP(p *proc, sock string) (*qmp.Client, error) {
	q, err := qmp.Dial(sock, 30*time.Second)
	if err != nil {
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s exited: %s", p.name, lastLine(p.stderr.String()))
		default:
		}
	}
	return q, err
}

// doAll runs commands given as name, arguments, name, arguments...; an
// error names the QEMU (who).
func doAll(q *qmp.Client, who string, cmds ...any) error {
	for i := 0; i+1 < len(cmds); i += 2 {
		if _, err := q.Do(cmds[i].(string), cmds[i+1]); err != nil {
			return fmt.Errorf("%s: %w", who, err)
		}
	}
	return nil
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

// gatewayErrors is the last line of each gateway's stderr, if any.
func gatewayErrors(in, out *proc) string {
	var s string
	for _, p := range []*proc{in, out} {
		if p != nil {
			if e := lastLine(p.stderr.String()); e != "" {
				s += "; " + p.name + ": " + e
			}
		}
	}
	return s
}

// listening waits for a pagewire command's "listening on ADDR" line on
// stderr.
func listening(p *proc, within time.Duration) (string, error) {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(p.stderr.String(), "\n") {
			if i := strings.Index(line, "listening on "); i >= 0 {
				f := strings.Fields(line[i+len("listening on "):])
				if len(f) > 0 {
					return f[0], nil
				}
			}
		}
		select {
		case <-p.done:
			return "", fmt.Errorf("%s exited: %s", p.name, lastLine(p.stderr.String()))
		case <-time.After(20 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("%s did not listen within %v", p.name, within)
}

// sameFiles compares two files a MiB at a time.
func sameFiles(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if ea != nil || eb != nil {
			return (ea == io.EOF || ea == io.ErrUnexpectedEOF) && (eb == io.EOF || eb == io.ErrUnexpectedEOF), nil
		}
	}
}
