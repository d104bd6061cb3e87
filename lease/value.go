package lease

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// jsonAttrs is the lease value in flannel's field order. The raw fields keep
// the encoder from reordering or re-escaping and let the decoder be strict
// about what it understands and silent about the rest.
type jsonAttrs struct {
	PublicIP      string
	PublicIPv6    *string // null when unset, as flannel writes it
	BackendType   string
	BackendData   json.RawMessage `json:",omitempty"`
	BackendV6Data json.RawMessage `json:",omitempty"`
	NodeName      string          `json:",omitempty"`
}

// MarshalJSON writes exactly flannel's lease value, e.g.
// {"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}
// followed by weft's "NodeName" when set. An unset PublicIP is written as
// "0.0.0.0", as flannel's zero IP4 is.
func (a Attrs) MarshalJSON() ([]byte, error) {
	j := jsonAttrs{PublicIP: "0.0.0.0", BackendType: a.BackendType, NodeName: a.NodeName}
	if a.PublicIP.IsValid() {
		j.PublicIP = a.PublicIP.String()
	}
	if a.PublicIPv6.IsValid() {
		s := a.PublicIPv6.String()
		j.PublicIPv6 = &s
	}
	var err error
	if a.BackendData != nil {
		if j.BackendData, err = json.Marshal(a.BackendData); err != nil {
			return nil, fmt.Errorf("encode BackendData: %w", err)
		}
	}
	if a.BackendV6Data != nil {
		if j.BackendV6Data, err = json.Marshal(a.BackendV6Data); err != nil {
			return nil, fmt.Errorf("encode BackendV6Data: %w", err)
		}
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes a lease value written by weft or flannel. Unknown
// fields are ignored (flannel does the same); a PublicIP that is not IPv4, a
// PublicIPv6 that is not IPv6 or a VtepMAC that is not a MAC is an error.
// PublicIP "0.0.0.0" (flannel's zero IP4, in an IPv6-only lease) decodes as
// the invalid Addr, as does a PublicIPv6 of null.
// BackendData is decoded as VXLANData whatever the BackendType: callers
// check BackendType themselves.
func (a *Attrs) UnmarshalJSON(b []byte) error {
	var j jsonAttrs
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("decode lease value: %w", err)
	}
	var out Attrs
	ip, err := netip.ParseAddr(j.PublicIP)
	if err != nil || !ip.Is4() {
		return fmt.Errorf("decode lease value: PublicIP %q is not an IPv4 address", j.PublicIP)
	}
	if !ip.IsUnspecified() { // "0.0.0.0": no IPv4 (an IPv6-only lease)
		out.PublicIP = ip
	}
	if j.PublicIPv6 != nil && *j.PublicIPv6 != "" {
		ip6, err := netip.ParseAddr(*j.PublicIPv6)
		if err != nil || !ip6.Is6() || ip6.Zone() != "" {
			return fmt.Errorf("decode lease value: PublicIPv6 %q is not an IPv6 address", *j.PublicIPv6)
		}
		out.PublicIPv6 = ip6
	}
	out.BackendType, out.NodeName = j.BackendType, j.NodeName
	if out.BackendData, err = decodeVXLAN(j.BackendData); err != nil {
		return fmt.Errorf("decode lease value: BackendData: %w", err)
	}
	if out.BackendV6Data, err = decodeVXLAN(j.BackendV6Data); err != nil {
		return fmt.Errorf("decode lease value: BackendV6Data: %w", err)
	}
	*a = out
	return nil
}

func decodeVXLAN(raw json.RawMessage) (*VXLANData, error) {
	if t := bytes.TrimSpace(raw); len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return nil, nil
	}
	d := new(VXLANData)
	if err := json.Unmarshal(raw, d); err != nil {
		return nil, err
	}
	return d, nil
}

// ParseValue decodes a lease value (see Attrs.UnmarshalJSON).
func ParseValue(b []byte) (Attrs, error) {
	var a Attrs
	err := a.UnmarshalJSON(b)
	return a, err
}

// CheckVXLAN reports why a lease value is unusable by a vxlan node: another
// BackendType, a BackendData or BackendV6Data whose VtepMAC is not 6 bytes, a
// PublicIP without BackendData, or no family at all. A family is usable
// when its address and its data are both set: IPv4 is PublicIP with
// BackendData, IPv6 is PublicIPv6 with BackendV6Data; a value needs one.
// (A PublicIPv6 without BackendV6Data leaves a usable IPv4 value, as
// flannel's IPv4-only nodes read it.)
func (a Attrs) CheckVXLAN() error {
	if a.BackendType != BackendVXLAN {
		return fmt.Errorf("backend type %q, not vxlan: %w", a.BackendType, ErrOtherBackend)
	}
	for _, d := range []struct {
		name string
		data *VXLANData
	}{{"BackendData", a.BackendData}, {"BackendV6Data", a.BackendV6Data}} {
		if d.data != nil && len(d.data.VtepMAC) != 6 {
			return fmt.Errorf("vxlan lease with %s.VtepMAC %q: want 6 bytes", d.name, d.data.VtepMAC)
		}
	}
	switch {
	case a.PublicIP.IsValid() && a.BackendData == nil:
		return errors.New("vxlan lease with a PublicIP but without BackendData")
	case !a.HasIPv4() && !a.HasIPv6():
		return errors.New("vxlan lease with neither PublicIP and BackendData nor PublicIPv6 and BackendV6Data")
	}
	return nil
}

// HasIPv4 reports whether the value carries the IPv4 family: a PublicIP and
// BackendData.
func (a Attrs) HasIPv4() bool { return a.PublicIP.IsValid() && a.BackendData != nil }

// HasIPv6 reports whether the value carries the IPv6 family: a PublicIPv6
// and BackendV6Data.
func (a Attrs) HasIPv6() bool { return a.PublicIPv6.IsValid() && a.BackendV6Data != nil }

// PublicAddr is the address that identifies the node in its lease: PublicIP,
// or PublicIPv6 when PublicIP is unset (an IPv6-only node).
func (a Attrs) PublicAddr() netip.Addr {
	if a.PublicIP.IsValid() {
		return a.PublicIP
	}
	return a.PublicIPv6
}

// ErrOtherBackend marks a lease of another backend type (skipped with a warning).
var ErrOtherBackend = errors.New("lease of another backend")

// Equal reports whether two values would be written identically.
func (a Attrs) Equal(b Attrs) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

type jsonVXLAN struct {
	VNI     int
	VtepMAC string
}

// MarshalJSON writes {"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}.
func (d VXLANData) MarshalJSON() ([]byte, error) {
	j := jsonVXLAN{VNI: d.VNI}
	if len(d.VtepMAC) > 0 {
		j.VtepMAC = d.VtepMAC.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads BackendData; unknown fields are ignored, a VtepMAC that
// does not parse as a MAC is an error.
func (d *VXLANData) UnmarshalJSON(b []byte) error {
	var j jsonVXLAN
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	out := VXLANData{VNI: j.VNI}
	if j.VtepMAC != "" {
		mac, err := net.ParseMAC(j.VtepMAC)
		if err != nil {
			return fmt.Errorf("VtepMAC: %w", err)
		}
		out.VtepMAC = mac
	}
	*d = out
	return nil
}
