package plugin

import (
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzLoadNetConf: any input gives a valid config or a *types.Error with code
// 6 or 7, never a panic; a valid config always has a usable bridge name and
// absolute paths.
func FuzzLoadNetConf(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.0.0","name":"cbr0","type":"weft","hairpinMode":true,"isDefaultGateway":true}`,
		`{"cniVersion":"1.1.0","name":"n","type":"weft","bridge":"br9","mtu":1400,"subnetFile":"/a","dataDir":"/b","logFile":"/c"}`,
		`{"name":"n","ipam":{"ranges":[[{"subnet":"10.9.0.0/24","rangeStart":"10.9.0.10","rangeEnd":"10.9.0.20","gateway":"10.9.0.1"}]]}}`,
		`{"name":"n","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],"cni.dev/attachments":[]}`,
		`{"name":"n","prevResult":{"cniVersion":"1.0.0","ips":[]},"dns":{"nameservers":["1.1.1.1"]}}`,
		`{"name":"n","mtu":-1}`, `{"name":"n","mtu":"x"}`, `{"name":`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := LoadNetConf(b)
		if err != nil {
			var e *types.Error
			if !errors.As(err, &e) || (e.Code != types.ErrDecodingFailure && e.Code != types.ErrInvalidNetworkConfig) {
				t.Fatalf("error %v (%T) is not a *types.Error with code 6 or 7", err, err)
			}
			return
		}
		if validIfName(c.Bridge) != nil || c.SubnetFile[0] != '/' || c.DataDir[0] != '/' || !networkName.MatchString(c.Name) {
			t.Fatalf("accepted an invalid config: %+v", c)
		}
		if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
			t.Fatalf("accepted mtu %d", c.MTU)
		}
		for _, r := range c.rngs {
			if !r.Contains(r.RangeStart) || !r.Subnet.Contains(r.Gateway) || !r.Subnet.Contains(r.RangeEnd) {
				t.Fatalf("accepted a broken range %+v", r)
			}
		}
		if len(c.rngs) == 2 && c.rngs[0].Subnet.Addr().Is6() == c.rngs[1].Subnet.Addr().Is6() {
			t.Fatalf("accepted two ranges of one family: %+v", c.rngs)
		}
	})
}
