package lease

import (
	"net/netip"
	"testing"
)

func TestKeyRoundTrip(t *testing.T) {
	for _, tc := range []struct{ v4, v6, key string }{
		{"10.244.1.0/24", "", "10.244.1.0-24"},
		{"10.244.1.0/24", "fc00:0:0:1::/64", "10.244.1.0-24&fc00:0:0:1::-64"},
		{"", "fc00:0:0:1::/64", "0.0.0.0-0&fc00:0:0:1::-64"}, // IPv6-only, as flannel writes it
	} {
		var v4, v6 netip.Prefix
		if tc.v4 != "" {
			v4 = netip.MustParsePrefix(tc.v4)
		}
		if tc.v6 != "" {
			v6 = netip.MustParsePrefix(tc.v6)
		}
		if got := FormatKey(v4, v6); got != tc.key {
			t.Errorf("FormatKey = %q, want %q", got, tc.key)
		}
		g4, g6, err := ParseKey(tc.key)
		if err != nil || g4 != v4 || g6 != v6 {
			t.Errorf("ParseKey(%q) = %s %s %v", tc.key, g4, g6, err)
		}
	}
}

func TestParseKeyRejects(t *testing.T) {
	for _, k := range []string{"", "10.244.1.0", "10.244.1.5-24", "10.244.1.0-33", "10.244.1.0-024", "fc00::-64",
		"10.244.1.0-24&10.1.0.0-16", "10.244.1.0-24&fc00::1-64", "10.244.1.0-+24", "10.244.1.0-24&", "x-24",
		"0.0.0.0-10&00::-0", "10.244.1.0-24&FC00::-64", "10.244.1.0-24&fc00:0::-64",
		"0.0.0.0-0", "0.0.0.0-0&", "0.0.0.0-0&10.1.0.0-16", "0.0.0.00-0&fc00::-64", "0.0.0.0-00&fc00::-64"} {
		if _, _, err := ParseKey(k); err == nil {
			t.Errorf("ParseKey(%q): no error", k)
		}
	}
}
