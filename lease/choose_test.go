package lease

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// A lease found by name alone (another PublicIP) may be another live node's
// when two nodes were given the same --node-name: it is never deleted, even
// when it no longer fits the config. One with our PublicIP still is.
func TestChooseNeverDeletesALeaseFoundByNameAlone(t *testing.T) {
	n := mustNetwork(t, `{"Network":"10.244.0.0/16","SubnetLen":25}`)
	other := lease4("10.244.1.0/24", "198.18.0.1", "twin") // no longer fits
	r := Request{Attrs: testAttrs()}
	r.Attrs.PublicIP, r.Attrs.NodeName = netip.MustParseAddr("198.18.0.2"), "twin"
	c, err := Choose(n, []Lease{other}, r)
	if err != nil || c.Existing != nil || len(c.Stale) != 0 {
		t.Fatalf("by name alone: %+v %v, want a new block and nothing stale", c, err)
	}
	if c.Subnet.Overlaps(other.Subnet) {
		t.Errorf("new block %s overlaps the other node's %s", c.Subnet, other.Subnet)
	}
	mine := lease4("10.244.1.0/24", "198.18.0.2", "twin")
	c, err = Choose(n, []Lease{mine}, r)
	if err != nil || len(c.Stale) != 1 {
		t.Errorf("ours by IP and name: %+v %v, want it stale", c, err)
	}
}

// Without an explicit name, identity is the PublicIP: a lease an earlier
// release wrote under the default name (the hostname) is still ours, one
// under any other name belongs to a named node.
func TestChooseWithoutNameUsesPublicIP(t *testing.T) {
	n := mustNetwork(t, `{"Network":"10.244.0.0/16"}`)
	leases := []Lease{
		lease4("10.244.1.0/24", "198.18.0.1", "host"),
		lease4("10.244.2.0/24", "198.18.0.2", ""),
		lease4("10.244.3.0/24", "198.18.0.3", "other"),
	}
	req := func(ip string) Request {
		r := Request{Attrs: testAttrs(), LegacyName: "host"}
		r.Attrs.PublicIP = netip.MustParseAddr(ip)
		return r
	}
	for ip, want := range map[string]string{"198.18.0.1": "10.244.1.0/24", "198.18.0.2": "10.244.2.0/24"} {
		c, err := Choose(n, leases, req(ip))
		if err != nil || c.Existing == nil || c.Existing.Subnet.String() != want {
			t.Errorf("%s: %+v %v, want %s", ip, c, err, want)
		}
	}
	// Same hostname, another IP: not ours (several agents on one host).
	c, err := Choose(n, leases, req("198.18.0.9"))
	if err != nil || c.Existing != nil {
		t.Errorf("another IP under the same hostname: %+v %v, want a new block", c, err)
	}
	if _, err := Choose(n, leases, req("198.18.0.3")); !errors.Is(err, ErrPublicIPInUse) {
		t.Errorf("our IP under another node's name: %v, want ErrPublicIPInUse", err)
	}
}

func TestJudge(t *testing.T) {
	mine := testAttrs()
	mine.PublicIP, mine.NodeName = netip.MustParseAddr("198.18.0.1"), "twin"
	same := mine
	same.NodeName = "" // a flannel-style value at our IP
	if err := Judge("k", same, mine); err != nil {
		t.Errorf("our IP, no name: %v", err)
	}
	twin := mine
	twin.PublicIP = netip.MustParseAddr("198.18.0.2")
	err := Judge("k", twin, mine)
	var nc *NameConflictError
	if !errors.As(err, &nc) || !errors.Is(err, ErrLeaseLost) || nc.Theirs != twin.PublicIP || nc.Ours != mine.PublicIP {
		t.Fatalf("same name, other IP: %v", err)
	}
	for _, want := range []string{"198.18.0.1", "198.18.0.2", `"twin"`, "--node-name"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("conflict message %q lacks %q", err, want)
		}
	}
	stranger := twin
	stranger.NodeName = "b"
	if err := Judge("k", stranger, mine); !errors.Is(err, ErrLeaseLost) || errors.Is(err, ErrNameConflict) {
		t.Errorf("another node: %v", err)
	}
	unnamed := mine
	unnamed.NodeName = ""
	if err := Judge("k", twin, unnamed); errors.Is(err, ErrNameConflict) || !errors.Is(err, ErrLeaseLost) {
		t.Errorf("without a name of our own nothing is a name conflict: %v", err)
	}
}

// IPv6-only values all have the unset PublicIP: the node is its PublicIPv6.
func TestJudgeAndOwnsIPv6Only(t *testing.T) {
	mine := testAttrs6()
	other := testAttrs6()
	other.PublicIPv6 = netip.MustParseAddr("fd00::3")
	if Owns(other, mine) || !Owns(mine, mine) {
		t.Errorf("Owns: other %v, self %v", Owns(other, mine), Owns(mine, mine))
	}
	if err := Judge("k", mine, mine); err != nil {
		t.Errorf("our own value: %v", err)
	}
	err := Judge("k", other, mine)
	if !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), "fd00::3") {
		t.Errorf("another IPv6-only node: %v", err)
	}
	mine.NodeName, other.NodeName = "twin", "twin"
	var nc *NameConflictError
	if err := Judge("k", other, mine); !errors.As(err, &nc) || nc.Ours != mine.PublicIPv6 || nc.Theirs != other.PublicIPv6 {
		t.Errorf("name conflict: %v", err)
	}
}
