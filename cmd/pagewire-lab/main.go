// Command pagewire-lab is pagewire's migration lab: it migrates running
// guests between real QEMUs, directly and through pagewire's gateways,
// over an emulated link, and reports what each path costs side by side.
//
// It is a benchmark harness, not a test: 'make lab' runs the matrix,
// 'make lab-quick' a subset of it in a few minutes. Every run boots
// Debian's kernel under QEMU (TCG) with the lab's workload program in its
// initramfs, waits until the workload has filled its memory, migrates,
// and checks the destination's RAM against the source's. docs/lab.md
// explains the set-up and holds the last report.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/pagewire/pagewire/internal/lab/guest"
)

func main() {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := rootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "pagewire-lab: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	quick              bool
	models, workloads  []string
	links, paths       []string
	faults             []string
	out, jsonOut, png  string
	pagewire           string
	qemu72, qemu10     string
	channels, mem, ram int
	limit              time.Duration
	work               string
	list               bool
	accel              string
	profile            string
	localTCP           bool
}

func rootCmd() *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:   "pagewire-lab",
		Short: "Migrate running guests between real QEMUs over an emulated link, directly and through pagewire's gateways",
		Long: `pagewire-lab runs a matrix of migrations and writes a report: a Markdown
table and a chart (docs/lab.md, docs/lab.png) and one JSON object per run.

Each run boots Debian's kernel under QEMU (TCG) with the lab's workload in
its initramfs, waits until the workload filled its memory, then migrates
it over a user-space link emulator (a shared rate cap and a one-way
delay), either QEMU to QEMU directly or through 'pagewire qemu gateway-in'
and 'gateway-out', and checks that the destination's RAM equals the
source's. Run 'make build' first: it builds bin/pagewire and fetches the
kernel, busybox and QEMU 10.`,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.quick {
				quickSet(&o, cmd.Flags().Changed)
			}
			return run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.quick, "quick", false, "a subset that runs in a few minutes (make lab-quick); explicit --workloads, --links, --paths and --models still apply")
	f.StringSliceVar(&o.models, "models", []string{"shared", "two-host"}, "CPU models: shared (every process on both cores) and two-host (source side on core 0, destination side on core 1)")
	f.StringSliceVar(&o.workloads, "workloads", []string{"idle", "records", "records-random", "pages"}, "guest workloads (see docs/lab.md)")
	f.StringSliceVar(&o.links, "links", []string{"unlimited", "unlimited+25ms", "1g", "1g+25ms", "100m", "100m+25ms"}, "links: unlimited, 1g, 100m or RATE[k|m|g] (bits/s), with +DELAY for a one-way delay")
	f.StringSliceVar(&o.paths, "paths", defaultPaths, "paths: qemu-VERSION-METHOD[-tls] (QEMU to QEMU) or gw-LINKMETHOD[-delta] (QEMU 10 -> gateway-in -> link -> gateway-out -> QEMU 10, TLS on the link; -delta: gateway-in --delta-cache of the workload's memory)")
	f.StringSliceVar(&o.faults, "faults", []string{"none"}, "what happens to the link during each run: none; reset@TIME (a TCP reset of every connection TIME after the migrate command), reset@sync2 (at the source's second dirty sync), reset@stop (once the source stopped the guest: the final round); blackhole:DURATION@TIME|sync2|stop (nothing forwarded for DURATION); storm (10 resets, one every 2 s)")
	f.StringVar(&o.out, "out", "docs/lab.md", "the Markdown report")
	f.StringVar(&o.jsonOut, "json", "docs/lab.jsonl", "one JSON object per run")
	f.StringVar(&o.png, "chart", "docs/lab.png", "the chart")
	f.StringVar(&o.pagewire, "pagewire", "bin/pagewire", "the pagewire binary (make build)")
	f.StringVar(&o.qemu72, "qemu72", "", "QEMU 7.2 (default: qemu-system-x86_64 on PATH)")
	f.StringVar(&o.qemu10, "qemu10", "build/qemu10/bin/qemu-system-x86_64", "QEMU 10.0 (scripts/qemu10.sh)")
	f.IntVar(&o.channels, "channels", 4, "multifd channels, on QEMU and on the link")
	f.IntVar(&o.mem, "mem", 512, "MiB the workload fills and dirties")
	f.IntVar(&o.ram, "ram", 1024, "guest RAM in MiB (64 KiB are added: TCG QEMU loses dirty bits on blocks of a multiple of 64 pages)")
	f.DurationVar(&o.limit, "limit", 120*time.Second, "a migration still running after this is cancelled and reported not converged")
	f.StringVar(&o.work, "work", "/dev/shm", "where the runs' RAM files go (two of --ram each)")
	f.BoolVar(&o.localTCP, "local-tcp", false, "connect each QEMU to its gateway over loopback TCP instead of a unix socket (the gateways' QEMU legs stay on their host either way)")
	f.StringVar(&o.profile, "profile", "", "write a CPU profile of both gateways of every gateway run into DIR (RUN-gateway-in.prof, RUN-gateway-out.prof; go tool pprof)")
	f.BoolVar(&o.list, "list", false, "print the runs and exit")
	f.StringVar(&o.accel, "accel", "auto", "QEMU's accelerator: tcg, kvm, or auto (KVM if a KVM guest boots here, checked with a probe guest, else TCG)")
	return cmd
}

var defaultPaths = []string{
	"qemu-7.2-none", "qemu-7.2-zstd", "qemu-7.2-none-tls", "qemu-7.2-zstd-tls",
	"qemu-10.0-none", "qemu-10.0-zstd", "qemu-10.0-none-tls", "qemu-10.0-zstd-tls",
	"gw-nocomp", "gw-zlib", "gw-zstd", "gw-lz4", "gw-auto",
}

// quickSet is make lab-quick: the small-update guest at 1 Gbit/s, QEMU 10
// zstd with TLS against the gateways with zstd, lz4 and auto.
func quickSet(o *options, changed func(string) bool) {
	if !changed("workloads") {
		o.workloads = []string{"records"}
	}
	if !changed("links") {
		o.links = []string{"1g"}
	}
	if !changed("paths") {
		o.paths = []string{"qemu-10.0-zstd-tls", "gw-zstd", "gw-lz4", "gw-auto"}
	}
	if !changed("models") {
		o.models = []string{"shared"}
	}
	if !changed("mem") {
		o.mem = 256
	}
}

func parseLink(s string) (Link, error) {
	l := Link{Name: s}
	rate, delay, hasDelay := strings.Cut(s, "+")
	if hasDelay {
		d, err := time.ParseDuration(delay)
		if err != nil {
			return l, fmt.Errorf("link %q: delay: %w", s, err)
		}
		l.Delay = d
	}
	if rate == "unlimited" {
		return l, nil
	}
	mult := int64(1)
	switch {
	case strings.HasSuffix(rate, "g"):
		mult, rate = 1e9, strings.TrimSuffix(rate, "g")
	case strings.HasSuffix(rate, "m"):
		mult, rate = 1e6, strings.TrimSuffix(rate, "m")
	case strings.HasSuffix(rate, "k"):
		mult, rate = 1e3, strings.TrimSuffix(rate, "k")
	}
	var n int64
	if _, err := fmt.Sscan(rate, &n); err != nil || n <= 0 {
		return l, fmt.Errorf("link %q: want unlimited, 1g, 100m or RATE[k|m|g], with an optional +DELAY", s)
	}
	l.Rate = n * mult
	return l, nil
}

func parsePath(s string) (Path, error) {
	p := Path{Name: s}
	if m, ok := strings.CutPrefix(s, "gw-"); ok {
		m, p.Delta = strings.CutSuffix(m, "-delta")
		p.QEMU, p.Gateways, p.TLS, p.LinkMethod, p.Method = "10.0", true, true, m, "none"
		switch m {
		case "nocomp", "zlib", "zstd", "lz4", "auto":
			return p, nil
		}
		return p, fmt.Errorf("path %q: link method %q: want nocomp, zlib, zstd, lz4 or auto", s, m)
	}
	f := strings.Split(s, "-")
	if len(f) < 3 || len(f) > 4 || f[0] != "qemu" || (f[1] != "7.2" && f[1] != "10.0") ||
		(f[2] != "none" && f[2] != "zstd" && f[2] != "zlib") || (len(f) == 4 && f[3] != "tls") {
		return p, fmt.Errorf("path %q: want qemu-{7.2,10.0}-{none,zlib,zstd}[-tls] or gw-{nocomp,zlib,zstd,lz4,auto}[-delta]", s)
	}
	p.QEMU, p.Method, p.TLS = f[1], f[2], len(f) == 4
	return p, nil
}

func run(ctx context.Context, o options) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	var scenarios []Scenario
	works := map[string]guest.Workload{}
	for _, w := range guest.Workloads() {
		works[w.Kind] = w
	}
	for _, model := range o.models {
		if model != "shared" && model != "two-host" {
			return fmt.Errorf("--models: %q: want shared or two-host", model)
		}
		for _, wn := range o.workloads {
			w, ok := works[wn]
			if !ok {
				return fmt.Errorf("--workloads: no workload %q", wn)
			}
			w.MemMiB = o.mem
			for _, ls := range o.links {
				link, err := parseLink(ls)
				if err != nil {
					return err
				}
				for _, fs := range o.faults {
					fault, err := parseFault(fs)
					if err != nil {
						return err
					}
					for _, ps := range o.paths {
						path, err := parsePath(ps)
						if err != nil {
							return err
						}
						scenarios = append(scenarios, Scenario{Model: model, Workload: w, Link: link, Path: path, Fault: fault})
					}
				}
			}
		}
	}
	if o.list {
		for _, sc := range scenarios {
			fmt.Printf("%s %s %s %s %s\n", sc.Model, sc.Workload.Kind, sc.Link.Name, sc.Fault.Name, sc.Path.Name)
		}
		return nil
	}
	lab, err := setup(ctx, root, o, scenarios)
	if err != nil {
		return err
	}
	defer os.RemoveAll(lab.Work)
	var jf *os.File
	if o.jsonOut != "" {
		if jf, err = os.Create(o.jsonOut); err != nil {
			return err
		}
		defer jf.Close()
	}
	var results []Result
	start := time.Now()
	for i, sc := range scenarios {
		if ctx.Err() != nil {
			break
		}
		fmt.Fprintf(os.Stderr, "[%d/%d %s] %s %s %s %s %s ... ", i+1, len(scenarios), time.Since(start).Round(time.Second),
			sc.Model, sc.Workload.Kind, linkName(sc), sc.Path.Name, sc.Fault.Name)
		r := lab.Run(ctx, sc)
		results = append(results, r)
		fmt.Fprintf(os.Stderr, "%s %.1fs %s\n", r.Status, r.Seconds, r.Error)
		if jf != nil {
			b, _ := json.Marshal(r)
			jf.Write(append(b, '\n'))
		}
	}
	if len(results) == 0 {
		return ctx.Err()
	}
	command := "pagewire-lab " + strings.Join(os.Args[1:], " ")
	if o.png != "" {
		if err := chart(results, o.png); err != nil {
			return fmt.Errorf("chart: %w", err)
		}
	}
	if o.out != "" {
		if err := report(results, o, command, lab.Accel+" ("+lab.AccelWhy+")", o.out); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "report: %s, %s, %s\n", o.out, o.png, o.jsonOut)
	}
	return ctx.Err()
}

// repoRoot finds the repository from the working directory.
func repoRoot() (string, error) {
	root, err := guest.Root()
	if err == nil {
		_, err = os.Stat(filepath.Join(root, "internal", "lab"))
	}
	if err != nil {
		return "", errors.New("run pagewire-lab from pagewire's repository (make lab)")
	}
	return root, nil
}

// setup checks and builds what the runs need.
func setup(ctx context.Context, root string, o options, scenarios []Scenario) (*Lab, error) {
	l := &Lab{Root: root, Channels: o.channels, Limit: o.limit, MemKiB: o.ram<<10 + 64, QEMU: map[string]string{}, Log: os.Stderr, Profile: o.profile, LocalTCP: o.localTCP}
	var err error
	if l.Pagewire, err = filepath.Abs(o.pagewire); err != nil {
		return nil, err
	}
	if _, err := os.Stat(l.Pagewire); err != nil {
		return nil, fmt.Errorf("%v: run 'make build' first", err)
	}
	q72 := o.qemu72
	if q72 == "" {
		if q72, err = exec.LookPath("qemu-system-x86_64"); err != nil {
			return nil, errors.New("qemu-system-x86_64 (QEMU 7.2) not found: run 'make build' (scripts/setup.sh installs it)")
		}
	}
	for v, bin := range map[string]string{"7.2": q72, "10.0": o.qemu10} {
		out, err := exec.Command(bin, "--version").Output()
		if err != nil || !strings.Contains(string(out), "version "+v+".") {
			return nil, fmt.Errorf("%s is not QEMU %s (%v): run 'make build' (scripts/setup.sh, scripts/qemu10.sh)", bin, v, err)
		}
		l.QEMU[v] = bin
	}
	for _, sc := range scenarios {
		if sc.Model == "two-host" {
			if _, err := exec.LookPath("taskset"); err != nil {
				return nil, errors.New("the two-host model needs taskset (util-linux)")
			}
		}
	}
	if l.Kernel, err = guest.Kernel(root); err != nil {
		return nil, err
	}
	if l.Work, err = os.MkdirTemp(o.work, "pagewire-lab-"); err != nil {
		return nil, err
	}
	bin, err := guest.BuildWorkload(root, l.Work)
	if err != nil {
		return nil, err
	}
	// One initramfs: the kernel's command line picks the workload.
	l.Initrd = filepath.Join(l.Work, "initramfs.cpio")
	if err := guest.Initramfs(l.Initrd, filepath.Join(root, "build", "guest", "busybox"), bin); err != nil {
		return nil, err
	}
	if err := l.prepareTLS(); err != nil {
		return nil, err
	}
	switch o.accel {
	case "tcg", "kvm":
		l.Accel, l.AccelWhy = o.accel, "--accel "+o.accel
	case "auto":
		l.Accel = "tcg"
		ok, why := l.probeKVM(ctx, l.QEMU["10.0"])
		if ok {
			l.Accel = "kvm"
		}
		l.AccelWhy = why
		fmt.Fprintf(os.Stderr, "accelerator %s: %s\n", l.Accel, why)
	default:
		return nil, fmt.Errorf("--accel %q: want tcg, kvm or auto", o.accel)
	}
	return l, nil
}
