package ipam

import (
	"net/netip"
	"testing"
)

func TestRangeCanonicalize(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		name    string
		in      Range
		want    Range
		wantErr bool
	}{
		{"defaults /24", Range{Subnet: netip.MustParsePrefix("10.244.1.7/24")},
			Range{Subnet: netip.MustParsePrefix("10.244.1.0/24"), RangeStart: a("10.244.1.1"), RangeEnd: a("10.244.1.254"), Gateway: a("10.244.1.1")}, false},
		{"defaults /30", Range{Subnet: netip.MustParsePrefix("10.0.0.4/30")},
			Range{Subnet: netip.MustParsePrefix("10.0.0.4/30"), RangeStart: a("10.0.0.5"), RangeEnd: a("10.0.0.6"), Gateway: a("10.0.0.5")}, false},
		{"explicit", Range{Subnet: netip.MustParsePrefix("10.244.1.0/24"), RangeStart: a("10.244.1.10"), RangeEnd: a("10.244.1.20"), Gateway: a("10.244.1.254")},
			Range{Subnet: netip.MustParsePrefix("10.244.1.0/24"), RangeStart: a("10.244.1.10"), RangeEnd: a("10.244.1.20"), Gateway: a("10.244.1.254")}, false},
		{"v6", Range{Subnet: netip.MustParsePrefix("fd00::/126")},
			Range{Subnet: netip.MustParsePrefix("fd00::/126"), RangeStart: a("fd00::1"), RangeEnd: a("fd00::3"), Gateway: a("fd00::1")}, false},
		{"/31 too small", Range{Subnet: netip.MustParsePrefix("10.0.0.0/31")}, Range{}, true},
		{"/32 too small", Range{Subnet: netip.MustParsePrefix("10.0.0.0/32")}, Range{}, true},
		{"no subnet", Range{}, Range{}, true},
		{"start outside", Range{Subnet: netip.MustParsePrefix("10.244.1.0/24"), RangeStart: a("10.244.2.1")}, Range{}, true},
		{"start is network", Range{Subnet: netip.MustParsePrefix("10.244.1.0/24"), RangeStart: a("10.244.1.0")}, Range{}, true},
		{"end is broadcast", Range{Subnet: netip.MustParsePrefix("10.244.1.0/24"), RangeEnd: a("10.244.1.255")}, Range{}, true},
		{"start after end", Range{Subnet: netip.MustParsePrefix("10.244.1.0/24"), RangeStart: a("10.244.1.9"), RangeEnd: a("10.244.1.8")}, Range{}, true},
		{"gateway other family", Range{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Gateway: a("fd00::1")}, Range{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.in
			err := r.Canonicalize()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Canonicalize() error = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && r != tt.want {
				t.Fatalf("Canonicalize() = %+v, want %+v", r, tt.want)
			}
		})
	}
}

func TestRangeNextWraps(t *testing.T) {
	r := Range{Subnet: netip.MustParsePrefix("10.0.0.0/29")}
	if err := r.Canonicalize(); err != nil {
		t.Fatal(err)
	}
	got := []string{}
	ip := r.RangeStart
	for range 7 {
		got = append(got, ip.String())
		ip = r.next(ip)
	}
	want := "[10.0.0.1 10.0.0.2 10.0.0.3 10.0.0.4 10.0.0.5 10.0.0.6 10.0.0.1]"
	if s := fmtSlice(got); s != want {
		t.Fatalf("walk = %s, want %s", s, want)
	}
}

func fmtSlice(s []string) string {
	out := "["
	for i, v := range s {
		if i > 0 {
			out += " "
		}
		out += v
	}
	return out + "]"
}
