package main

import (
	"testing"
	"time"
)

func TestParseLink(t *testing.T) {
	for _, c := range []struct {
		in    string
		rate  int64
		delay time.Duration
	}{
		{"unlimited", 0, 0},
		{"unlimited+25ms", 0, 25 * time.Millisecond},
		{"1g", 1e9, 0},
		{"100m+25ms", 100e6, 25 * time.Millisecond},
		{"512k", 512e3, 0},
		{"2000000", 2e6, 0},
	} {
		l, err := parseLink(c.in)
		if err != nil || l.Rate != c.rate || l.Delay != c.delay || l.Name != c.in {
			t.Errorf("%s: %+v, %v", c.in, l, err)
		}
	}
	for _, bad := range []string{"", "fast", "0m", "-1g", "1g+soon"} {
		if _, err := parseLink(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParsePath(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Path
	}{
		{"qemu-10.0-zstd-tls", Path{Name: "qemu-10.0-zstd-tls", QEMU: "10.0", Method: "zstd", TLS: true}},
		{"qemu-7.2-none", Path{Name: "qemu-7.2-none", QEMU: "7.2", Method: "none"}},
		{"gw-lz4", Path{Name: "gw-lz4", QEMU: "10.0", Method: "none", TLS: true, Gateways: true, LinkMethod: "lz4"}},
		{"gw-zstd-delta", Path{Name: "gw-zstd-delta", QEMU: "10.0", Method: "none", TLS: true, Gateways: true, LinkMethod: "zstd", Delta: true}},
	} {
		p, err := parsePath(c.in)
		if err != nil || p != c.want {
			t.Errorf("%s: %+v, %v", c.in, p, err)
		}
	}
	for _, bad := range []string{"qemu-9.0-none", "qemu-10.0-lz4", "qemu-10.0-none-ssl", "gw-brotli", "direct", "gw-delta", "gw-lz4-delta-delta"} {
		if _, err := parsePath(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, p := range defaultPaths {
		if _, err := parsePath(p); err != nil {
			t.Errorf("default path %s: %v", p, err)
		}
	}
}
