package lease

import (
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"
)

// flannelValue is a lease value exactly as flannel v0.28 writes it.
const flannelValue = `{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}`

// flannelDualValue and flannelIPv6OnlyValue are lease values as flannel's
// vxlan backend writes them in dual stack and in IPv6-only mode: newSubnetAttrs
// leaves PublicIP at the zero IP4 ("0.0.0.0") and BackendData empty when
// there is no IPv4.
const (
	flannelDualValue     = `{"PublicIP":"198.18.0.2","PublicIPv6":"fd00::2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:66"}}`
	flannelIPv6OnlyValue = `{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::2","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:66"}}`
)

func testAttrs6() Attrs {
	mac, _ := net.ParseMAC("c6:d2:32:6f:8f:66")
	return Attrs{PublicIPv6: netip.MustParseAddr("fd00::2"), BackendType: "vxlan", BackendV6Data: &VXLANData{VNI: 1, VtepMAC: mac}}
}

func testAttrsDual() Attrs {
	a := testAttrs()
	a6 := testAttrs6()
	a.PublicIPv6, a.BackendV6Data = a6.PublicIPv6, a6.BackendV6Data
	return a
}

func TestAttrsDualAndIPv6OnlyGolden(t *testing.T) {
	for _, tc := range []struct {
		name   string
		a      Attrs
		golden string
		v4, v6 bool
	}{
		{"dual", testAttrsDual(), flannelDualValue, true, true},
		{"IPv6-only", testAttrs6(), flannelIPv6OnlyValue, false, true},
	} {
		b, err := json.Marshal(tc.a)
		if err != nil || string(b) != tc.golden {
			t.Errorf("%s: got  %s %v\nwant %s", tc.name, b, err, tc.golden)
		}
		got, err := ParseValue([]byte(tc.golden))
		if err != nil || !got.Equal(tc.a) || got.CheckVXLAN() != nil {
			t.Errorf("%s: parsed %+v %v (check %v)", tc.name, got, err, got.CheckVXLAN())
		}
		if got.PublicIP.IsValid() != tc.v4 || got.HasIPv4() != tc.v4 || got.HasIPv6() != tc.v6 {
			t.Errorf("%s: PublicIP %v HasIPv4 %v HasIPv6 %v", tc.name, got.PublicIP, got.HasIPv4(), got.HasIPv6())
		}
	}
	if a, _ := ParseValue([]byte(flannelIPv6OnlyValue)); a.PublicAddr() != netip.MustParseAddr("fd00::2") {
		t.Errorf("IPv6-only PublicAddr = %s", a.PublicAddr())
	}
	if a := testAttrsDual(); a.PublicAddr() != a.PublicIP {
		t.Errorf("dual PublicAddr = %s", a.PublicAddr())
	}
}

func TestCheckVXLANFamilies(t *testing.T) {
	a := testAttrs6()
	a.BackendV6Data = nil
	if a.CheckVXLAN() == nil {
		t.Error("IPv6-only value without BackendV6Data passed")
	}
	a = testAttrs6()
	a.BackendV6Data.VtepMAC = a.BackendV6Data.VtepMAC[:4]
	if a.CheckVXLAN() == nil {
		t.Error("BackendV6Data with a 4-byte VtepMAC passed")
	}
	a = testAttrs()
	a.PublicIP = netip.Addr{} // "0.0.0.0" and no IPv6
	if a.CheckVXLAN() == nil {
		t.Error("a value with no family passed")
	}
	a = testAttrs()
	a.PublicIPv6 = netip.MustParseAddr("fd00::2") // no BackendV6Data: IPv4 still usable
	if err := a.CheckVXLAN(); err != nil || a.HasIPv6() {
		t.Errorf("IPv4 value with a bare PublicIPv6: %v, HasIPv6 %v", err, a.HasIPv6())
	}
}

func testAttrs() Attrs {
	mac, _ := net.ParseMAC("c6:d2:32:6f:8f:44")
	return Attrs{PublicIP: netip.MustParseAddr("198.18.0.2"), BackendType: "vxlan", BackendData: &VXLANData{VNI: 1, VtepMAC: mac}}
}

func TestAttrsMarshalIsFlannelsBytes(t *testing.T) {
	b, err := json.Marshal(testAttrs())
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != flannelValue {
		t.Errorf("got  %s\nwant %s", b, flannelValue)
	}
	a := testAttrs()
	a.NodeName = "node-1"
	b, _ = json.Marshal(a)
	if want := strings.TrimSuffix(flannelValue, "}") + `,"NodeName":"node-1"}`; string(b) != want {
		t.Errorf("with NodeName: got %s\nwant %s", b, want)
	}
	a.PublicIPv6 = netip.MustParseAddr("2001:db8::2")
	a.BackendV6Data = &VXLANData{VNI: 1, VtepMAC: a.BackendData.VtepMAC}
	b, _ = json.Marshal(a)
	want := `{"PublicIP":"198.18.0.2","PublicIPv6":"2001:db8::2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"NodeName":"node-1"}`
	if string(b) != want {
		t.Errorf("dual stack: got %s\nwant %s", b, want)
	}
	back, err := ParseValue(b)
	if err != nil || !back.Equal(a) {
		t.Errorf("round trip: %+v %v", back, err)
	}
}

func TestParseValueFlannelForm(t *testing.T) {
	a, err := ParseValue([]byte(flannelValue))
	if err != nil {
		t.Fatal(err)
	}
	if !a.Equal(testAttrs()) || a.CheckVXLAN() != nil {
		t.Errorf("parsed %+v (check %v)", a, a.CheckVXLAN())
	}
	// Unknown fields (a future flannel, another tool) are ignored.
	a, err = ParseValue([]byte(`{"PublicIP":"198.18.0.2","BackendType":"vxlan","Extra":{"x":[1,2]},"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44","More":true}}`))
	if err != nil || !a.Equal(testAttrs()) {
		t.Errorf("unknown fields: %+v %v", a, err)
	}
	// Another backend decodes but fails CheckVXLAN.
	a, err = ParseValue([]byte(`{"PublicIP":"198.18.0.3","PublicIPv6":null,"BackendType":"host-gw"}`))
	if err != nil || a.CheckVXLAN() == nil {
		t.Errorf("host-gw: %+v %v check %v", a, err, a.CheckVXLAN())
	}
}

func TestParseValueRejectsGarbage(t *testing.T) {
	for _, raw := range []string{
		``, `garbage`, `[]`, `null`, `{}`, `{"PublicIP":"banana"}`, `{"PublicIP":"2001:db8::1"}`,
		`{"PublicIP":"198.18.0.2","PublicIPv6":"198.18.0.3"}`,
		`{"PublicIP":"198.18.0.2","BackendData":{"VtepMAC":"zz:zz"}}`,
		`{"PublicIP":"198.18.0.2","BackendData":"x"}`,
		`{"PublicIP":17}`,
	} {
		if a, err := ParseValue([]byte(raw)); err == nil {
			t.Errorf("%q: parsed as %+v, want error", raw, a)
		}
	}
}

func TestCheckVXLAN(t *testing.T) {
	a := testAttrs()
	a.BackendData = nil
	if a.CheckVXLAN() == nil {
		t.Error("vxlan without BackendData passed")
	}
	a = testAttrs()
	a.BackendData.VtepMAC = nil
	if a.CheckVXLAN() == nil {
		t.Error("vxlan without VtepMAC passed")
	}
}
