package plugin

import (
	"net"
	"testing"
)

// The bridge's link-local address is the kernel's EUI-64 one (seen on a
// bridge the kernel configured: 0a:58:0a:f4:01:01 → fe80::858:aff:fef4:101).
func TestLinkLocal(t *testing.T) {
	mac, _ := net.ParseMAC("0a:58:0a:f4:01:01")
	if got := linkLocal(mac).String(); got != "fe80::858:aff:fef4:101/64" {
		t.Errorf("linkLocal(%s) = %s", mac, got)
	}
}
