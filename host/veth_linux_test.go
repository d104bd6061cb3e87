package host

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestVethPairInTwoNamespaces(t *testing.T) {
	node, pod := openNS(t), openNS(t)
	la := netlink.NewLinkAttrs()
	la.Name = "br0"
	if err := node.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		t.Fatal(err)
	}
	br, err := node.LinkByName("br0")
	if err != nil {
		t.Fatal(err)
	}
	mac := net.HardwareAddr{0x0a, 0, 0, 0, 0, 1}
	peerMAC := net.HardwareAddr{0x0a, 0, 0, 0, 0, 2}
	pair := VethPair{Name: "vh0", MAC: mac, Master: br.Attrs().Index, MTU: 1400, PeerName: "eth0", PeerMAC: peerMAC, PeerNS: pod}
	if err := node.NewVeth(pair); err != nil {
		t.Fatal(err)
	}
	if err := node.NewVeth(pair); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("second NewVeth: %v, want EEXIST", err)
	}
	h, err := node.LinkByName("vh0")
	if err != nil {
		t.Fatal(err)
	}
	if a := h.Attrs(); a.MasterIndex != br.Attrs().Index || a.MTU != 1400 || a.HardwareAddr.String() != mac.String() || a.Flags&net.FlagUp != 0 {
		t.Errorf("node side: master %d mtu %d mac %s flags %s", a.MasterIndex, a.MTU, a.HardwareAddr, a.Flags)
	}
	p, err := pod.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if a := p.Attrs(); a.MTU != 1400 || a.HardwareAddr.String() != peerMAC.String() || a.ParentIndex != h.Attrs().Index {
		t.Errorf("pod side: mtu %d mac %s peer %d", a.MTU, a.HardwareAddr, a.ParentIndex)
	}
	if _, err := node.LinkByName("eth0"); !IsLinkNotFound(err) {
		t.Errorf("pod side in the node namespace: %v", err)
	}

	if err := node.SetPortUp("vh0", "tag", true); err != nil {
		t.Fatal(err)
	}
	if h, err = node.LinkByName("vh0"); err != nil {
		t.Fatal(err)
	}
	if a := h.Attrs(); a.Flags&net.FlagUp == 0 || a.Alias != "tag" {
		t.Errorf("after SetPortUp: flags %s alias %q", a.Flags, a.Alias)
	}
	if pi, err := node.LinkGetProtinfo(h); err != nil || !pi.Hairpin {
		t.Errorf("hairpin: %+v %v", pi, err)
	}

	if err := node.DelLinkByName("vh0"); err != nil {
		t.Fatal(err)
	}
	if _, err := pod.LinkByName("eth0"); !IsLinkNotFound(err) {
		t.Errorf("pod side after DelLinkByName: %v", err)
	}
	if err := node.DelLinkByName("vh0"); !errors.Is(err, unix.ENODEV) {
		t.Errorf("second DelLinkByName: %v, want ENODEV", err)
	}
}

func TestAddrAndRouteAdd(t *testing.T) {
	n := openNS(t)
	idx := addDummy(t, n, "d0", netip.MustParsePrefix("10.9.0.1/24"))
	l, err := n.LinkByIndex(idx)
	if err != nil {
		t.Fatal(err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 9, 1, 1), Mask: net.CIDRMask(24, 32)}}
	if err := n.AddrAdd(l, a); err != nil {
		t.Fatal(err)
	}
	if err := n.AddrAdd(l, a); !errors.Is(err, unix.EEXIST) {
		t.Errorf("second AddrAdd: %v, want EEXIST", err)
	}
	_, dst, _ := net.ParseCIDR("10.10.0.0/16")
	r := &netlink.Route{LinkIndex: idx, Dst: dst, Gw: net.IPv4(10, 9, 0, 2)}
	if err := n.RouteAdd(r); err != nil {
		t.Fatal(err)
	}
	if err := n.RouteAdd(r); !errors.Is(err, unix.EEXIST) {
		t.Errorf("second RouteAdd: %v, want EEXIST", err)
	}
}

// Do hands threads back to the scheduler; none may still be in the
// namespace it entered.
func TestDoLeavesNoThreadInside(t *testing.T) {
	n := openNS(t)
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if err := n.Do(func() error { return nil }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	home, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := filepath.Glob("/proc/self/task/*/ns/net")
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads: %v %v", tasks, err)
	}
	for _, task := range tasks {
		if ns, err := os.Readlink(task); err == nil && ns != home {
			t.Errorf("thread %s is in %s, not %s", task, ns, home)
		}
	}
}
