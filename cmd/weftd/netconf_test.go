package main

import (
	"testing"

	"github.com/weftnet/weft/lease"
)

// init-network's flags build IPv4, dual-stack and IPv6-only configs that
// lease accepts with the families asked for.
func TestNetConfJSONFamilies(t *testing.T) {
	tests := []struct {
		name, v4, v6 string
		want         string
		en4, en6     bool
	}{
		{"ipv4", "10.244.0.0/16", "", `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, true, false},
		{"dual", "10.244.0.0/16", "fc00::/48", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`, true, true},
		{"ipv6-only", "", "fc00::/48", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := netConfJSON("", tc.v4, tc.v6, 0, 0, 0, false)
			if err != nil || string(raw) != tc.want {
				t.Fatalf("netConfJSON = %s, %v; want %s", raw, err, tc.want)
			}
			n, err := lease.ParseNetwork(raw)
			if err != nil {
				t.Fatalf("ParseNetwork(%s): %v", raw, err)
			}
			if n.EnableIPv4 != tc.en4 || n.EnableIPv6 != tc.en6 {
				t.Errorf("families v4 %t v6 %t, want %t %t", n.EnableIPv4, n.EnableIPv6, tc.en4, tc.en6)
			}
		})
	}
	if _, err := netConfJSON("f.json", "", "fc00::/48", 0, 0, 0, false); err == nil {
		t.Error("--file with --ipv6-network accepted")
	}
	if _, err := netConfJSON("", "", "", 0, 0, 0, false); err == nil {
		t.Error("no network accepted")
	}
}
