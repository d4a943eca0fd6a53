package main

import "testing"

func TestParseBandwidth(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "12500000": 12500000, "12.5M": 12500000, "100Mi": 100 << 20, "1G/s": 1e9, "64KiB": 64 << 10} {
		if got, err := parseBandwidth(in); err != nil || got != want {
			t.Errorf("%q: %d %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"fast", "-1", "0", "1e20"} {
		if _, err := parseBandwidth(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}
