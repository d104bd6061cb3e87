package agent_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/test/nettest"
)

// testPeerChangeAndExpiry writes a synthetic peer lease the way flannel would,
// changes its VtepMAC, then revokes its etcd lease, and checks n's kernel state.
func testPeerChangeAndExpiry(t *testing.T, c *cluster, n *node) {
	const (
		subnet = "10.244.250.0/24"
		gw     = "10.244.250.0"
		pubIP  = "198.18.0.99"
		macA   = "0a:11:22:33:44:01"
		macB   = "0a:11:22:33:44:02"
	)
	key := c.prefix + "/subnets/10.244.250.0-24"
	value := func(mac string) string {
		return fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"%s"}}`, pubIP, mac)
	}
	grant, err := c.cli.Grant(t.Context(), 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.cli.Put(t.Context(), key, value(macA), clientv3.WithLease(grant.ID)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "peer A programmed", func() error { return wantEntries(t, n, gw, macA, pubIP, subnet, true) })

	if _, err := c.cli.Put(t.Context(), key, value(macB), clientv3.WithLease(grant.ID)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "peer B programmed, A's FDB gone", func() error {
		if err := wantEntries(t, n, gw, macB, pubIP, subnet, true); err != nil {
			return err
		}
		if hasFDB(t, n, macA) {
			return fmt.Errorf("stale FDB entry for %s still present", macA)
		}
		return nil
	})

	if _, err := c.cli.Revoke(t.Context(), grant.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "expired peer's entries removed", func() error {
		return wantEntries(t, n, gw, macB, pubIP, subnet, false)
	})
}

// wantEntries checks that all three entries for a peer are present (or all absent).
func wantEntries(t *testing.T, n *node, gw, mac, pubIP, subnet string, present bool) error {
	h := nettest.Handle(t, n.ns.NetNS)
	l, err := h.LinkByName("flannel.1")
	if err != nil {
		return err
	}
	var neigh, fdb, route bool
	neighs, _ := h.NeighList(l.Attrs().Index, unix.AF_INET)
	for _, e := range neighs {
		if e.IP.String() == gw && e.HardwareAddr.String() == mac {
			neigh = true
		}
	}
	fdbs, _ := h.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
	for _, e := range fdbs {
		if e.HardwareAddr.String() == mac && e.IP.String() == pubIP {
			fdb = true
		}
	}
	routes, _ := h.RouteListFiltered(unix.AF_INET, &netlink.Route{LinkIndex: l.Attrs().Index}, netlink.RT_FILTER_OIF)
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == subnet {
			route = true
		}
	}
	if neigh != present || fdb != present || route != present {
		return fmt.Errorf("neigh=%v fdb=%v route=%v, want all %v", neigh, fdb, route, present)
	}
	return nil
}

func hasFDB(t *testing.T, n *node, mac string) bool {
	h := nettest.Handle(t, n.ns.NetNS)
	l, err := h.LinkByName("flannel.1")
	if err != nil {
		return false
	}
	fdbs, _ := h.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
	for _, e := range fdbs {
		if e.HardwareAddr.String() == mac {
			return true
		}
	}
	return false
}
