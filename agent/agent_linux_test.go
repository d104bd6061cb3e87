package agent_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/lease/etcdstore/etcdtest"
	"github.com/weftnet/weft/test/nettest"
)

// TestTwoNodes walks two agents through their life on one topology, in order:
// formats, traffic, miss repair, restart.
func TestTwoNodes(t *testing.T) {
	nettest.Privileged(t)
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) }) // registered first: runs after every other cleanup
	c := newCluster(t, etcdtest.Start(t))
	n1, n2 := c.addNode(backend.ModeProactive), c.addNode(backend.ModeProactive)
	n1.start()
	n2.start()
	t.Cleanup(func() { n1.stop(); n2.stop() })

	t.Run("device, lease and subnet.env in flannel's formats", func(t *testing.T) {
		for _, n := range []*node{n1, n2} {
			checkDevice(t, n)
			checkLeaseJSON(t, n)
			checkSubnetEnv(t, n)
			if _, err := os.Stat(filepath.Join(n.cfg.CNIConfDir, "10-weft.conflist")); err != nil {
				t.Errorf("%s: conflist not installed: %v", n.name, err)
			}
		}
	})
	t.Run("ping across the overlay", func(t *testing.T) {
		eventuallyPing(t, n1, gw0(n2))
		eventuallyPing(t, n2, gw0(n1))
	})
	t.Run("deleted entries come back through the miss path", func(t *testing.T) {
		deletePeerEntries(t, n1, n2)
		out, err := n1.exec("ping", "-c", "20", "-i", "0.05", "-W", "1", gw0(n2))
		if err != nil || !strings.Contains(out, " 0% packet loss") {
			t.Fatalf("ping after deleting entries: %v\n%s", err, out)
		}
		answered := counterSum(t, n1.metrics, "weft_misses_answered_total")
		if answered < 1 {
			t.Fatalf("no miss answered; entries were restored some other way")
		}
		// Answer latency runs from the miss event's arrival to the entry written.
		samples, mean := sampled(t, n1.metrics, "weft_miss_answer_seconds")
		if mean > time.Millisecond {
			t.Errorf("mean miss answer latency %s, want under 1ms", mean)
		}
		t.Logf("misses answered: %v (latency: %d samples, mean %s)", answered, samples, mean)
	})
	t.Run("restart during continuous ping: zero loss, same subnet and MAC", func(t *testing.T) {
		before, mac := n2.ag.Lease().Subnet, deviceMAC(t, n2)
		p := startPing(t, n1, gw0(n2), 100)
		time.Sleep(300 * time.Millisecond)
		n2.stop()
		time.Sleep(300 * time.Millisecond)
		n2.start()
		p.expectNoLoss(t)
		if got := n2.ag.Lease().Subnet; got != before {
			t.Errorf("subnet after restart %s, want %s", got, before)
		}
		if got := deviceMAC(t, n2); got != mac {
			t.Errorf("VtepMAC after restart %s, want %s", got, mac)
		}
	})
	t.Run("malformed lease value disturbs no one", func(t *testing.T) {
		if _, err := c.cli.Put(t.Context(), c.prefix+"/subnets/10.244.200.0-24", `{"PublicIP":`); err != nil {
			t.Fatal(err)
		}
		if _, err := c.cli.Put(t.Context(), c.prefix+"/subnets/not-a-key", `{}`); err != nil {
			t.Fatal(err)
		}
		p := startPing(t, n1, gw0(n2), 40)
		p.expectNoLoss(t)
		checkPeerEntries(t, n1, n2, true)
	})
	t.Run("changed VtepMAC removes the stale FDB entry; expiry removes everything", func(t *testing.T) {
		testPeerChangeAndExpiry(t, c, n1)
	})
}

// TestOnDemand: no per-peer entries before traffic; the first ping loses
// nothing; entries go when the peer's lease is revoked.
func TestOnDemand(t *testing.T) {
	nettest.Privileged(t)
	c := newCluster(t, etcdtest.Start(t))
	n1, n2 := c.addNode(backend.ModeOnDemand), c.addNode(backend.ModeOnDemand)
	n1.start()
	n2.start()
	t.Cleanup(func() { n1.stop(); n2.stop() })
	time.Sleep(200 * time.Millisecond) // let both see each other's lease
	if n := countPeerEntries(t, n1, n2); n != 0 {
		t.Fatalf("on-demand: %d per-peer entries before any traffic", n)
	}
	out, err := n1.exec("ping", "-c", "5", "-i", "0.1", "-W", "1", gw0(n2))
	if err != nil || !strings.Contains(out, " 0% packet loss") {
		t.Fatalf("first ping in on-demand mode: %v\n%s", err, out)
	}
	if n := countPeerEntries(t, n1, n2); n == 0 {
		t.Fatal("on-demand: no entries after traffic")
	}
	// The peer goes away for good: stop it and revoke its lease.
	l := n2.ag.Lease()
	n2.stop()
	if _, err := c.cli.Revoke(t.Context(), clientv3.LeaseID(l.LeaseID)); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	eventually(t, 5*time.Second, "entries of the revoked peer removed", func() error {
		if n := countPeerEntries(t, n1, n2); n != 0 {
			return fmt.Errorf("%d entries left", n)
		}
		return nil
	})
}

// TestTLS: the agent works against etcd with a client certificate, and CA-only.
func TestTLS(t *testing.T) {
	nettest.Privileged(t)
	for _, clientCert := range []bool{true, false} {
		t.Run(fmt.Sprintf("clientCert=%v", clientCert), func(t *testing.T) {
			endpoints, files := etcdtest.StartTLS(t, clientCert)
			c := newClusterTLS(t, endpoints, files)
			n := c.addNode(backend.ModeProactive)
			n.start()
			if !n.ag.Lease().Subnet.IsValid() {
				t.Fatal("no lease over TLS")
			}
			n.stop()
		})
	}
}

func gw0(n *node) string { return n.ag.Lease().Subnet.Addr().String() }

func eventuallyPing(t *testing.T, from *node, dst string) {
	t.Helper()
	eventually(t, 10*time.Second, from.name+" pings "+dst, func() error {
		out, err := from.exec("ping", "-c", "1", "-W", "1", dst)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
}

func deviceMAC(t *testing.T, n *node) string {
	t.Helper()
	l, err := nettest.Handle(t, n.ns.NetNS).LinkByName("flannel.1")
	if err != nil {
		t.Fatalf("%s: flannel.1: %v", n.name, err)
	}
	return l.Attrs().HardwareAddr.String()
}

func checkDevice(t *testing.T, n *node) {
	t.Helper()
	h := nettest.Handle(t, n.ns.NetNS)
	l, err := h.LinkByName("flannel.1")
	if err != nil {
		t.Fatalf("%s: flannel.1: %v", n.name, err)
	}
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		t.Fatalf("%s: flannel.1 is %s, not vxlan", n.name, l.Type())
	}
	eth0, _ := h.LinkByName("eth0")
	if vx.VxlanId != 1 || vx.Port != 8472 || vx.Learning || vx.MTU != 1450 || vx.VtepDevIndex != eth0.Attrs().Index ||
		vx.SrcAddr.String() != n.ip {
		t.Errorf("%s: flannel.1 vni=%d port=%d learning=%v mtu=%d dev=%d local=%s; want 1/8472/false/1450/%d/%s",
			n.name, vx.VxlanId, vx.Port, vx.Learning, vx.MTU, vx.VtepDevIndex, vx.SrcAddr, eth0.Attrs().Index, n.ip)
	}
	mac := vx.HardwareAddr
	if len(mac) != 6 || mac[0]&0x02 == 0 || mac[0]&0x01 != 0 {
		t.Errorf("%s: MAC %s is not locally administered unicast", n.name, mac)
	}
	addrs, err := h.AddrList(l, unix.AF_INET)
	want := n.ag.Lease().Subnet.Addr().String() + "/32"
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != want {
		t.Errorf("%s: flannel.1 addresses %v (%v), want only %s", n.name, addrs, err, want)
	}
}

func checkLeaseJSON(t *testing.T, n *node) {
	t.Helper()
	l := n.ag.Lease()
	resp, err := n.c.cli.Get(t.Context(), n.c.prefix+"/subnets/"+l.Key())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("%s: get own lease: %v", n.name, err)
	}
	want := fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"%s"}`, n.ip, deviceMAC(t, n))
	if got := string(resp.Kvs[0].Value); !strings.HasPrefix(got, want) {
		t.Errorf("%s: lease value\n got %s\nwant prefix %s", n.name, got, want)
	}
	if resp.Kvs[0].Lease == 0 {
		t.Errorf("%s: lease key has no etcd lease", n.name)
	}
}

func checkSubnetEnv(t *testing.T, n *node) {
	t.Helper()
	b, err := os.ReadFile(n.cfg.SubnetFile)
	if err != nil {
		t.Fatal(err)
	}
	s := n.ag.Lease().Subnet
	want := fmt.Sprintf("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=%s/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", s.Addr().Next())
	if string(b) != want {
		t.Errorf("%s: subnet.env\n got %q\nwant %q", n.name, b, want)
	}
	if fi, err := os.Stat(n.cfg.SubnetFile); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("%s: subnet.env mode %v (%v), want 0644", n.name, fi.Mode(), err)
	}
}

// peerEntries lists from's neighbour, FDB and route entries that point at peer.
func peerEntries(t *testing.T, from, peer *node) (neigh, fdb, route bool) {
	t.Helper()
	h := nettest.Handle(t, from.ns.NetNS)
	l, err := h.LinkByName("flannel.1")
	if err != nil {
		t.Fatalf("%s: flannel.1: %v", from.name, err)
	}
	mac := deviceMAC(t, peer)
	neighs, _ := h.NeighList(l.Attrs().Index, unix.AF_INET)
	for _, e := range neighs {
		if e.IP.String() == gw0(peer) && e.HardwareAddr.String() == mac && e.State&netlink.NUD_PERMANENT != 0 {
			neigh = true
		}
	}
	fdbs, _ := h.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
	for _, e := range fdbs {
		if e.HardwareAddr.String() == mac && e.IP.String() == peer.ip {
			fdb = true
		}
	}
	routes, _ := h.RouteList(l, unix.AF_INET)
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == peer.ag.Lease().Subnet.String() {
			route = true
		}
	}
	return neigh, fdb, route
}

func checkPeerEntries(t *testing.T, from, peer *node, want bool) {
	t.Helper()
	n, f, r := peerEntries(t, from, peer)
	if n != want || f != want || r != want {
		t.Errorf("%s → %s: neigh=%v fdb=%v route=%v, want all %v", from.name, peer.name, n, f, r, want)
	}
}

// countPeerEntries counts neighbour and FDB entries (any state) on from for peer.
func countPeerEntries(t *testing.T, from, peer *node) int {
	t.Helper()
	h := nettest.Handle(t, from.ns.NetNS)
	l, err := h.LinkByName("flannel.1")
	if err != nil {
		t.Fatalf("%s: flannel.1: %v", from.name, err)
	}
	mac, count := deviceMAC(t, peer), 0
	neighs, _ := h.NeighList(l.Attrs().Index, unix.AF_INET)
	for _, e := range neighs {
		if e.HardwareAddr.String() == mac && e.State&(netlink.NUD_PERMANENT|netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_NOARP) != 0 {
			count++
		}
	}
	fdbs, _ := h.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
	for _, e := range fdbs {
		if e.HardwareAddr.String() == mac {
			count++
		}
	}
	return count
}

func deletePeerEntries(t *testing.T, from, peer *node) {
	t.Helper()
	mac := deviceMAC(t, peer)
	for _, args := range [][]string{
		{"ip", "neigh", "del", gw0(peer), "dev", "flannel.1"},
		{"bridge", "fdb", "del", mac, "dev", "flannel.1", "dst", peer.ip},
	} {
		if out, err := from.exec(args...); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	if n, f, _ := peerEntries(t, from, peer); n || f {
		t.Fatalf("entries still present after delete: neigh=%v fdb=%v", n, f)
	}
}

type pinger struct {
	done chan struct{}
	out  string
	err  error
}

// startPing runs `ping -c count -i 0.02` in the background.
func startPing(t *testing.T, from *node, dst string, count int) *pinger {
	p := &pinger{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.out, p.err = from.exec("ping", "-c", fmt.Sprint(count), "-i", "0.02", "-W", "1", dst)
	}()
	return p
}

var lossRe = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

func (p *pinger) expectNoLoss(t *testing.T) {
	t.Helper()
	<-p.done
	m := lossRe.FindStringSubmatch(p.out)
	if p.err != nil || m == nil || m[1] != m[2] {
		t.Fatalf("continuous ping lost packets: %v\n%s", p.err, p.out)
	}
}

var _ = net.ParseMAC
var _ = lease.Added
