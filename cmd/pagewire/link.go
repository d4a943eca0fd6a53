package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/internal/certs"
)

// link holds the flags of a link between two pagewire ends: mutual TLS
// and a bandwidth cap.
type link struct {
	tls        channels.TLSFiles
	insecure   bool
	required   bool // TLS is on unless --insecure (the gateways)
	serverName string
	bandwidth  string
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
	if err != nil || cfg == nil {
		return ln, err
	}
	return channels.TLSListener(ln, cfg, func(addr net.Addr, err error) {
		fmt.Fprintf(os.Stderr, "pagewire: refused a connection from %s: %v\n", addr, err)
	}), nil
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
	if err != nil || !on {
		return d, err
	}
	cfg, err := channels.ClientTLS(l.tls)
	if err != nil {
		return nil, usageError{err}
	}
	cfg.ServerName = l.serverName
	return channels.TLSDialer(d, addr, cfg)
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
