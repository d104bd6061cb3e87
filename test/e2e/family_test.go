package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/test/lab"
)

// Device names and MTUs of flannel's vxlan backend with VNI 1 on the lab's
// 1500-byte veth underlay: 50 bytes of encapsulation over IPv4, 70 over IPv6.
const (
	dev4, dev6 = "flannel.1", "flannel-v6.1"
	mtu4, mtu6 = 1450, 1430
)

// TestFamilyMatrix runs one lab per pod-network family, each on the
// underlay of the same family (see doc.go for why there is no IPv4 overlay
// on an IPv6-only underlay): 3 nodes started in parallel with --ip-masq, 2
// pods each. For every enabled family: the devices, subnet.env and the lease
// values in etcd, pod ↔ pod and node → pod pings, pod → outside host
// masqueraded to the node's underlay address, and an agent restart under a
// continuous ping without loss.
func TestFamilyMatrix(t *testing.T) {
	for _, c := range []struct {
		name              string
		overlay, underlay lab.Family
	}{
		{"ipv4/ipv4-underlay", lab.IPv4, lab.IPv4},
		{"dual/dual-underlay", lab.Dual, lab.Dual},
		{"ipv6/ipv6-underlay", lab.IPv6, lab.IPv6},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			checkFamily(t, c.overlay, c.underlay)
			t.Logf("%s took %s", c.name, time.Since(start).Round(time.Millisecond))
		})
	}
}

func checkFamily(t *testing.T, overlay, underlay lab.Family) {
	l := newLab(t, lab.Options{IPMasq: true, Overlay: overlay, Underlay: underlay})
	o := l.NodeDefaults()
	o.NoStart = true
	nodes, err := l.AddNodes(t.Context(), 3, o)
	if err != nil {
		t.Fatalf("add nodes: %v", err)
	}
	t.Run("underlay", func(t *testing.T) {
		checkUnderlay(t, l, nodes, underlay)
	})
	startAgents(t, nodes)
	pods := addPods(t, l, nodes, 2)
	fams := overlay.Singles()

	t.Run("devices", func(t *testing.T) {
		for _, n := range nodes {
			checkDevices(t, n, overlay)
		}
	})
	t.Run("subnet.env", func(t *testing.T) {
		for _, n := range nodes {
			checkSubnetEnv(t, n, overlay)
		}
	})
	t.Run("leases", func(t *testing.T) {
		for _, n := range nodes {
			checkLeaseValue(t, l, n, overlay)
		}
	})
	t.Run("connectivity", func(t *testing.T) {
		for _, f := range fams {
			pingPods(t, l, pods, f)
			for _, n := range nodes {
				for _, to := range pods {
					pingAddrOK(t, l, n.NS, n.Name, podID(to), to.Addr(f))
				}
			}
		}
	})
	t.Run("outside", func(t *testing.T) {
		for _, f := range fams {
			checkOutsideFamily(t, l, pods, f)
		}
	})
	t.Run("agent-restart", func(t *testing.T) {
		checkRestartFamilies(t, nodes[1], pods[0], pods[2], fams)
	})
	agentsHealthy(t, nodes)
}

// checkUnderlay checks the lab itself before any agent runs: every node
// reaches the other nodes and the outside host over each underlay family,
// and has no address of a family the underlay lacks.
func checkUnderlay(t *testing.T, l *lab.Lab, nodes []*lab.Node, underlay lab.Family) {
	for _, n := range nodes {
		if n.IP.IsValid() != underlay.Has4() || n.IP6.IsValid() != underlay.Has6() {
			t.Errorf("%s: underlay addresses %s %s on a %s underlay", n.Name, n.IP, n.IP6, underlay)
		}
		for _, f := range underlay.Singles() {
			for _, m := range nodes {
				if m != n {
					pingAddrOK(t, l, n.NS, n.Name, m.Name, m.Addr(f))
				}
			}
			pingAddrOK(t, l, n.NS, n.Name, "outside", l.OutsideAddr(f))
		}
	}
}

// startAgents starts the agents of nodes in parallel and waits until all
// are ready.
func startAgents(t *testing.T, nodes []*lab.Node) {
	t.Helper()
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() { errs[i] = n.StartAgent(t.Context()) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("start agents: %v", err)
	}
}

// pingAddrOK sends 3 echoes 20 ms apart to addr and wants every reply.
func pingAddrOK(t *testing.T, l *lab.Lab, from *lab.NetNS, fromName, toName string, addr netip.Addr) {
	t.Helper()
	r, err := l.Ping(t.Context(), from, addr, 3, 20*time.Millisecond)
	if err != nil || r.Loss() > 0 {
		t.Errorf("ping %s → %s (%s): %v (err %v)", fromName, toName, addr, r, err)
	}
}

// pingPods pings every pod from every other pod over family f, with no
// loss.
func pingPods(t *testing.T, l *lab.Lab, pods []*lab.Pod, f lab.Family) {
	t.Helper()
	for _, from := range pods {
		for _, to := range pods {
			if from != to {
				pingAddrOK(t, l, from.NS, podID(from), podID(to), to.Addr(f))
			}
		}
	}
}

// vxlanDevice returns the named VXLAN device in n's namespace (nil, nil
// when there is none).
func vxlanDevice(n *lab.Node, name string) (*netlink.Vxlan, error) {
	h, err := n.NS.Handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	if _, ok := err.(netlink.LinkNotFoundError); ok {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", n.Name, name, err)
	}
	vx, ok := link.(*netlink.Vxlan)
	if !ok {
		return nil, fmt.Errorf("%s: %s is a %s, not vxlan", n.Name, name, link.Type())
	}
	return vx, nil
}

// checkDevices wants flannel.1 exactly when the overlay has IPv4 and
// flannel-v6.1 exactly when it has IPv6, each with VNI 1, port 8472, the
// node's underlay address of its family as local address and flannel's MTU.
func checkDevices(t *testing.T, n *lab.Node, overlay lab.Family) {
	t.Helper()
	for _, d := range []struct {
		name  string
		f     lab.Family
		want  bool
		local netip.Addr
		mtu   int
	}{
		{dev4, lab.IPv4, overlay.Has4(), n.IP, mtu4},
		{dev6, lab.IPv6, overlay.Has6(), n.IP6, mtu6},
	} {
		vx, err := vxlanDevice(n, d.name)
		switch {
		case err != nil:
			t.Error(err)
		case vx == nil && d.want:
			t.Errorf("%s: no %s in a %s network", n.Name, d.name, overlay)
		case vx != nil && !d.want:
			t.Errorf("%s: %s exists in a %s network", n.Name, d.name, overlay)
		case vx != nil:
			local, _ := netip.AddrFromSlice(vx.SrcAddr)
			if vx.VxlanId != 1 || vx.Port != 8472 || local.Unmap() != d.local || vx.MTU != d.mtu || vx.Learning {
				t.Errorf("%s: %s: vni %d port %d local %s mtu %d learning %v, want vni 1 port 8472 local %s mtu %d nolearning",
					n.Name, d.name, vx.VxlanId, vx.Port, local, vx.MTU, vx.Learning, d.local, d.mtu)
			}
		}
	}
}

// checkSubnetEnv wants flannel's lines in flannel's order: the IPv4 pair
// only with IPv4, the IPv6 pair only with IPv6, and an MTU that fits every
// overlay device of the node.
func checkSubnetEnv(t *testing.T, n *lab.Node, overlay lab.Family) {
	t.Helper()
	lines, err := n.SubnetEnv()
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	vals := map[string]string{}
	for _, line := range lines {
		k, v, _ := strings.Cut(line, "=")
		keys = append(keys, k)
		vals[k] = v
	}
	var want []string
	if overlay.Has4() {
		want = append(want, "FLANNEL_NETWORK", "FLANNEL_SUBNET")
	}
	if overlay.Has6() {
		want = append(want, "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET")
	}
	want = append(want, "FLANNEL_MTU", "FLANNEL_IPMASQ")
	if !slices.Equal(keys, want) {
		t.Errorf("%s: subnet.env keys %v, want %v:\n%s", n.Name, keys, want, strings.Join(lines, "\n"))
	}
	if overlay.Has4() && vals["FLANNEL_NETWORK"] != "10.244.0.0/16" {
		t.Errorf("%s: FLANNEL_NETWORK=%s, want 10.244.0.0/16", n.Name, vals["FLANNEL_NETWORK"])
	}
	if overlay.Has6() {
		if vals["FLANNEL_IPV6_NETWORK"] != lab.DefaultIPv6Network {
			t.Errorf("%s: FLANNEL_IPV6_NETWORK=%s, want %s", n.Name, vals["FLANNEL_IPV6_NETWORK"], lab.DefaultIPv6Network)
		}
		gw, err := netip.ParsePrefix(vals["FLANNEL_IPV6_SUBNET"])
		if err != nil || gw.Bits() != 64 || gw.Addr() != gw.Masked().Addr().Next() || !netip.MustParsePrefix(lab.DefaultIPv6Network).Contains(gw.Addr()) {
			t.Errorf("%s: FLANNEL_IPV6_SUBNET=%s, want <a /64 of %s>::1/64", n.Name, vals["FLANNEL_IPV6_SUBNET"], lab.DefaultIPv6Network)
		}
	}
	mtu, err := strconv.Atoi(vals["FLANNEL_MTU"])
	maxMTU := mtu4
	if overlay.Has6() {
		maxMTU = mtu6
	}
	if err != nil || mtu <= 0 || mtu > maxMTU {
		t.Errorf("%s: FLANNEL_MTU=%s, want at most %d (every overlay device's MTU)", n.Name, vals["FLANNEL_MTU"], maxMTU)
	}
	if vals["FLANNEL_IPMASQ"] != "true" {
		t.Errorf("%s: FLANNEL_IPMASQ=%s, want true", n.Name, vals["FLANNEL_IPMASQ"])
	}
}

// checkLeaseValue wants the node's key and value in etcd exactly as flannel
// writes them for the family (plus weft's NodeName): the key
// <v4>-24[&<v6>-64], 0.0.0.0-0&<v6>-64 for IPv6-only; PublicIPv6 null
// without IPv6; BackendData/BackendV6Data with the devices' MACs; no
// BackendData and PublicIP 0.0.0.0 without IPv4.
func checkLeaseValue(t *testing.T, l *lab.Lab, n *lab.Node, overlay lab.Family) {
	t.Helper()
	lk, err := n.Lease(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	key4, pub4, pub6, data, data6 := "0.0.0.0-0", `"0.0.0.0"`, "null", "", ""
	if overlay.Has4() {
		sn, err := n.Subnet()
		if err != nil {
			t.Fatal(err)
		}
		vx, err := vxlanDevice(n, dev4)
		if err != nil || vx == nil {
			t.Fatalf("%s: %s: %v", n.Name, dev4, err)
		}
		key4, pub4 = fmt.Sprintf("%s-%d", sn.Addr(), sn.Bits()), strconv.Quote(n.IP.String())
		data = fmt.Sprintf(`,"BackendData":{"VNI":1,"VtepMAC":%q}`, vx.HardwareAddr)
	}
	key := l.Prefix() + "/subnets/" + key4
	if overlay.Has6() {
		sn6, err := n.Subnet6()
		if err != nil {
			t.Fatal(err)
		}
		vx, err := vxlanDevice(n, dev6)
		if err != nil || vx == nil {
			t.Fatalf("%s: %s: %v", n.Name, dev6, err)
		}
		key += fmt.Sprintf("&%s-%d", sn6.Addr(), sn6.Bits())
		pub6 = strconv.Quote(n.IP6.String())
		data6 = fmt.Sprintf(`,"BackendV6Data":{"VNI":1,"VtepMAC":%q}`, vx.HardwareAddr)
	}
	value := fmt.Sprintf(`{"PublicIP":%s,"PublicIPv6":%s,"BackendType":"vxlan"%s%s,"NodeName":%q}`, pub4, pub6, data, data6, n.Name)
	if lk.Key != key || lk.Value != value {
		t.Errorf("%s: lease\n %s = %s\nwant\n %s = %s", n.Name, lk.Key, lk.Value, key, value)
	}
	if lk.LeaseID == 0 {
		t.Errorf("%s: %s has no etcd lease", n.Name, lk.Key)
	}
}

// checkOutsideFamily is scenario 2 for one family: each pod's datagram to
// the outside host's address of family f arrives from the node's underlay
// address of that family.
func checkOutsideFamily(t *testing.T, l *lab.Lab, pods []*lab.Pod, f lab.Family) {
	t.Helper()
	ln, err := l.Outside().ListenPacket("udp", net.JoinHostPort(l.OutsideAddr(f).String(), "9999"))
	if err != nil {
		t.Fatalf("outside listener: %v", err)
	}
	defer ln.Close()
	for _, p := range pods {
		src, err := sourceSeenOutside(t.Context(), ln, p)
		if err != nil {
			t.Errorf("%s → outside %s: %v", podID(p), l.OutsideAddr(f), err)
		} else if want := p.Node.Addr(f); src != want {
			t.Errorf("%s → outside %s with --ip-masq: outside saw %s, want the node's address %s", podID(p), l.OutsideAddr(f), src, want)
		}
	}
}

// checkRestartFamilies is scenario 4 over every family at once: node's
// agent restarts while from pings to (a pod on node) over each family; no
// echo is lost, and the node keeps its lease key and subnet.env.
func checkRestartFamilies(t *testing.T, node *lab.Node, from, to *lab.Pod, fams []lab.Family) {
	ctx := t.Context()
	keyBefore, err := node.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	envBefore, err := node.SubnetEnv()
	if err != nil {
		t.Fatal(err)
	}
	var ps []*lab.Pinger
	for _, f := range fams {
		p, err := lab.StartPing(ctx, from.NS, to.Addr(f), 0, pingInterval)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	rs, err := pingAcrossAll(func() error { return node.RestartAgent(ctx) }, ps...)
	if err != nil {
		t.Fatalf("restart %s: %v", node.Name, err)
	}
	for i, f := range fams {
		if rs[i].Loss() > 0 {
			t.Errorf("%s ping %s → %s across the restart of %s: %v, want no loss", f, podID(from), podID(to), node.Name, rs[i])
		}
		t.Logf("%s ping across the restart: %v", f, rs[i])
	}
	keyAfter, err := node.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	envAfter, err := node.SubnetEnv()
	if err != nil {
		t.Fatal(err)
	}
	if keyAfter.Key != keyBefore.Key || keyAfter.Value != keyBefore.Value {
		t.Errorf("%s: lease after restart %s = %s, want %s = %s", node.Name, keyAfter.Key, keyAfter.Value, keyBefore.Key, keyBefore.Value)
	}
	if !slices.Equal(envAfter, envBefore) {
		t.Errorf("%s: subnet.env after restart %v, want %v", node.Name, envAfter, envBefore)
	}
}
