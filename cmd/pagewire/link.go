package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/channels/resume"
	"github.com/pagewire/pagewire/internal/certs"
)

// link holds the flags of a link between two pagewire ends: mutual TLS,
// a bandwidth cap, and resuming after lost connections.
type link struct {
	tls        channels.TLSFiles
	insecure   bool
	required   bool // TLS is on unless --insecure (the gateways)
	serverName string
	bandwidth  string
	retry      time.Duration // --link-retry: 0 is off
	role       string        // for the link's messages: "gateway-in"
	stats      func() resume.Stats
}

func (l *link) register(cmd *cobra.Command, required, sender bool) {
	l.required = required
	f := cmd.Flags()
	f.StringVar(&l.tls.Cert, "tls-cert", "", "this end's certificate (PEM) for mutual TLS 1.3 with the peer")
	f.StringVar(&l.tls.Key, "tls-key", "", "the --tls-cert's private key (PEM)")
	f.StringVar(&l.tls.CA, "tls-ca", "", "the CA (PEM) that signed the peer's certificate")
	if sender {
		f.StringVar(&l.serverName, "tls-server-name", "", "the name the listener's certificate must have (default: the host dialed; localhost for unix: and vmbus: addresses)")
	}
	if required {
		f.BoolVar(&l.insecure, "insecure", false, "run the link without TLS: anyone on the path can read and change the pages")
	}
	if sender {
		f.StringVar(&l.bandwidth, "max-bandwidth", "", "cap the link at BYTES/s over all channels (suffixes k, M, G: 1000s; Ki, Mi, Gi: 1024s)")
	}
	l.role = cmd.Name()
	// The gateways resume by default. A listener that resumes still
	// serves senders that do not; pagewire send does not unless told, as
	// its copy of what is in flight costs the bulk path.
	def := resume.DefaultRetry
	if sender && !required {
		def = 0
	}
	usage := "when a link connection is reset, closed or silent, reconnect and go on where it was, for up to DURATION per outage (0: off; the other end must resume too)"
	if !sender {
		usage = "take back a link connection that was reset, closed or silent when its sender reconnects within DURATION, and go on where it was (0: off)"
	}
	f.DurationVar(&l.retry, "link-retry", def, usage)
}

// linkWindow is what each link connection keeps for re-sending after a
// reconnection (resume.Config.Window): what may be in flight per
// channel, so also what the source QEMU behind gateway-in cannot see of
// the link's rate (see linkNotSent).
const linkWindow = 512 << 10

// resumeConfig is the link's resume.Config, with its messages on stderr.
func (l *link) resumeConfig() resume.Config {
	lg := &linkLog{role: l.role, retry: l.retry}
	return resume.Config{Retry: l.retry, Window: linkWindow, Events: lg.event}
}

// linkLog prints a link's outages: one line when the first connection
// is lost, one when the last is back.
type linkLog struct {
	mu     sync.Mutex
	role   string
	retry  time.Duration
	down   int
	since  time.Time
	n      int
	resent int64
	failed bool
}

func (g *linkLog) event(e resume.Event) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch e.Kind {
	case resume.Lost:
		if g.down == 0 {
			g.since, g.n, g.resent = time.Now(), 0, 0
			fmt.Fprintf(os.Stderr, "%s: link connection lost (%v); resuming for up to %v (--link-retry)\n", g.role, e.Err, g.retry)
		}
		g.down++
	case resume.Resumed:
		g.down = max(g.down-1, 0)
		g.n++
		g.resent += e.Resent
		if g.down == 0 {
			fmt.Fprintf(os.Stderr, "%s: link back after %.1fs: %d connection(s) resumed, %s sent again\n",
				g.role, time.Since(g.since).Seconds(), g.n, bytesText(uint64(g.resent)))
		}
	case resume.Retrying:
		fmt.Fprintf(os.Stderr, "%s: cannot open a link connection (%v); trying again for up to %v (--link-retry)\n", g.role, e.Err, g.retry)
	case resume.Refused:
		fmt.Fprintf(os.Stderr, "%s: refused a link connection from %s: %v\n", g.role, e.Remote, e.Err)
	case resume.Failed:
		g.down = max(g.down-1, 0)
		if !g.failed {
			g.failed = true
			fmt.Fprintf(os.Stderr, "%s: link lost for good: %v\n", g.role, e.Err)
		}
	}
}

// linkError adds the flag to turn to when err is the link's resuming.
func linkError(err error) error {
	switch {
	case errors.Is(err, resume.ErrRetryBudget):
		return fmt.Errorf("%w (raise --link-retry to wait longer)", err)
	case errors.Is(err, resume.ErrNotResuming):
		return fmt.Errorf("%w (give both ends --link-retry, or --link-retry 0 to both)", err)
	}
	return err
}

// on reports whether the link uses TLS.
func (l *link) on() (bool, error) {
	given := l.tls.Cert != "" || l.tls.Key != "" || l.tls.CA != ""
	switch {
	case l.insecure && given:
		return false, usageError{fmt.Errorf("--insecure with --tls-*: choose one")}
	case l.insecure:
		fmt.Fprintln(os.Stderr, "warning: --insecure: the link is not encrypted or authenticated")
		return false, nil
	case l.required && !given:
		return false, usageError{fmt.Errorf("the link needs mutual TLS: --tls-cert, --tls-key and --tls-ca (make them with 'pagewire certs'), or --insecure")}
	}
	return given, nil
}

// listen listens at addr, with TLS when the link uses it.
func (l *link) listen(addr string) (net.Listener, error) {
	on, err := l.on()
	if err != nil {
		return nil, err
	}
	var cfg *tls.Config
	if on {
		if cfg, err = channels.ServerTLS(l.tls); err != nil {
			return nil, usageError{err}
		}
	}
	ln, err := channels.Listen(addr)
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		ln = channels.TLSListener(ln, cfg, func(addr net.Addr, err error) {
			fmt.Fprintf(os.Stderr, "pagewire: refused a connection from %s: %v\n", addr, err)
		})
	}
	if l.retry > 0 {
		rl := resume.NewListener(ln, l.resumeConfig())
		l.stats = rl.Stats
		ln = rl
	}
	return ln, nil
}

// dial returns a Dialer for addr with the link's bandwidth cap and, when
// the link uses it, TLS.
func (l *link) dial(addr string) (channels.Dialer, error) {
	d, err := channels.NewDialer(addr)
	if err != nil {
		return nil, usageError{err}
	}
	// Little unsent data in each link socket: what is in flight stays a
	// few tens of milliseconds of link time, so the source QEMU behind
	// gateway-in sees the link's rate when it sizes its last round.
	d = channels.NotSentLowat(d, linkNotSent)
	bps, err := parseBandwidth(l.bandwidth)
	if err != nil {
		return nil, usageError{fmt.Errorf("--max-bandwidth: %w", err)}
	}
	d = channels.Limit(d, bps) // below TLS: the cap counts bytes on the wire
	on, err := l.on()
	if err != nil {
		return nil, err
	}
	if on {
		cfg, err := channels.ClientTLS(l.tls)
		if err != nil {
			return nil, usageError{err}
		}
		cfg.ServerName = l.serverName
		if d, err = channels.TLSDialer(d, addr, cfg); err != nil {
			return nil, err
		}
	}
	if l.retry > 0 {
		rd := resume.NewDialer(d, l.resumeConfig())
		l.stats = rd.Stats
		d = rd
	}
	return d, nil
}

// resumeSummary is the link's resuming in a summary.
type resumeSummary struct {
	RetrySeconds  float64 `json:"retry_s"`
	Reconnects    int64   `json:"reconnects"`
	OutageSeconds float64 `json:"outage_s"`
	ResentBytes   int64   `json:"resent_bytes"`
	Refused       int64   `json:"refused"`
}

// summarize puts the link's resuming in sum, when it resumes.
func (l *link) summarize(sum *summary) {
	if l.stats == nil {
		return
	}
	st := l.stats()
	sum.Resume = &resumeSummary{RetrySeconds: l.retry.Seconds(), Reconnects: st.Reconnects,
		OutageSeconds: st.Outage.Seconds(), ResentBytes: st.Resent, Refused: st.Refused}
}

// status is the link's state for a progress line: "" while it is up.
func (l *link) status() string {
	if l.stats == nil {
		return ""
	}
	if d := l.stats().Down; d > 0 {
		return fmt.Sprintf(" (link down %.0fs, resuming)", d.Seconds())
	}
	return ""
}

// linkNotSent bounds the unsent bytes in each link connection's socket
// (channels.NotSentLowat): 4 channels hold 42 ms of a 100 Mbit/s link.
const linkNotSent = 128 << 10

// parseBandwidth parses BYTES/s with an optional suffix; "" is no cap.
func parseBandwidth(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	num := strings.TrimSuffix(strings.TrimSuffix(s, "/s"), "B")
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}} {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSuffix(num, u.suffix), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v <= 0 || v*float64(mult) > 1e13 {
		return 0, fmt.Errorf("%q: want bytes per second, such as 12500000, 12.5M or 100Mi", s)
	}
	return int64(v * float64(mult)), nil
}

func certsCmd() *cobra.Command {
	var (
		dir   string
		hosts []string
		days  int
	)
	cmd := &cobra.Command{
		Use:   "certs --dir DIR [--host NAME]...",
		Short: "Make a private CA and a server and a client certificate for mutual TLS",
		Long: `Make a new CA and two certificates it signs, for trying pagewire's
encrypted link: ca.pem, server.pem + server-key.pem (for the listening end,
naming each --host), client.pem + client-key.pem (for the dialing end).
Give the listener --tls-cert server.pem --tls-key server-key.pem --tls-ca
ca.pem, and the dialer the client's pair with the same CA. Keep the keys
private; for production use your own CA.`,
		Example: `  pagewire certs --dir tls --host 127.0.0.1 --host gw.example.net`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return usageError{fmt.Errorf("certs: --dir DIR is required")}
			}
			f, err := certs.Make(dir, hosts, time.Duration(days)*24*time.Hour)
			if err != nil {
				return err
			}
			fmt.Printf("CA:     %s\nserver: %s %s (names %s)\nclient: %s %s\n", f.CA, f.ServerCert, f.ServerKey,
				strings.Join(hosts, ", "), f.ClientCert, f.ClientKey)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory to write the PEM files to (created)")
	cmd.Flags().StringSliceVar(&hosts, "host", []string{"127.0.0.1", "localhost"}, "DNS name or IP address the server certificate names (repeatable)")
	cmd.Flags().IntVar(&days, "days", 365, "validity in days")
	return cmd
}
