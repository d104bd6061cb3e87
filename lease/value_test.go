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
