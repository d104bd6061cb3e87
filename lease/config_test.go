package lease

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseNetworkDefaults(t *testing.T) {
	n, err := ParseNetwork([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if n.SubnetLen != 24 || n.SubnetMin != netip.MustParseAddr("10.244.1.0") || n.SubnetMax != netip.MustParseAddr("10.244.255.0") {
		t.Errorf("defaults: len %d min %s max %s", n.SubnetLen, n.SubnetMin, n.SubnetMax)
	}
	if !n.EnableIPv4 || n.EnableIPv6 || n.Backend.VNI != 1 || n.Backend.Type != "vxlan" || len(n.Notices) != 0 {
		t.Errorf("defaults: %+v", n)
	}
	if got := n.TotalBlocks(); got != 255 {
		t.Errorf("TotalBlocks = %d, want 255", got)
	}
}

func TestParseNetworkCaseInsensitiveAndAllKnobs(t *testing.T) {
	raw := `{"network":"10.0.0.0/8","SUBNETLEN":20,"subnetmin":"10.10.0.0","SubnetMax":"10.99.0.0","enableipv6":true,
	"ipv6network":"fc00::/48","ipv6subnetlen":64,"ipv6subnetmin":"fc00:0:0:10::","ipv6subnetmax":"fc00:0:0:ff::","EnableNFTables":true,
	"backend":{"type":"VXLAN","vni":4096,"port":4789,"mtu":1400,"gbp":true,"learning":true,"directrouting":true}}`
	n, err := ParseNetwork([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	want := Network{
		Network: netip.MustParsePrefix("10.0.0.0/8"), SubnetLen: 20,
		SubnetMin: netip.MustParseAddr("10.10.0.0"), SubnetMax: netip.MustParseAddr("10.99.0.0"),
		EnableIPv4: true, EnableIPv6: true,
		IPv6Network: netip.MustParsePrefix("fc00::/48"), IPv6SubnetLen: 64,
		IPv6SubnetMin: netip.MustParseAddr("fc00:0:0:10::"), IPv6SubnetMax: netip.MustParseAddr("fc00:0:0:ff::"),
		Backend: Backend{Type: "vxlan", VNI: 4096, Port: 4789, MTU: 1400, GBP: true, Learning: true, DirectRouting: true},
	}
	got := *n
	got.Notices = nil
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		t.Errorf("got  %s\nwant %s", gb, wb)
	}
}

func TestParseNetworkBackendAbsentIsVXLANWithNotice(t *testing.T) {
	for _, raw := range []string{`{"Network":"10.244.0.0/16"}`, `{"Network":"10.244.0.0/16","Backend":null}`, `{"Network":"10.244.0.0/16","Backend":{"VNI":7}}`} {
		n, err := ParseNetwork([]byte(raw))
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if n.Backend.Type != "vxlan" || len(n.Notices) != 1 || !strings.Contains(n.Notices[0], "vxlan") {
			t.Errorf("%s: backend %+v notices %q", raw, n.Backend, n.Notices)
		}
	}
}

func TestParseNetworkSmallNetworkDefaults(t *testing.T) {
	for _, tc := range []struct {
		network string
		len     int
		min     string
	}{
		{"10.1.0.0/22", 24, "10.1.1.0"},
		{"10.1.0.0/23", 25, "10.1.0.128"},
		{"10.1.0.0/28", 30, "10.1.0.4"},
	} {
		n, err := ParseNetwork([]byte(`{"Network":"` + tc.network + `"}`))
		if err != nil {
			t.Fatalf("%s: %v", tc.network, err)
		}
		if n.SubnetLen != tc.len || n.SubnetMin.String() != tc.min {
			t.Errorf("%s: len %d min %s, want %d %s", tc.network, n.SubnetLen, n.SubnetMin, tc.len, tc.min)
		}
	}
}

func TestParseNetworkIPv6Defaults(t *testing.T) {
	n, err := ParseNetwork([]byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}`))
	if err != nil {
		t.Fatal(err)
	}
	if n.IPv6SubnetLen != 64 || n.IPv6SubnetMin != netip.MustParseAddr("fc00:0:0:1::") || n.IPv6SubnetMax != netip.MustParseAddr("fc00:0:0:ffff::") {
		t.Errorf("v6 defaults: %d %s %s", n.IPv6SubnetLen, n.IPv6SubnetMin, n.IPv6SubnetMax)
	}
	v4, ok := n.Block(2)
	if !ok || v4.String() != "10.244.3.0/24" {
		t.Errorf("Block(2) = %s %v", v4, ok)
	}
}

func TestParseNetworkErrorsNameFieldAndReason(t *testing.T) {
	for _, tc := range []struct {
		raw, field, reason string
	}{
		{`{"Network":"10.244.0.0/16","SubnetLen":31}`, "SubnetLen", "longer than /30"},
		{`{"Network":"10.244.0.0/16","SubnetLen":17}`, "SubnetLen", "four blocks"},
		{`{"Network":"10.244.0.0/29"}`, "Network", "too small"},
		{`{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.5"}`, "SubnetMin", "not aligned"},
		{`{"Network":"10.244.0.0/16","SubnetMax":"10.245.0.0"}`, "SubnetMax", "not inside"},
		{`{"Network":"10.244.0.0/16","SubnetMin":"10.244.9.0","SubnetMax":"10.244.3.0"}`, "SubnetMax", "below"},
		{`{"Network":"10.244.1.0/16"}`, "Network", "host bits"},
		{`{"Network":"fc00::/48"}`, "Network", "not an IPv4"},
		{`{"SubnetLen":24}`, "Network", "missing"},
		{`{"Network":"banana"}`, "Network", "cannot parse"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`, "Backend.Type", "unsupported backend"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}`, "Backend.VNI", "outside"},
		{`{"Network":"10.244.0.0/16","Backend":{"Port":70000}}`, "Backend.Port", "outside"},
		{`{"Network":"10.244.0.0/16","Backend":[1]}`, "Backend", "cannot decode"},
		{`{"EnableIPv4":false}`, "EnableIPv4/EnableIPv6", "neither"},
		{`{"EnableIPv4":false,"EnableIPv6":false,"Network":"10.244.0.0/16"}`, "EnableIPv4/EnableIPv6", "neither"},
		{`{"EnableIPv4":false,"EnableIPv6":true}`, "IPv6Network", "missing"},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"10.244.0.0/16"}`, "IPv6Network", "not an IPv6"},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/125"}`, "IPv6Network", "too small"},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":49}`, "IPv6SubnetLen", "four blocks"},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMax":"fc01::"}`, "IPv6SubnetMax", "not inside"},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"wireguard"}}`, "Backend.Type", "unsupported backend"},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Network":"banana"}`, "Network", "cannot parse"},
		{`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":127}`, "IPv6SubnetLen", "longer than /126"},
		{`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMin":"fc00:0:0:1::1"}`, "IPv6SubnetMin", "not aligned"},
	} {
		_, err := ParseNetwork([]byte(tc.raw))
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("%s: error %v, want *ConfigError", tc.raw, err)
			continue
		}
		if ce.Field != tc.field || !strings.Contains(ce.Reason, tc.reason) {
			t.Errorf("%s: got field %q reason %q, want %q containing %q", tc.raw, ce.Field, ce.Reason, tc.field, tc.reason)
		}
	}
	if _, err := ParseNetwork([]byte(`{"Network":`)); err == nil {
		t.Error("truncated JSON: no error")
	}
}

func TestNetworkMarshalJSONIsFlannelsAndRoundTrips(t *testing.T) {
	const flannel = `{"Network":"10.244.0.0/16","SubnetLen":24,"SubnetMin":"10.244.1.0","SubnetMax":"10.244.255.0","EnableIPv4":true,"Backend":{"Type":"vxlan","VNI":1,"Port":0,"MTU":0,"GBP":false,"Learning":false,"DirectRouting":false}}`
	n, err := ParseNetwork([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != flannel {
		t.Errorf("got  %s\nwant %s", b, flannel)
	}
	dual := `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan","VNI":3,"Port":4789}}`
	n1, err := ParseNetwork([]byte(dual))
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := json.Marshal(n1)
	n2, err := ParseNetwork(b1)
	if err != nil {
		t.Fatalf("re-parse %s: %v", b1, err)
	}
	b2, _ := json.Marshal(n2)
	if string(b1) != string(b2) {
		t.Errorf("round trip changed:\n%s\n%s", b1, b2)
	}
}

// The three shapes of issue 14: IPv4-only, dual stack and IPv6-only, with
// flannel's defaults for each family that is on and nothing for one that is off.
func TestParseNetworkFamilies(t *testing.T) {
	for _, tc := range []struct {
		name, raw  string
		v4, v6     bool
		len4, len6 int
		min4, max4 string
		min6, max6 string
		notices    int
	}{
		{"IPv4-only", `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, true, false, 24, 0, "10.244.1.0", "10.244.255.0", "invalid IP", "invalid IP", 0},
		{"IPv4-only, IPv6 fields ignored", `{"Network":"10.244.0.0/16","IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`, true, false, 24, 0, "10.244.1.0", "10.244.255.0", "invalid IP", "invalid IP", 1},
		{"dual stack", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`, true, true, 24, 64, "10.244.1.0", "10.244.255.0", "fc00:0:0:1::", "fc00:0:0:ffff::", 0},
		{"IPv6-only", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`, false, true, 0, 64, "invalid IP", "invalid IP", "fc00:0:0:1::", "fc00:0:0:ffff::", 0},
		{"IPv6-only /62 still gets /64", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/62","Backend":{"Type":"vxlan"}}`, false, true, 0, 64, "invalid IP", "invalid IP", "fc00:0:0:1::", "fc00:0:0:3::", 0},
		{"IPv6-only /63 is split in four", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/63","Backend":{"Type":"vxlan"}}`, false, true, 0, 65, "invalid IP", "invalid IP", "fc00::8000:0:0:0", "fc00:0:0:1:8000::", 0},
		{"IPv6-only /124 is the smallest", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/124","Backend":{"Type":"vxlan"}}`, false, true, 0, 126, "invalid IP", "invalid IP", "fc00::4", "fc00::c", 0},
		{"IPv6-only, IPv4 fields ignored", `{"EnableIPv4":false,"EnableIPv6":true,"Network":"10.244.0.0/16","SubnetLen":31,"IPv6Network":"fc00::/32","Backend":{"Type":"vxlan"}}`, false, true, 0, 64, "invalid IP", "invalid IP", "fc00:0:0:1::", "fc00:0:ffff:ffff::", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := mustNetwork(t, tc.raw)
			if n.EnableIPv4 != tc.v4 || n.EnableIPv6 != tc.v6 || n.SubnetLen != tc.len4 || n.IPv6SubnetLen != tc.len6 ||
				n.SubnetMin.String() != tc.min4 || n.SubnetMax.String() != tc.max4 ||
				n.IPv6SubnetMin.String() != tc.min6 || n.IPv6SubnetMax.String() != tc.max6 || len(n.Notices) != tc.notices {
				t.Errorf("got v4 %v v6 %v len %d/%d min %s max %s min6 %s max6 %s notices %q", n.EnableIPv4, n.EnableIPv6, n.SubnetLen, n.IPv6SubnetLen,
					n.SubnetMin, n.SubnetMax, n.IPv6SubnetMin, n.IPv6SubnetMax, n.Notices)
			}
			if n.Network.IsValid() != tc.v4 || n.IPv6Network.IsValid() != tc.v6 {
				t.Errorf("Network %s IPv6Network %s: a network must be set exactly when its family is on", n.Network, n.IPv6Network)
			}
			// MarshalJSON round trip, EnableIPv4 false included.
			b, err := json.Marshal(n)
			if err != nil {
				t.Fatal(err)
			}
			n2, err := ParseNetwork(b)
			if err != nil {
				t.Fatalf("re-parse %s: %v", b, err)
			}
			if b2, _ := json.Marshal(n2); string(b2) != string(b) || n2.EnableIPv4 != tc.v4 || len(n2.Notices) != 0 {
				t.Errorf("round trip:\n%s\n%s (notices %q)", b, b2, n2.Notices)
			}
		})
	}
}

func TestNetworkMarshalJSONIPv6Only(t *testing.T) {
	n := mustNetwork(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`)
	b, _ := json.Marshal(n)
	const want = `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":64,"IPv6SubnetMin":"fc00:0:0:1::","IPv6SubnetMax":"fc00:0:0:ffff::","Backend":{"Type":"vxlan","VNI":1,"Port":0,"MTU":0,"GBP":false,"Learning":false,"DirectRouting":false}}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}
