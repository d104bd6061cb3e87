package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/test/lab"
)

// TestDualStackNeedsIPv6Underlay starts weftd with a dual-stack network
// config on a node whose underlay (eth0) has only an IPv4 address: the agent
// must refuse at start, naming the missing IPv6 address of the underlay, and
// leave nothing behind (no VXLAN device, no lease, no subnet.env).
func TestDualStackNeedsIPv6Underlay(t *testing.T) {
	l := newLab(t, lab.Options{Overlay: lab.Dual, Underlay: lab.IPv4})
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	n, err := l.AddNode(ctx, l.NodeDefaults())
	if err == nil {
		t.Fatalf("weftd with a dual-stack config started on an IPv4-only underlay\n%s", n.LogTail(20))
	}
	if n == nil {
		t.Fatalf("add node: %v", err)
	}
	if done, exitErr := n.AgentExited(); !done || exitErr == nil {
		t.Fatalf("agent exited %v (%v), want a failed exit at start; start: %v\n%s", done, exitErr, err, n.LogTail(20))
	}
	log := n.LogTail(20)
	refusal := regexp.MustCompile(`(?m)^.*level=ERROR.*(IPv6.*eth0|eth0.*IPv6).*$`).FindString(log)
	if refusal == "" {
		t.Errorf("no ERROR line names the missing IPv6 address of eth0:\n%s", log)
	}
	t.Logf("weftd refused: %s", refusal)
	for _, dev := range []string{dev4, dev6} {
		if vx, err := vxlanDevice(n, dev); err != nil || vx != nil {
			t.Errorf("%s: %s left behind by a refused start (err %v)", n.Name, dev, err)
		}
	}
	resp, err := l.Etcd().Get(t.Context(), l.Prefix()+"/subnets/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Errorf("%d lease keys in etcd after a refused start, want none", resp.Count)
	}
	if _, err := os.Stat(n.SubnetFile()); !os.IsNotExist(err) {
		t.Errorf("subnet.env after a refused start: %v", err)
	}
}

// The hand-made flannel node of TestFlannelDualStackPeer: its underlay
// addresses, VTEP MACs and subnets (blocks 200 / 0xc8, outside the first
// blocks weft's agents pick from, and written before they start).
var (
	flannelIP    = netip.MustParseAddr("198.18.0.100")
	flannelIP6   = netip.MustParseAddr("fd00:198:18::100")
	flannelMAC   = "0e:f1:a0:00:00:04"
	flannelMAC6  = "0e:f1:a0:00:00:06"
	flannelNet   = netip.MustParsePrefix("10.244.200.0/24")
	flannelNet6  = netip.MustParsePrefix("fc00:0:0:c8::/64")
	flannelPod   = netip.MustParseAddr("10.244.200.2")
	flannelPod6  = netip.MustParseAddr("fc00:0:0:c8::2")
	flannelLease = `{"PublicIP":"198.18.0.100","PublicIPv6":"fd00:198:18::100","BackendType":"vxlan",` +
		`"BackendData":{"VNI":1,"VtepMAC":"0e:f1:a0:00:00:04"},"BackendV6Data":{"VNI":1,"VtepMAC":"0e:f1:a0:00:00:06"}}`
)

// TestFlannelDualStackPeer checks wire compatibility with a dual-stack
// flannel node. No flannel binary is available offline, so the flannel node
// is made by hand: a namespace on the switch with flannel.1 and flannel-v6.1
// as flanneld's vxlan backend creates them, a lease written into etcd
// exactly as flanneld writes a dual-stack lease (key <v4>-24&<v6>-64, value
// with PublicIPv6 and BackendV6Data, attached to an etcd lease), and for
// every weft lease the neighbour, FDB and route entries flanneld programs.
// Its pod sits behind a veth whose node end holds the gateway addresses
// (routing as behind flannel's cni0 bridge). A weft pod and the flannel pod
// must reach each other over IPv4 and IPv6, both ways.
func TestFlannelDualStackPeer(t *testing.T) {
	l := newLab(t, lab.Options{IPMasq: true, Overlay: lab.Dual})
	ctx := t.Context()
	fl, pod := flannelNode(t, l)
	key := fmt.Sprintf("%s/subnets/%s-%d&%s-%d", l.Prefix(), flannelNet.Addr(), flannelNet.Bits(), flannelNet6.Addr(), flannelNet6.Bits())
	grant, err := l.Etcd().Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Etcd().Put(ctx, key, flannelLease, clientv3.WithLease(grant.ID)); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}

	nodes, err := l.AddNodes(ctx, 2, l.NodeDefaults())
	if err != nil {
		t.Fatalf("start nodes: %v", err)
	}
	pods := addPods(t, l, nodes, 1)
	for _, n := range nodes {
		lk, err := n.Lease(ctx)
		if err != nil {
			t.Fatal(err)
		}
		flannelProgram(t, fl, lk)
	}
	for _, p := range pods {
		pingAddrOK(t, l, p.NS, podID(p), "flannel/pod", flannelPod)
		pingAddrOK(t, l, p.NS, podID(p), "flannel/pod", flannelPod6)
		pingAddrOK(t, l, pod, "flannel/pod", podID(p), p.IP)
		pingAddrOK(t, l, pod, "flannel/pod", podID(p), p.IP6)
	}
	agentsHealthy(t, nodes)
}

// flannelNode builds the flannel node and its pod, removed when the test ends.
func flannelNode(t *testing.T, l *lab.Lab) (node, pod *lab.NetNS) {
	t.Helper()
	ctx := t.Context()
	mk := func(suffix string) *lab.NetNS {
		n, err := lab.NewNetNS(ctx, l.NamePrefix()+"-"+suffix)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := n.Remove(); err != nil {
				t.Error(err)
			}
		})
		return n
	}
	node, pod = mk("flannel"), mk("flannel-pod")
	if err := lab.PlugAddrs(l.Switch(), "br0", "p-flannel", node,
		netip.PrefixFrom(flannelIP, lab.Underlay.Bits()), netip.PrefixFrom(flannelIP6, lab.Underlay6.Bits())); err != nil {
		t.Fatal(err)
	}
	gw, gw6 := flannelNet.Addr().Next(), flannelNet6.Addr().Next()
	// No DAD on the links made below: a router whose link-local address is
	// still tentative sends no neighbour solicitation for forwarded packets
	// (flannel's cni0 has long been up when a peer pings).
	for _, n := range []*lab.NetNS{node, pod} {
		run(t, n, "sysctl -q -w net.ipv6.conf.default.accept_dad=0", "sysctl -q -w net.ipv6.conf.all.accept_dad=0")
	}
	run(t, node,
		"sysctl -q -w net.ipv4.ip_forward=1",
		"sysctl -q -w net.ipv6.conf.all.forwarding=1",
		"ip link add flannel.1 address "+flannelMAC+" type vxlan id 1 local "+flannelIP.String()+" dev eth0 dstport 8472 nolearning",
		"ip link set flannel.1 mtu 1450 up",
		"ip addr add "+flannelNet.Addr().String()+"/32 dev flannel.1",
		"ip link add flannel-v6.1 address "+flannelMAC6+" type vxlan id 1 local "+flannelIP6.String()+" dev eth0 dstport 8472 nolearning",
		"ip link set flannel-v6.1 mtu 1430 up",
		"ip -6 addr add "+flannelNet6.Addr().String()+"/128 dev flannel-v6.1 nodad",
		"ip link add vethpod type veth peer name eth0 netns "+pod.Name,
		"ip addr add "+netip.PrefixFrom(gw, 24).String()+" dev vethpod",
		"ip -6 addr add "+netip.PrefixFrom(gw6, 64).String()+" dev vethpod nodad",
		"ip link set vethpod up",
	)
	run(t, pod,
		"ip addr add "+netip.PrefixFrom(flannelPod, 24).String()+" dev eth0",
		"ip -6 addr add "+netip.PrefixFrom(flannelPod6, 64).String()+" dev eth0 nodad",
		"ip link set eth0 up",
		"ip route add default via "+gw.String(),
		"ip -6 route add default via "+gw6.String(),
	)
	return node, pod
}

// flannelProgram adds, on the flannel node, what flanneld's vxlan backend
// programs for a dual-stack peer lease: per family a permanent neighbour for
// the peer's subnet address, an FDB entry for its VTEP MAC and an onlink
// route via that address.
func flannelProgram(t *testing.T, fl *lab.NetNS, lk lab.LeaseKV) {
	t.Helper()
	if !lk.Subnet.IsValid() || !lk.Subnet6.IsValid() {
		t.Fatalf("lease %s = %s is not dual stack", lk.Key, lk.Value)
	}
	gw, gw6 := lk.Subnet.Addr(), lk.Subnet6.Addr()
	run(t, fl,
		fmt.Sprintf("ip neigh replace %s lladdr %s dev flannel.1 nud permanent", gw, lk.VtepMAC),
		fmt.Sprintf("bridge fdb replace %s dev flannel.1 self dst %s permanent", lk.VtepMAC, lk.PublicIP),
		fmt.Sprintf("ip route replace %s via %s dev flannel.1 onlink", lk.Subnet, gw),
		fmt.Sprintf("ip -6 neigh replace %s lladdr %s dev flannel-v6.1 nud permanent", gw6, lk.VtepMAC6),
		fmt.Sprintf("bridge fdb replace %s dev flannel-v6.1 self dst %s permanent", lk.VtepMAC6, lk.PublicIPv6),
		fmt.Sprintf("ip -6 route replace %s via %s dev flannel-v6.1 onlink", lk.Subnet6, gw6),
	)
}

// run runs each command line (split on spaces) inside n.
func run(t *testing.T, n *lab.NetNS, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		f := strings.Fields(c)
		if _, err := n.Exec(t.Context(), f[0], f[1:]...); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDirectRoutingDualStack: with DirectRouting on a dual-stack network,
// nodes on one L2 segment route each other's pods straight over the
// underlay of the pods' family (IPv4 subnets via the peer's PublicIP, IPv6
// ones via its PublicIPv6, both on eth0), not through the VXLAN devices, and
// pods reach each other over both families.
func TestDirectRoutingDualStack(t *testing.T) {
	l := newLab(t, lab.Options{IPMasq: true, Overlay: lab.Dual, Underlay: lab.Dual})
	ctx := t.Context()
	conf := `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan","DirectRouting":true}}`
	if _, err := l.Etcd().Put(ctx, l.Prefix()+"/config", conf); err != nil {
		t.Fatal(err)
	}
	var nodes []*lab.Node
	for range 2 {
		n, err := l.AddNode(ctx, l.NodeDefaults())
		if err != nil {
			t.Fatalf("add node: %v", err)
		}
		nodes = append(nodes, n)
	}
	pods := addPods(t, l, nodes, 1)
	for _, f := range []lab.Family{lab.IPv4, lab.IPv6} {
		out, err := nodes[0].NS.Exec(ctx, "ip", "route", "get", pods[1].Addr(f).String())
		want := fmt.Sprintf("via %s dev eth0", nodes[1].Addr(f))
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("%s: route to %s's pod %s: %q (%v), want %q", f, nodes[1].Name, pods[1].Addr(f), out, err, want)
		}
		pingAddrOK(t, l, pods[0].NS, podID(pods[0]), podID(pods[1]), pods[1].Addr(f))
		pingAddrOK(t, l, pods[1].NS, podID(pods[1]), podID(pods[0]), pods[0].Addr(f))
	}
	agentsHealthy(t, nodes)
}
