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
		!c.HairpinMode || !c.IsDefaultGateway || c.IPMasq || c.MTU != 0 || len(c.rngs) != 0 {
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
	if len(c.rngs) != 1 {
		t.Fatalf("ranges = %+v, want one", c.rngs)
	}
	if got := c.rngs[0].Subnet.String() + " " + c.rngs[0].String() + " gw " + c.rngs[0].Gateway.String(); got != want {
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
		{"two ranges", `{` + base + `,"ipam":{"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"10.0.1.0/24"}]]}}`, types.ErrInvalidNetworkConfig, `"ipam.ranges[0]"`},
		{"two IPv4 range sets", `{` + base + `,"ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.0.1.0/24"}]]}}`, types.ErrInvalidNetworkConfig, `same family`},
		{"two IPv6 range sets", `{` + base + `,"ipam":{"ranges":[[{"subnet":"fd00::/64"}],[{"subnet":"fd01::/64"}]]}}`, types.ErrInvalidNetworkConfig, `same family`},
		{"three range sets", `{` + base + `,"ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"fd00::/64"}],[{"subnet":"10.0.1.0/24"}]]}}`, types.ErrInvalidNetworkConfig, `one range set per family`},
		{"v6 rangeStart in v4 range", `{` + base + `,"ipam":{"ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"fd00::5"}]]}}`, types.ErrInvalidNetworkConfig, `"ipam.ranges[0][0].rangeStart": "fd00::5" is not an IPv4 address`},
		{"v4 gateway in v6 range", `{` + base + `,"ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"fd00::/64","gateway":"10.0.0.1"}]]}}`, types.ErrInvalidNetworkConfig, `"ipam.ranges[1][0].gateway": "10.0.0.1" is not an IPv6 address`},
		{"v6 subnet mapped", `{` + base + `,"ipam":{"ranges":[[{"subnet":"::ffff:10.0.0.0/120"}]]}}`, types.ErrInvalidNetworkConfig, `not an IPv4 or IPv6 CIDR`},
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
	v4 := family{gateway: netip.MustParsePrefix("10.244.1.1/24"), network: netip.MustParsePrefix("10.244.0.0/16")}
	v6 := family{gateway: netip.MustParsePrefix("fd00:0:0:1::1/64"), network: netip.MustParsePrefix("fd00::/48")}
	str := func(rs []*types.Route) string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Dst.String()+" via "+r.GW.String())
		}
		return strings.Join(out, ", ")
	}
	for _, tt := range []struct {
		name string
		fams []family
		dflt bool
		want string
	}{
		{"v4", []family{v4}, true, "10.244.0.0/16 via 10.244.1.1, 0.0.0.0/0 via 10.244.1.1"},
		{"v4 no default", []family{v4}, false, "10.244.0.0/16 via 10.244.1.1"},
		{"dual", []family{v4, v6}, true, "10.244.0.0/16 via 10.244.1.1, 0.0.0.0/0 via 10.244.1.1, fd00::/48 via fd00:0:0:1::1, ::/0 via fd00:0:0:1::1"},
		{"dual no default", []family{v4, v6}, false, "10.244.0.0/16 via 10.244.1.1, fd00::/48 via fd00:0:0:1::1"},
		{"v6", []family{v6}, true, "fd00::/48 via fd00:0:0:1::1, ::/0 via fd00:0:0:1::1"},
	} {
		if got := str(podRoutes(plan{fams: tt.fams}, tt.dflt)); got != tt.want {
			t.Errorf("%s: routes = %s\nwant %s", tt.name, got, tt.want)
		}
	}
}
