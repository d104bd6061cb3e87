package lease

import (
	"encoding/json"
	"testing"
)

// The fuzzers check that no parser panics and that what parses re-encodes
// into something that parses again. `go test` runs the seeds only.

func FuzzParseNetwork(f *testing.F) {
	for _, s := range []string{
		`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`,
		`{"Network":"10.0.0.0/8","SubnetLen":20,"SubnetMin":"10.10.0.0","SubnetMax":"10.99.0.0"}`,
		`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":126}`,
		`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/32"}`,
		`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/124","Network":"10.0.0.0/8"}`,
		`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"::/0","IPv6SubnetLen":2}`,
		`{"EnableIPv4":false}`,
		`{"Network":"10.244.0.0/28"}`, `{"network":"1.2.3.4/0"}`, `{}`, `null`, `[`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := ParseNetwork(b)
		if err != nil {
			return
		}
		_ = n.TotalBlocks()
		_, _, _ = n.PickFree(nil)
		out, err := json.Marshal(n)
		if err != nil {
			t.Fatalf("marshal %+v: %v", n, err)
		}
		if _, err := ParseNetwork(out); err != nil {
			t.Fatalf("re-parse %s: %v", out, err)
		}
	})
}

func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"10.244.1.0-24", "10.244.1.0-24&fc00:0:0:1::-64", "0.0.0.0-0&fc00:0:0:1::-64", "0.0.0.0-0", "0.0.0.0-0&", "1.2.3.4-32", "-", "&", "::-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v4, v6, err := ParseKey(s)
		if err != nil {
			return
		}
		if k := FormatKey(v4, v6); k != s {
			t.Fatalf("ParseKey(%q) formats back as %q", s, k)
		}
	})
}

func FuzzParseValue(f *testing.F) {
	for _, s := range []string{flannelValue, flannelDualValue, flannelIPv6OnlyValue, `{"PublicIP":"0.0.0.0","PublicIPv6":null,"BackendType":"vxlan"}`, `{"PublicIP":"1.2.3.4","PublicIPv6":"::1","BackendType":"x","BackendV6Data":{"VtepMAC":""}}`, `{"PublicIP":"1.2.3.4","NodeName":"\u00e9"}`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseValue(b)
		if err != nil {
			return
		}
		_ = a.CheckVXLAN()
		out, err := json.Marshal(a)
		if err != nil {
			t.Fatalf("marshal %+v: %v", a, err)
		}
		back, err := ParseValue(out)
		if err != nil || !back.Equal(a) {
			t.Fatalf("round trip of %s: %+v %v", out, back, err)
		}
	})
}
