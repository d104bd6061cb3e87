package plugin

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestLoadNetConfDefaults(t *testing.T) {
	c, err := LoadNetConf([]byte(`{"cniVersion":"1.0.0","name":"cbr0","type":"weft","futureKey":{"x":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Bridge != "cni0" || c.SubnetFile != "/run/flannel/subnet.env" || c.DataDir != "/var/lib/cni/networks" ||
		!c.HairpinMode || !c.IsDefaultGateway || c.IPMasq || c.MTU != 0 || c.rng.Subnet.IsValid() {
		t.Fatalf("defaults wrong: %+v", c)
	}
}

func TestLoadNetConfOverrides(t *testing.T) {
	c, err := LoadNetConf([]byte(`{"cniVersion":"1.1.0","name":"n","type":"weft","bridge":"br9","mtu":1400,
		"hairpinMode":false,"isDefaultGateway":false,"ipMasq":true,"subnetFile":"/x/s.env","dataDir":"/x/d",
		"ipam":{"type":"host-local","ranges":[[{"subnet":"10.9.0.0/24","rangeStart":"10.9.0.10","rangeEnd":"10.9.0.20"}]]},
		"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],
		"cni.dev/attachments":[{"containerID":"b","ifname":"eth0"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Bridge != "br9" || c.MTU != 1400 || c.HairpinMode || c.IsDefaultGateway || !c.IPMasq {
		t.Fatalf("overrides not applied: %+v", c)
	}
	want := "10.9.0.0/24 10.9.0.10-10.9.0.20 gw 10.9.0.1"
	if got := c.rng.Subnet.String() + " " + c.rng.String() + " gw " + c.rng.Gateway.String(); got != want {
		t.Fatalf("range = %s, want %s", got, want)
	}
	keep := c.validAttachments()
	if len(keep) != 2 || !keep[types.GCAttachment{ContainerID: "a", IfName: "eth0"}] || !keep[types.GCAttachment{ContainerID: "b", IfName: "eth0"}] {
		t.Fatalf("valid attachments = %v", keep)
	}
}

func TestLoadNetConfErrors(t *testing.T) {
	base := `"cniVersion":"1.0.0","name":"cbr0","type":"weft"`
	tests := []struct {
		name, in string
		code     uint
		msg      string
	}{
		{"malformed", `{"name":`, types.ErrDecodingFailure, "decode network config"},
		{"mtu string", `{` + base + `,"mtu":"1400"}`, types.ErrInvalidNetworkConfig, `"mtu"`},
		{"hairpin string", `{` + base + `,"hairpinMode":"yes"}`, types.ErrInvalidNetworkConfig, `"hairpinMode"`},
		{"ranges type", `{` + base + `,"ipam":{"ranges":"10.0.0.0/24"}}`, types.ErrInvalidNetworkConfig, `"ipam.ranges"`},
		{"dns type", `{` + base + `,"dns":{"nameservers":"1.1.1.1"}}`, types.ErrInvalidNetworkConfig, `"dns.nameservers"`},
		{"mtu small", `{` + base + `,"mtu":10}`, types.ErrInvalidNetworkConfig, `"mtu"`},
		{"bridge long", `{` + base + `,"bridge":"abcdefghijklmnop"}`, types.ErrInvalidNetworkConfig, `"bridge"`},
		{"bridge slash", `{` + base + `,"bridge":"a/b"}`, types.ErrInvalidNetworkConfig, `"bridge"`},
		{"relative dataDir", `{` + base + `,"dataDir":"var/lib"}`, types.ErrInvalidNetworkConfig, `"dataDir"`},
		{"bad name", `{"cniVersion":"1.0.0","name":"../x","type":"weft"}`, types.ErrInvalidNetworkConfig, `"name"`},
		{"ipam type", `{` + base + `,"ipam":{"type":"dhcp"}}`, types.ErrInvalidNetworkConfig, `"ipam.type"`},
		{"two ranges", `{` + base + `,"ipam":{"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"10.0.1.0/24"}]]}}`, types.ErrInvalidNetworkConfig, `"ipam.ranges"`},
		{"v6 range", `{` + base + `,"ipam":{"ranges":[[{"subnet":"fd00::/64"}]]}}`, types.ErrInvalidNetworkConfig, `subnet`},
		{"bad rangeStart", `{` + base + `,"ipam":{"ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.1.5"}]]}}`, types.ErrInvalidNetworkConfig, `rangeStart`},
		{"unparsable gateway", `{` + base + `,"ipam":{"ranges":[[{"subnet":"10.0.0.0/24","gateway":"x"}]]}}`, types.ErrInvalidNetworkConfig, `gateway`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadNetConf([]byte(tt.in))
			var e *types.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T) is not a *types.Error", err, err)
			}
			if e.Code != tt.code || !strings.Contains(e.Msg, tt.msg) {
				t.Fatalf("got code %d %q, want code %d containing %q", e.Code, e.Msg, tt.code, tt.msg)
			}
		})
	}
}

func TestHostVethName(t *testing.T) {
	a, b := hostVethName("ctr", "eth0"), hostVethName("ctr", "eth1")
	if a == b || a != hostVethName("ctr", "eth0") || len(a) > 15 || !strings.HasPrefix(a, "veth") {
		t.Fatalf("names %q %q: want stable, distinct, veth-prefixed, <= 15 chars", a, b)
	}
	if hostVethName("ab", "c") == hostVethName("a", "bc") {
		t.Fatal("container ID and ifname are not separated in the hash")
	}
}

func TestPodRoutes(t *testing.T) {
	p := plan{gateway: netip.MustParsePrefix("10.244.1.1/24"), network: netip.MustParsePrefix("10.244.0.0/16")}
	got := ""
	for _, r := range podRoutes(p, true) {
		got += r.String() + ";"
	}
	if want := "{Dst:{IP:10.244.0.0 Mask:ffff0000} GW:10.244.1.1 MTU:0 AdvMSS:0 Priority:0 Table:<nil> Scope:<nil>};{Dst:{IP:0.0.0.0 Mask:00000000} GW:10.244.1.1 MTU:0 AdvMSS:0 Priority:0 Table:<nil> Scope:<nil>};"; got != want {
		t.Fatalf("routes = %s\nwant     %s", got, want)
	}
	if rs := podRoutes(p, false); len(rs) != 1 || rs[0].Dst.String() != "10.244.0.0/16" {
		t.Fatalf("without default gateway: %v", rs)
	}
}
