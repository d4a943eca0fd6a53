package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// group names a row of the chart: the runs that differ only by path.
func group(r Result) string {
	return fmt.Sprintf("%s\n%s\n%s", r.Workload.Kind, linkName(r.Scenario), r.Model)
}

// linkName is the link and, if any, its fault: "1g, reset@3s".
func linkName(sc Scenario) string {
	if sc.Fault.Kind == "" {
		return sc.Link.Name
	}
	return sc.Link.Name + ", " + sc.Fault.Name
}

// chart draws every run's time to completion as grouped bars: a group
// per model, workload and link, a bar per path. A run that did not
// complete is drawn at zero height and named in the legend's title.
func chart(results []Result, path string) error {
	var groups, paths []string
	for _, r := range results {
		if g := group(r); !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
		if !slices.Contains(paths, r.Path.Name) {
			paths = append(paths, r.Path.Name)
		}
	}
	p := plot.New()
	p.Title.Text = "Time to completion (s); missing bar: failed or not converged"
	p.Y.Label.Text = "seconds"
	w := vg.Points(float64(min(12, 240/max(1, len(paths)))))
	for i, name := range paths {
		vals := make(plotter.Values, len(groups))
		for _, r := range results {
			if r.Path.Name == name && r.Status == "completed" {
				vals[slices.Index(groups, group(r))] = r.Seconds
			}
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return err
		}
		bars.LineStyle.Width = vg.Length(0)
		bars.Color = plotutil.Color(i)
		bars.Offset = w * vg.Length(float64(i)-float64(len(paths)-1)/2)
		p.Add(bars)
		p.Legend.Add(name, bars)
	}
	p.Legend.Top = true
	p.NominalX(groups...)
	width := vg.Length(max(6, 1.2*float64(len(groups))*float64(len(paths))/3)) * vg.Inch
	return p.Save(min(width, 40*vg.Inch), 5*vg.Inch, path)
}

// report writes the Markdown report.
func report(results []Result, o options, command, accel, path string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# The migration lab\n\n")
	fmt.Fprintf(&b, "Made by `%s` on %s (%d CPUs, %s) from `make lab` (`cmd/pagewire-lab`).\n\n",
		command, time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), runtime.GOARCH)
	b.WriteString(labDoc)
	fmt.Fprintf(&b, "\nAccelerator: %s. Guest RAM %d MiB + 64 KiB, workload memory %d MiB, %d multifd channels (and %d link channels through the gateways), downtime limit 300 ms, a run not completed within %v is cancelled (not converged).\n\n",
		accel, o.ram, o.mem, o.channels, o.channels, o.limit)
	fmt.Fprintf(&b, "![time to completion per path](%s)\n\n", relTo(path, o.png))
	sorted := append([]Result(nil), results...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, c := sorted[i], sorted[j]
		if a.Model != c.Model {
			return a.Model < c.Model // shared first
		}
		if a.Workload.Kind != c.Workload.Kind {
			return a.Workload.Kind < c.Workload.Kind
		}
		return linkName(a.Scenario) < linkName(c.Scenario)
	})
	b.WriteString("| model | workload | link | path | status | time s | QEMU total s | downtime ms (QEMU) | downtime ms (end to end) | rounds | link MB | CPU s (src QEMU / dst QEMU / gw-in / gw-out) | guest updates/s before / during (lowest) | RAM equal |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range sorted {
		status := r.Status
		if r.Error != "" && r.Status != "completed" {
			status += ": " + strings.ReplaceAll(r.Error, "|", "/")
		}
		eq := ""
		if r.RAMEqual != nil {
			eq = map[bool]string{true: "yes", false: "**no**"}[*r.RAMEqual]
		}
		cpu := fmt.Sprintf("%.1f / %.1f", r.CPU["source QEMU"], r.CPU["destination QEMU"])
		if r.Path.Gateways {
			cpu += fmt.Sprintf(" / %.1f / %.1f", r.CPU["gateway-in"], r.CPU["gateway-out"])
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %.1f | %.1f | %d | %d | %d | %.0f | %s | %.0f / %.0f (%.0f) | %s |\n",
			r.Model, r.Workload.Kind, linkName(r.Scenario), r.Path.Name, status, r.Seconds, float64(r.QEMUTotalMs)/1000,
			r.QEMUDowntime, r.EndToEndDowntime, r.Rounds, float64(r.LinkBytes)/1e6, cpu,
			r.GuestBefore, r.GuestDuring, r.GuestMin, eq)
	}
	for _, r := range sorted {
		if r.Auto != nil {
			fmt.Fprintf(&b, "\n- %s %s %s %s: %s", r.Model, r.Workload.Kind, linkName(r.Scenario), r.Path.Name, r.Auto)
		}
		if r.GatewayE2E != nil {
			fmt.Fprintf(&b, "\n- %s %s %s %s: gateway-out reported an end-to-end downtime of %d ms (the lab: %d ms)", r.Model, r.Workload.Kind, linkName(r.Scenario), r.Path.Name, *r.GatewayE2E, r.EndToEndDowntime)
		}
		if r.Fault.Kind != "" {
			fmt.Fprintf(&b, "\n- %s %s %s %s: the fault fired %d time(s)", r.Model, r.Workload.Kind, linkName(r.Scenario), r.Path.Name, r.Faults)
			if rs := r.Resume; rs != nil {
				fmt.Fprintf(&b, "; gateway-in resumed %d connection(s), %.1f s down in all, %.2f MB sent again (%.2f%% of the link's bytes)",
					rs.Reconnects, rs.Outage, float64(rs.ResentBytes)/1e6, 100*float64(rs.ResentBytes)/float64(max(1, r.LinkBytes)))
			}
		}
	}
	b.WriteString("\n\nOne JSON object per run: `" + o.jsonOut + "`.\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// relTo is target relative to the directory of from, as the report
// links it.
func relTo(from, target string) string {
	if t, err := filepath.Rel(filepath.Dir(from), target); err == nil {
		return t
	}
	return target
}

// labDoc explains the set-up; it heads every report.
const labDoc = `## What runs

- **Guests.** Debian 12's kernel (one vCPU, TCG unless a KVM guest boots here, machine pc-i440fx-7.2) with
  an initramfs holding busybox and the lab's static workload program
  (` + "`internal/lab/guest/workload.c`" + `). The workload fills its memory, prints
  PAGEWIRE-READY, then dirties it and prints its own progress every second
  (updates per second): *idle* (heap and page cache filled with
  compressible records, nothing dirtied), *records* (a table of records,
  a few random bytes of a random record rewritten per update: small
  updates), *records-random* (the same over random bytes: compression
  cannot help, a delta can), *pages* (whole pages rewritten with random
  bytes: nothing helps).
- **Links.** ` + "`internal/lab/linkemu`" + `: a user-space TCP proxy on loopback with
  a rate cap per direction shared by every connection of the link, a
  one-way delay, and a few milliseconds of queue, so that a sender feels
  the link through TCP as it would a real one.
- **Paths.** *qemu-V-M[-tls]*: QEMU V to QEMU V directly through the link,
  multifd compression M, with QEMU's own TLS (x509, mutual) or without.
  *gw-M*: QEMU 10 -> ` + "`pagewire qemu gateway-in`" + ` -> link -> ` + "`gateway-out`" + ` ->
  QEMU 10, the QEMU legs without compression on unix sockets (each
  gateway on its QEMU's host; loopback TCP with --local-tcp), the link
  with method M and mutual TLS (the gateways' default); *-delta*:
  gateway-in with a delta cache as large as the workload's memory.
  Both gateways get --qmp and report their own end-to-end downtime.
- **CPU models.** *shared*: every process may run on both cores.
  *two-host*: the source side (source QEMU, gateway-in) is pinned to core
  0 and the destination side (destination QEMU, gateway-out) to core 1
  with taskset, the closest a 2-core machine comes to two hosts of one
  core each. The link emulator runs in the lab's own process, unpinned.
- **Figures.** *time*: from the migrate command to the destination's
  completion, polled every 20 ms. *QEMU total* and *downtime (QEMU)*: the
  source's query-migrate. *downtime (end to end)*: from the source's STOP
  event to the destination's completion. *rounds*: dirty-sync-count.
  *downtime (end to end)* uses both QEMUs' own event timestamps (one
  host, one clock): the source's STOP to the destination's MIGRATION
  completed, so it counts what was still in flight after QEMU's own
  figure ended. *link MB*: bytes through the link emulator, both directions. *CPU s*:
  user+system seconds of each process during the migration (a QEMU's
  includes its guest's vCPU under TCG). *guest updates/s*: the workload's
  own figures over the 3 s before the migration and during it (the
  lowest one-second figure; 0 if the guest missed a second). *RAM equal*:
  the destination's RAM file equals the source's at the end, checked
  for every completed run.
`
