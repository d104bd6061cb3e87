package plugin_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/subnetenv"
	"github.com/weftnet/weft/test/nettest"
)

const (
	testNetwork6 = "fd00:10:244::/48"
	testSubnet4  = "10.244.1.1/24"
	testSubnet6  = "fd00:10:244:1::1/64" // as weftd writes it: the gateway with the lease's length
)

// writeSubnetEnvFamilies writes subnet.env with the IPv4 pair when subnet is
// set and the IPv6 pair when subnet6 is.
func (n *node) writeSubnetEnvFamilies(t *testing.T, subnet, subnet6 string) {
	t.Helper()
	env := subnetenv.SubnetEnv{MTU: testMTU, IPMasq: true}
	if subnet != "" {
		env.Network, env.Subnet = netip.MustParsePrefix(testNetwork), netip.MustParsePrefix(subnet)
	}
	if subnet6 != "" {
		env.IPv6Network, env.IPv6Subnet = netip.MustParsePrefix(testNetwork6), netip.MustParsePrefix(subnet6)
	}
	if err := subnetenv.WriteSubnetEnv(n.subnetFile, env); err != nil {
		t.Fatal(err)
	}
}

// podFamily is what a pod of one family should get.
type podFamily struct {
	gateway netip.Prefix // the bridge's address
	network string       // the cluster Network
}

var (
	fam4 = podFamily{netip.MustParsePrefix(testSubnet4), testNetwork}
	fam6 = podFamily{netip.MustParsePrefix(testSubnet6), testNetwork6}
)

func (f podFamily) is6() bool { return f.gateway.Addr().Is6() }

func (f podFamily) defaultDst() string {
	if f.is6() {
		return "::/0"
	}
	return "0.0.0.0/0"
}

// podIPs are the result's addresses, in order.
func podIPs(r *current.Result) []netip.Prefix {
	var out []netip.Prefix
	for _, ip := range r.IPs {
		a, _ := netip.AddrFromSlice(ip.Address.IP)
		ones, _ := ip.Address.Mask.Size()
		out = append(out, netip.PrefixFrom(a.Unmap(), ones))
	}
	return out
}

// globalAddrs are the addresses of l but IPv6 link-local ones, with their flags.
func globalAddrs(t *testing.T, h *netlink.Handle, l netlink.Link) map[netip.Prefix]int {
	t.Helper()
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	out := map[netip.Prefix]int{}
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		ip, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		out[netip.PrefixFrom(ip.Unmap(), ones)] = a.Flags
	}
	return out
}

// verifyFamilies checks the result, the kernel (right after ADD: nothing
// tentative) and the disk for a pod that should have one address per family
// of fams, in that order.
func verifyFamilies(t *testing.T, n *node, pod *nettest.NS, rt *libcni.RuntimeConf, r *current.Result, fams ...podFamily) {
	t.Helper()
	// Result: one address per family with its gateway, routes per family.
	ips := podIPs(r)
	if len(ips) != len(fams) || len(r.Interfaces) != 3 {
		t.Fatalf("result ips %v interfaces %v, want %d addresses", r.IPs, r.Interfaces, len(fams))
	}
	var wantRoutes []string
	for i, f := range fams {
		ip := ips[i]
		if r.IPs[i].Interface == nil || *r.IPs[i].Interface != 2 || r.IPs[i].Gateway.String() != f.gateway.Addr().String() ||
			ip.Bits() != f.gateway.Bits() || !f.gateway.Masked().Contains(ip.Addr()) || ip.Addr() == f.gateway.Addr() {
			t.Fatalf("ips[%d] = %v, want a pod address of %s with gateway %s", i, r.IPs[i], f.gateway.Masked(), f.gateway.Addr())
		}
		wantRoutes = append(wantRoutes, f.network+" via "+f.gateway.Addr().String(), f.defaultDst()+" via "+f.gateway.Addr().String())
	}
	var routes []string
	for _, rr := range r.Routes {
		routes = append(routes, rr.Dst.String()+" via "+rr.GW.String())
	}
	if got, want := strings.Join(routes, ", "), strings.Join(wantRoutes, ", "); got != want {
		t.Fatalf("routes = %s\nwant     %s", got, want)
	}
	// The pod MAC is 0a:58 + the first address's last four bytes (IPv4's when present).
	b := ips[0].Addr().AsSlice()
	if want := net.HardwareAddr(append([]byte{0x0a, 0x58}, b[len(b)-4:]...)).String(); r.Interfaces[2].Mac != want {
		t.Fatalf("pod MAC %s, want %s", r.Interfaces[2].Mac, want)
	}

	// Pod: every address, none tentative; each family's routes.
	ph := nettest.Handle(t, pod.NetNS)
	eth0, err := ph.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if eth0.Attrs().HardwareAddr.String() != r.Interfaces[2].Mac || eth0.Attrs().MTU != testMTU {
		t.Fatalf("eth0 mac %s mtu %d", eth0.Attrs().HardwareAddr, eth0.Attrs().MTU)
	}
	have := globalAddrs(t, ph, eth0)
	if len(have) != len(ips) {
		t.Fatalf("eth0 addresses %v, want %v", have, ips)
	}
	for _, ip := range ips {
		flags, ok := have[ip]
		if !ok {
			t.Fatalf("eth0 lacks %s (has %v)", ip, have)
		}
		if flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
			t.Fatalf("eth0 address %s is tentative or failed DAD right after ADD (flags %#x)", ip, flags)
		}
	}
	kr, err := ph.RouteList(eth0, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var kroutes []string
	for _, k := range kr {
		if k.Gw != nil {
			dst := "0.0.0.0/0"
			if k.Dst != nil {
				dst = k.Dst.String()
			} else if k.Family == netlink.FAMILY_V6 {
				dst = "::/0"
			}
			kroutes = append(kroutes, dst+" via "+k.Gw.String())
		}
	}
	for _, w := range wantRoutes {
		if !slices.Contains(kroutes, w) {
			t.Fatalf("pod routes %v lack %s", kroutes, w)
		}
	}

	// Node: cni0 has each family's gateway (none tentative), forwarding on.
	br, err := n.h.LinkByName("cni0")
	if err != nil {
		t.Fatal(err)
	}
	bra := globalAddrs(t, n.h, br)
	if len(bra) != len(fams) {
		t.Fatalf("cni0 addresses %v, want the %d gateways", bra, len(fams))
	}
	for _, f := range fams {
		flags, ok := bra[f.gateway]
		if !ok || flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
			t.Fatalf("cni0 gateway %s: present %t, flags %#x", f.gateway, ok, flags)
		}
		if f.is6() {
			// Its link-local address too: the node solicits pods' neighbours
			// from it for forwarded packets, and sends nothing while it is
			// tentative.
			lls, err := n.h.AddrList(br, unix.AF_INET6)
			if err != nil {
				t.Fatal(err)
			}
			nll := 0
			for _, a := range lls {
				if !a.IP.IsLinkLocalUnicast() {
					continue
				}
				nll++
				if a.Flags&unix.IFA_F_TENTATIVE != 0 {
					t.Fatalf("cni0 link-local %s is tentative right after ADD (flags %#x)", a.IP, a.Flags)
				}
			}
			if nll != 1 {
				t.Fatalf("cni0 has %d link-local addresses, want 1: %v", nll, lls)
			}
		}
		key := "/proc/sys/net/ipv4/ip_forward"
		if f.is6() {
			key = "/proc/sys/net/ipv6/conf/all/forwarding"
		}
		if v := n.sysctl(t, key); v != "1" {
			t.Fatalf("%s = %q in the node netns, want 1", key, v)
		}
	}
	// Disk: host-local's files, a cursor per family.
	for i, ip := range ips {
		if c, err := os.ReadFile(filepath.Join(n.dataDir, "cbr0", ip.Addr().String())); err != nil || string(c) != rt.ContainerID+"\r\neth0" {
			t.Fatalf("reservation of %s: %q %v", ip.Addr(), c, err)
		}
		if c, err := os.ReadFile(filepath.Join(n.dataDir, "cbr0", fmt.Sprintf("last_reserved_ip.%d", i))); err != nil || string(c) != ip.Addr().String() {
			t.Fatalf("last_reserved_ip.%d = %q %v, want %s", i, c, err, ip.Addr())
		}
	}
}

// sysctl reads a /proc/sys file in the node netns.
func (n *node) sysctl(t *testing.T, path string) string {
	t.Helper()
	var b []byte
	if err := n.in(func() (err error) { b, err = os.ReadFile(path); return err }); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func addResult(t *testing.T, n *node, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) *current.Result {
	t.Helper()
	res, err := n.add(list, rt)
	if err != nil {
		t.Fatalf("ADD %s: %v", rt.ContainerID, err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestDualStackLifecycle: with both pairs in subnet.env, ADD gives the pod
// an IPv4 and an IPv6 address (gateway, routes, not tentative), in every
// result version; CHECK passes; DEL releases both, twice.
func TestDualStackLifecycle(t *testing.T) {
	nettest.Privileged(t)
	for _, ver := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(ver, func(t *testing.T) {
			n := newNode(t, "")
			n.writeSubnetEnvFamilies(t, testSubnet4, testSubnet6)
			list := n.conflist(t, ver, nil)
			pod := nettest.NewNS(t, "cp")
			rt := rtFor("ctr-dual-"+strings.ReplaceAll(ver, ".", ""), pod)
			res, err := n.add(list, rt)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if res.Version() != ver {
				t.Fatalf("result version %s, want %s", res.Version(), ver)
			}
			r, err := current.NewResultFromResult(res)
			if err != nil {
				t.Fatal(err)
			}
			verifyFamilies(t, n, pod, rt, r, fam4, fam6)
			if ver != "0.3.1" {
				if err := n.check(list, rt); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
			}
			for i := range 2 {
				if err := n.del(list, rt); err != nil {
					t.Fatalf("DEL #%d: %v", i+1, err)
				}
				verifyDetached(t, n, pod)
			}
		})
	}
}

// TestIPv6Only: an IPv6-only subnet.env gives pods one IPv6 address, the
// MAC derived from it, and leaves IPv4 alone (no bridge address, no IPv4
// forwarding).
func TestIPv6Only(t *testing.T) {
	nettest.Privileged(t)
	n := newNode(t, "")
	n.writeSubnetEnvFamilies(t, "", testSubnet6)
	list := n.conflist(t, "", nil)
	pod := nettest.NewNS(t, "cp")
	rt := rtFor("ctr-v6only", pod)
	r := addResult(t, n, list, rt)
	verifyFamilies(t, n, pod, rt, r, fam6)
	if got := podIPs(r)[0].String(); got != "fd00:10:244:1::2/64" || r.Interfaces[2].Mac != "0a:58:00:00:00:02" {
		t.Fatalf("first pod: %s mac %s, want fd00:10:244:1::2/64 mac 0a:58:00:00:00:02", got, r.Interfaces[2].Mac)
	}
	if r.Interfaces[0].Mac != "0a:58:00:00:00:01" {
		t.Fatalf("cni0 MAC %s, want 0a:58:00:00:00:01 (from fd00:10:244:1::1)", r.Interfaces[0].Mac)
	}
	if v := n.sysctl(t, "/proc/sys/net/ipv4/ip_forward"); v != "0" {
		t.Fatalf("ip_forward = %s after an IPv6-only ADD, want it left at 0", v)
	}
	ping(t, pod, "fd00:10:244:1::1")
	if err := n.check(list, rt); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := n.del(list, rt); err != nil {
		t.Fatal(err)
	}
	verifyDetached(t, n, pod)
}

// TestDualStackTraffic: two dual-stack pods on one node reach the gateway
// and each other over IPv6 (and IPv4).
func TestDualStackTraffic(t *testing.T) {
	nettest.Privileged(t)
	n := newNode(t, "")
	n.writeSubnetEnvFamilies(t, testSubnet4, testSubnet6)
	list := n.conflist(t, "", nil)
	pod1, pod2 := nettest.NewNS(t, "cp"), nettest.NewNS(t, "cp")
	rt1, rt2 := rtFor("ctr-t1", pod1), rtFor("ctr-t2", pod2)
	r1, r2 := addResult(t, n, list, rt1), addResult(t, n, list, rt2)
	t.Cleanup(func() { _ = n.del(list, rt1); _ = n.del(list, rt2) })
	ip1, ip2 := podIPs(r1), podIPs(r2)
	ping(t, pod1, "fd00:10:244:1::1")
	ping(t, pod2, "fd00:10:244:1::1")
	ping(t, pod1, ip2[1].Addr().String())
	ping(t, pod2, ip1[1].Addr().String())
	ping(t, pod1, ip2[0].Addr().String())
}

// TestDualStackCheckFindsDamage: CHECK covers the IPv6 family too.
func TestDualStackCheckFindsDamage(t *testing.T) {
	nettest.Privileged(t)
	n := newNode(t, "")
	n.writeSubnetEnvFamilies(t, testSubnet4, testSubnet6)
	list := n.conflist(t, "", nil)
	for i, tt := range []struct {
		name   string
		damage func(r *current.Result) []string // the command run in the pod
		msg    string
	}{
		{"IPv6 address removed", func(r *current.Result) []string {
			return []string{"ip", "-6", "addr", "del", podIPs(r)[1].String(), "dev", "eth0"}
		}, "lacks address fd00:10:244:1::"},
		{"IPv6 default route removed", func(*current.Result) []string {
			return []string{"ip", "-6", "route", "del", "default"}
		}, "route ::/0 via fd00:10:244:1::1 missing"},
		{"IPv6 network route removed", func(*current.Result) []string {
			return []string{"ip", "-6", "route", "del", testNetwork6}
		}, "route " + testNetwork6 + " via fd00:10:244:1::1 missing"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pod := nettest.NewNS(t, "cp")
			rt := rtFor(fmt.Sprintf("ctr-dmg6-%d", i), pod)
			r := addResult(t, n, list, rt)
			t.Cleanup(func() { _ = n.del(list, rt) })
			if err := n.check(list, rt); err != nil {
				t.Fatalf("CHECK before damage: %v", err)
			}
			cmd := tt.damage(r)
			if out, err := pod.Exec(t, cmd[0], cmd[1:]...); err != nil {
				t.Fatalf("%v: %v %s", cmd, err, out)
			}
			wantCode(t, n.check(list, rt), 103, tt.msg)
		})
	}
}

// TestDualStackGC: GC releases both families' reservations of a lost pod
// and keeps both of a valid one.
func TestDualStackGC(t *testing.T) {
	nettest.Privileged(t)
	n := newNode(t, "")
	n.writeSubnetEnvFamilies(t, testSubnet4, testSubnet6)
	list := n.conflist(t, "", nil)
	keep, lost := nettest.NewNS(t, "cp"), nettest.NewNS(t, "cp")
	rtKeep := rtFor("ctr-keep", keep)
	rKeep := addResult(t, n, list, rtKeep)
	t.Cleanup(func() { _ = n.del(list, rtKeep) })
	other := &node{ns: n.ns, h: n.h, subnetFile: n.subnetFile, dataDir: n.dataDir,
		cni: libcni.NewCNIConfigWithCacheDir([]string{cniPath(t)}, t.TempDir(), nil)}
	addResult(t, other, list, rtFor("ctr-lost", lost))
	if f := n.ipFiles(t); len(f) != 4 {
		t.Fatalf("before GC: %v, want two pods' two addresses", f)
	}
	valid := []types.GCAttachment{{ContainerID: "ctr-keep", IfName: "eth0"}}
	if err := n.in(func() error {
		return n.cni.GCNetworkList(context.Background(), list, &libcni.GCArgs{ValidAttachments: valid})
	}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	var want []string
	for _, ip := range podIPs(rKeep) {
		want = append(want, ip.Addr().String())
	}
	got := n.ipFiles(t)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) || len(n.veths(t)) != 1 {
		t.Fatalf("after GC: files %v veths %v, want %v and ctr-keep's veth", got, n.veths(t), want)
	}
	if err := n.check(list, rtKeep); err != nil {
		t.Fatalf("CHECK after GC: %v", err)
	}
}

// TestHostLocalStoreDualStack: reservations and cursors host-local wrote
// for its two range sets (IPv4 set 0, IPv6 set 1) are respected.
func TestHostLocalStoreDualStack(t *testing.T) {
	nettest.Privileged(t)
	n := newNode(t, "")
	n.writeSubnetEnvFamilies(t, testSubnet4, testSubnet6)
	dir := filepath.Join(n.dataDir, "cbr0")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"10.244.1.2":         "hl-pod\r\neth0",
		"fd00:10:244:1::2":   "hl-pod\r\neth0",
		"fd00:10:244:1::3":   "hl-pod2\r\neth0",
		"last_reserved_ip.0": "10.244.1.2",
		"last_reserved_ip.1": "fd00:10:244:1::3",
	} {
		writeFile(t, filepath.Join(dir, name), content)
	}
	list := n.conflist(t, "", nil)
	pod := nettest.NewNS(t, "cp")
	rt := rtFor("ctr-after-hl", pod)
	r := addResult(t, n, list, rt)
	if got := fmt.Sprint(podIPs(r)); got != "[10.244.1.3/24 fd00:10:244:1::4/64]" {
		t.Fatalf("ADD after host-local got %s, want [10.244.1.3/24 fd00:10:244:1::4/64]", got)
	}
	verifyFamilies(t, n, pod, rt, r, fam4, fam6)
	if err := n.del(list, rt); err != nil {
		t.Fatal(err)
	}
	got := n.ipFiles(t)
	slices.Sort(got)
	if want := []string{"10.244.1.2", "fd00:10:244:1::2", "fd00:10:244:1::3"}; !slices.Equal(got, want) {
		t.Fatalf("after DEL: %v, want host-local's %v", got, want)
	}
}

// TestIPv6RangeExhausted: a full IPv6 range is code 100 naming the family
// and the range, and a dual-stack ADD that got its IPv4 address first
// gives it back. ipam.ranges overrides only the IPv6 family here.
func TestIPv6RangeExhausted(t *testing.T) {
	nettest.Privileged(t)
	n := newNode(t, "")
	n.writeSubnetEnvFamilies(t, testSubnet4, testSubnet6)
	list := n.conflist(t, "", func(w map[string]any) {
		w["ipam"] = map[string]any{"ranges": []any{[]any{map[string]any{
			"subnet": "fd00:10:244:1::/64", "rangeStart": "fd00:10:244:1::100", "rangeEnd": "fd00:10:244:1::101",
		}}}}
	})
	for i := range 2 {
		pod := nettest.NewNS(t, "cp")
		r := addResult(t, n, list, rtFor(fmt.Sprintf("ctr-fill-%d", i), pod))
		if got, want := podIPs(r)[1].String(), fmt.Sprintf("fd00:10:244:1::%d/64", 100+i); got != want || podIPs(r)[0].Addr().Is6() {
			t.Fatalf("pod %d: %v, want an IPv4 address and %s", i, podIPs(r), want)
		}
	}
	files, veths := n.ipFiles(t), n.veths(t)
	_, err := n.add(list, rtFor("ctr-full", nettest.NewNS(t, "cp")))
	wantCode(t, err, 100, "allocate IPv6 address: no IP addresses available in range fd00:10:244:1::100-fd00:10:244:1::101")
	if got := n.ipFiles(t); len(got) != len(files) || len(n.veths(t)) != len(veths) {
		t.Fatalf("refused ADD left state: files %v (before %v) veths %v", got, files, n.veths(t))
	}
}

// TestSubnetEnvFamilyErrors: a broken IPv6 pair is code 11 naming it, and an
// ipam range of a family subnet.env lacks is code 7; nothing is left behind.
func TestSubnetEnvFamilyErrors(t *testing.T) {
	nettest.Privileged(t)
	for _, tt := range []struct {
		name, env string
		ipam      map[string]any
		code      uint
		msg       string
	}{
		{"IPv6 network without subnet", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/48\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
			nil, 11, "missing FLANNEL_IPV6_SUBNET"},
		{"IPv6 pair holds IPv4", "FLANNEL_IPV6_NETWORK=10.244.0.0/16\nFLANNEL_IPV6_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
			nil, 11, "FLANNEL_IPV6_NETWORK=10.244.0.0/16 and FLANNEL_IPV6_SUBNET=10.244.1.1/24 must be IPv6"},
		{"IPv6 subnet outside the network", "FLANNEL_IPV6_NETWORK=fd00:10:244::/48\nFLANNEL_IPV6_SUBNET=fd00:99::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
			nil, 11, "FLANNEL_IPV6_SUBNET=fd00:99::1/64 is not inside FLANNEL_IPV6_NETWORK=fd00:10:244::/48"},
		{"IPv6 with an MTU below 1280", "FLANNEL_IPV6_NETWORK=fd00:10:244::/48\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1200\nFLANNEL_IPMASQ=true\n",
			nil, 11, "FLANNEL_MTU=1200"},
		{"IPv6 range on an IPv4-only node", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
			map[string]any{"ranges": []any{[]any{map[string]any{"subnet": "fd00:10:244:1::/64"}}}}, 7, "range fd00:10:244:1::/64 is for a family"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, "")
			if err := os.MkdirAll(filepath.Dir(n.subnetFile), 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, n.subnetFile, tt.env)
			list := n.conflist(t, "", func(w map[string]any) {
				if tt.ipam != nil {
					w["ipam"] = tt.ipam
				}
			})
			_, err := n.add(list, rtFor("ctr-bad", nettest.NewNS(t, "cp")))
			wantCode(t, err, tt.code, tt.msg)
			if f, v := n.ipFiles(t), n.veths(t); len(f) != 0 || len(v) != 0 {
				t.Fatalf("failed ADD left files %v veths %v", f, v)
			}
			if tt.code == 11 {
				st := n.in(func() error { return n.cni.GetStatusNetworkList(context.Background(), list) })
				wantCode(t, st, 50, tt.msg)
			}
		})
	}
}

// TestStatusIPv6Only: STATUS is ready with an IPv6-only subnet.env.
func TestStatusIPv6Only(t *testing.T) {
	nettest.Privileged(t)
	n := newNode(t, "")
	n.writeSubnetEnvFamilies(t, "", testSubnet6)
	list := n.conflist(t, "", nil)
	if err := n.in(func() error { return n.cni.GetStatusNetworkList(context.Background(), list) }); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
}

// TestReadOnlyProcSysForwarding: with /proc/sys read-only (the plugin run in
// a mount namespace where it is), a dual-stack ADD works when both
// forwarding sysctls are already 1, and fails naming the IPv6 sysctl when
// IPv6 forwarding is off, leaving no reservation.
func TestReadOnlyProcSysForwarding(t *testing.T) {
	nettest.Privileged(t)
	if _, err := osexec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare(1)")
	}
	real := filepath.Join(cniPath(t), "weft")
	wrapDir := t.TempDir()
	script := "#!/bin/sh\nexec unshare --mount --propagation private sh -c " +
		`'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$0"' ` + real + "\n"
	if err := os.WriteFile(filepath.Join(wrapDir, "weft"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		fwd6 string
		ok   bool
	}{{"IPv6 forwarding already on", "1", true}, {"IPv6 forwarding off", "0", false}} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, "")
			n.writeSubnetEnvFamilies(t, testSubnet4, testSubnet6)
			n.cni = libcni.NewCNIConfigWithCacheDir([]string{wrapDir, cniPath(t)}, t.TempDir(), nil)
			for key, v := range map[string]string{"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": tc.fwd6} {
				if err := n.in(func() error { return os.WriteFile("/proc/sys/"+key, []byte(v), 0o644) }); err != nil {
					t.Fatal(err)
				}
			}
			list := n.conflist(t, "", nil)
			pod := nettest.NewNS(t, "cp")
			rt := rtFor("ctr-ro", pod)
			res, err := n.add(list, rt)
			if !tc.ok {
				wantCode(t, err, types.ErrInternal, "enable IPv6 forwarding (net.ipv6.conf.all.forwarding=1")
				if !strings.Contains(err.Error(), "read-only file system") {
					t.Fatalf("error %v does not say /proc/sys is read-only", err)
				}
				if f := n.ipFiles(t); len(f) != 0 {
					t.Fatalf("failed ADD left %v", f)
				}
				return
			}
			if err != nil {
				t.Fatalf("ADD with /proc/sys read-only and forwarding on: %v", err)
			}
			r, err := current.NewResultFromResult(res)
			if err != nil {
				t.Fatal(err)
			}
			verifyFamilies(t, n, pod, rt, r, fam4, fam6)
			if err := n.del(list, rt); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestBridgeIPv6AddressChange: a bridge still carrying an old IPv6 subnet's
// gateway is refused (code 7) while pods are attached and fixed when none
// are; its link-local address never counts as stale.
func TestBridgeIPv6AddressChange(t *testing.T) {
	nettest.Privileged(t)
	n := newNode(t, "")
	n.writeSubnetEnvFamilies(t, testSubnet4, testSubnet6)
	list := n.conflist(t, "", nil)
	rt1 := rtFor("ctr-old6", nettest.NewNS(t, "cp"))
	addResult(t, n, list, rt1)
	n.writeSubnetEnvFamilies(t, testSubnet4, "fd00:10:244:7::1/64") // a new IPv6 lease, same IPv4 one
	pod2 := nettest.NewNS(t, "cp")
	rt2 := rtFor("ctr-new6", pod2)
	_, err := n.add(list, rt2)
	wantCode(t, err, 7, "bridge cni0 has address fd00:10:244:1::1/64 but the node's subnet needs fd00:10:244:7::1/64")
	if err := n.del(list, rt1); err != nil {
		t.Fatal(err)
	}
	r := addResult(t, n, list, rt2)
	fam6new := podFamily{netip.MustParsePrefix("fd00:10:244:7::1/64"), testNetwork6}
	verifyFamilies(t, n, pod2, rt2, r, fam4, fam6new)
	ping(t, pod2, "fd00:10:244:7::1")
	if err := n.del(list, rt2); err != nil {
		t.Fatal(err)
	}
}
