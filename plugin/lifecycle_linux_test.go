package plugin_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/test/nettest"
)

// TestLifecycleVersions: ADD, CHECK, DEL, DEL again through libcni with the
// manifest conflist and portmap, for each config version weft supports.
func TestLifecycleVersions(t *testing.T) {
	nettest.Privileged(t)
	for _, ver := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(ver, func(t *testing.T) {
			n := newNode(t, "10.244.1.1/24")
			pin := ver
			if ver == "1.1.0" {
				pin = "" // the manifest as is: libcni picks 1.1.0 from cniVersions
			}
			list := n.conflist(t, pin, nil)
			if list.CNIVersion != ver {
				t.Fatalf("libcni negotiated %s, want %s", list.CNIVersion, ver)
			}
			pod := nettest.NewNS(t, "cp")
			rt := rtFor("ctr-"+strings.ReplaceAll(ver, ".", ""), pod)
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
			verifyAttached(t, n, pod, rt, r)
			if ver != "0.3.1" { // CHECK exists from 0.4.0
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

// verifyAttached checks the result and the kernel and disk state of one pod.
func verifyAttached(t *testing.T, n *node, pod *nettest.NS, rt *libcni.RuntimeConf, r *current.Result) {
	t.Helper()
	if len(r.Interfaces) != 3 || r.Interfaces[0].Name != "cni0" || r.Interfaces[2].Name != "eth0" ||
		r.Interfaces[2].Sandbox != pod.Path || r.Interfaces[1].Sandbox != "" {
		t.Fatalf("interfaces = %v", r.Interfaces)
	}
	if len(r.IPs) != 1 || r.IPs[0].Interface == nil || *r.IPs[0].Interface != 2 || r.IPs[0].Gateway.String() != "10.244.1.1" {
		t.Fatalf("ips = %v", r.IPs)
	}
	ip := r.IPs[0].Address
	if ones, _ := ip.Mask.Size(); ones != 24 || !strings.HasPrefix(ip.IP.String(), "10.244.1.") || ip.IP.String() == "10.244.1.1" {
		t.Fatalf("address %s is not a pod address of 10.244.1.0/24", ip.String())
	}
	var routes []string
	for _, rt := range r.Routes {
		routes = append(routes, rt.Dst.String()+" via "+rt.GW.String())
	}
	if got := strings.Join(routes, ", "); got != "10.244.0.0/16 via 10.244.1.1, 0.0.0.0/0 via 10.244.1.1" {
		t.Fatalf("routes = %s", got)
	}
	verifyKernel(t, n, pod, r)
	// Disk: host-local's file for the address.
	b, err := os.ReadFile(filepath.Join(n.dataDir, "cbr0", ip.IP.String()))
	if err != nil || string(b) != rt.ContainerID+"\r\neth0" {
		t.Fatalf("reservation file: %q %v", b, err)
	}
}

// verifyKernel checks both ends of the pod's veth against the result.
func verifyKernel(t *testing.T, n *node, pod *nettest.NS, r *current.Result) {
	t.Helper()
	ip := r.IPs[0].Address
	// Pod side: address, MTU, MAC, routes, DAD off.
	ph := nettest.Handle(t, pod.NetNS)
	eth0, err := ph.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if eth0.Attrs().MTU != testMTU || eth0.Attrs().HardwareAddr.String() != r.Interfaces[2].Mac {
		t.Fatalf("eth0 mtu %d mac %s, want %d %s", eth0.Attrs().MTU, eth0.Attrs().HardwareAddr, testMTU, r.Interfaces[2].Mac)
	}
	addrs, _ := ph.AddrList(eth0, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != ip.String() {
		t.Fatalf("eth0 addresses %v, want %s", addrs, ip.String())
	}
	kr, _ := ph.RouteList(eth0, netlink.FAMILY_V4)
	if len(kr) != 3 { // connected /24, the Network, default
		t.Fatalf("pod routes %v, want 3", kr)
	}
	var dad []byte
	_ = pod.Do(func(ns.NetNS) error {
		dad, err = os.ReadFile("/proc/sys/net/ipv6/conf/eth0/accept_dad")
		return nil
	})
	if err == nil && strings.TrimSpace(string(dad)) != "0" {
		t.Fatalf("accept_dad on eth0 = %q, want 0", dad)
	}
	// Node side: veth on cni0, hairpin, peer of eth0; cni0 has the gateway.
	host, err := n.h.LinkByName(r.Interfaces[1].Name)
	if err != nil {
		t.Fatal(err)
	}
	br, err := n.h.LinkByName("cni0")
	if err != nil {
		t.Fatal(err)
	}
	if host.Attrs().MasterIndex != br.Attrs().Index || eth0.Attrs().ParentIndex != host.Attrs().Index {
		t.Fatalf("veth %s not on cni0 or not eth0's peer", host.Attrs().Name)
	}
	if pi, err := n.h.LinkGetProtinfo(host); err != nil || !pi.Hairpin {
		t.Fatalf("hairpin on %s: %v %v", host.Attrs().Name, pi, err)
	}
	braddrs, _ := n.h.AddrList(br, netlink.FAMILY_V4)
	if len(braddrs) != 1 || braddrs[0].IPNet.String() != "10.244.1.1/24" || br.Attrs().MTU != testMTU {
		t.Fatalf("cni0: addresses %v mtu %d", braddrs, br.Attrs().MTU)
	}
}

func verifyDetached(t *testing.T, n *node, pod *nettest.NS) {
	t.Helper()
	if f := n.ipFiles(t); len(f) != 0 {
		t.Fatalf("reservations left: %v", f)
	}
	if v := n.veths(t); len(v) != 0 {
		t.Fatalf("veths left on the node: %v", v)
	}
	if pod != nil {
		if _, err := nettest.Handle(t, pod.NetNS).LinkByName("eth0"); err == nil {
			t.Fatal("eth0 left in the pod")
		}
	}
}

// TestDelWithoutNetns: DEL with an empty CNI_NETNS, and with a netns that is
// already gone, still releases the address and removes the veth.
func TestDelWithoutNetns(t *testing.T) {
	nettest.Privileged(t)
	n := newNode(t, "10.244.1.1/24")
	list := n.conflist(t, "", nil)

	pod := nettest.NewNS(t, "cp")
	rt := rtFor("ctr-empty", pod)
	if _, err := n.add(list, rt); err != nil {
		t.Fatal(err)
	}
	if err := n.del(list, &libcni.RuntimeConf{ContainerID: rt.ContainerID, IfName: "eth0"}); err != nil {
		t.Fatalf("DEL with empty netns: %v", err)
	}
	verifyDetached(t, n, pod)

	// A netns removed before DEL: the kernel drops its veth pair, the
	// reservation stays until DEL.
	name := "cp-gone-" + fmt.Sprint(os.Getpid())
	if out, err := exec("ip", "netns", "add", name); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	gone := &libcni.RuntimeConf{ContainerID: "ctr-gone", IfName: "eth0", NetNS: "/run/netns/" + name}
	_, err := n.add(list, gone)
	if out, derr := exec("ip", "netns", "del", name); derr != nil {
		t.Fatalf("%v: %s", derr, out)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(n.ipFiles(t)) != 1 {
		t.Fatal("no reservation after ADD")
	}
	for i := range 2 {
		if err := n.del(list, gone); err != nil {
			t.Fatalf("DEL #%d with a gone netns: %v", i+1, err)
		}
	}
	verifyDetached(t, n, nil)
}

// TestDelWithoutSubnetEnv: DEL never needs subnet.env.
func TestDelWithoutSubnetEnv(t *testing.T) {
	nettest.Privileged(t)
	n := newNode(t, "10.244.1.1/24")
	list := n.conflist(t, "", nil)
	pod := nettest.NewNS(t, "cp")
	rt := rtFor("ctr-nosubnet", pod)
	if _, err := n.add(list, rt); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(n.subnetFile); err != nil {
		t.Fatal(err)
	}
	if err := n.del(list, rt); err != nil {
		t.Fatalf("DEL without subnet.env: %v", err)
	}
	verifyDetached(t, n, pod)
}

// TestCheckFindsDamage: CHECK names the first thing that differs.
func TestCheckFindsDamage(t *testing.T) {
	nettest.Privileged(t)
	n := newNode(t, "10.244.1.1/24")
	list := n.conflist(t, "", nil)
	tests := []struct {
		name   string
		damage func(t *testing.T, pod *nettest.NS, r *current.Result)
		msg    string
	}{
		{"route deleted", func(t *testing.T, pod *nettest.NS, r *current.Result) {
			out, err := pod.Exec(t, "ip", "route", "del", "default")
			if err != nil {
				t.Fatalf("%v %s", err, out)
			}
		}, "route 0.0.0.0/0 via 10.244.1.1 missing"},
		{"address deleted", func(t *testing.T, pod *nettest.NS, r *current.Result) {
			out, err := pod.Exec(t, "ip", "addr", "flush", "dev", "eth0")
			if err != nil {
				t.Fatalf("%v %s", err, out)
			}
		}, "lacks address"},
		{"reservation deleted", func(t *testing.T, pod *nettest.NS, r *current.Result) {
			if err := os.Remove(filepath.Join(n.dataDir, "cbr0", r.IPs[0].Address.IP.String())); err != nil {
				t.Fatal(err)
			}
		}, "is not reserved"},
		{"hairpin off", func(t *testing.T, pod *nettest.NS, r *current.Result) {
			l, err := n.h.LinkByName(r.Interfaces[1].Name)
			if err == nil {
				err = n.h.LinkSetHairpin(l, false)
			}
			if err != nil {
				t.Fatal(err)
			}
		}, "hairpin mode is off"},
		{"detached from bridge", func(t *testing.T, pod *nettest.NS, r *current.Result) {
			l, err := n.h.LinkByName(r.Interfaces[1].Name)
			if err == nil {
				err = n.h.LinkSetNoMaster(l)
			}
			if err != nil {
				t.Fatal(err)
			}
		}, "is not attached to bridge cni0"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := nettest.NewNS(t, "cp")
			rt := rtFor(fmt.Sprintf("ctr-damage-%d", i), pod)
			res, err := n.add(list, rt)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = n.del(list, rt) })
			if err := n.check(list, rt); err != nil {
				t.Fatalf("CHECK before damage: %v", err)
			}
			r, _ := current.NewResultFromResult(res)
			tt.damage(t, pod, r)
			wantCode(t, n.check(list, rt), 103, tt.msg)
		})
	}
}

// TestGC: GC through libcni (1.1.0) removes what the valid attachments do not cover.
func TestGC(t *testing.T) {
	nettest.Privileged(t)
	n := newNode(t, "10.244.1.1/24")
	list := n.conflist(t, "", nil)

	// Two pods the runtime knows, one it lost (added through another cache
	// dir, so libcni's own GC pass does not DEL it), one whose reservation
	// is gone but whose veth is left (GC finds it by the veth's alias), one
	// file left by a crashed host-local era.
	a, b, lost, orphan := nettest.NewNS(t, "cp"), nettest.NewNS(t, "cp"), nettest.NewNS(t, "cp"), nettest.NewNS(t, "cp")
	rtA, rtB, rtLost, rtOrphan := rtFor("ctr-a", a), rtFor("ctr-b", b), rtFor("ctr-lost", lost), rtFor("ctr-orphan", orphan)
	for _, rt := range []*libcni.RuntimeConf{rtA, rtB} {
		if _, err := n.add(list, rt); err != nil {
			t.Fatal(err)
		}
	}
	other := &node{ns: n.ns, h: n.h, subnetFile: n.subnetFile, dataDir: n.dataDir,
		cni: libcni.NewCNIConfigWithCacheDir([]string{cniPath(t)}, t.TempDir(), nil)}
	for _, rt := range []*libcni.RuntimeConf{rtLost, rtOrphan} {
		if _, err := other.add(list, rt); err != nil {
			t.Fatal(err)
		}
	}
	links, err := n.h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(links, func(l netlink.Link) bool { return l.Attrs().Alias == "weft@cbr0:ctr-orphan/eth0" }) {
		t.Fatal("no node-side veth with the alias weft@cbr0:ctr-orphan/eth0")
	}
	for _, f := range n.ipFiles(t) {
		name := filepath.Join(n.dataDir, "cbr0", f)
		if c, _ := os.ReadFile(name); strings.HasPrefix(string(c), "ctr-orphan\r\n") {
			if err := os.Remove(name); err != nil {
				t.Fatal(err)
			}
		}
	}
	stale := filepath.Join(n.dataDir, "cbr0", "10.244.1.200")
	if err := os.WriteFile(stale, []byte("ctr-crashed\r\neth0"), 0o600); err != nil {
		t.Fatal(err)
	}
	if len(n.ipFiles(t)) != 4 || len(n.veths(t)) != 4 {
		t.Fatalf("before GC: files %v veths %v", n.ipFiles(t), n.veths(t))
	}
	valid := []types.GCAttachment{{ContainerID: "ctr-a", IfName: "eth0"}, {ContainerID: "ctr-b", IfName: "eth0"}}
	if err := n.in(func() error {
		return n.cni.GCNetworkList(context.Background(), list, &libcni.GCArgs{ValidAttachments: valid})
	}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	files := n.ipFiles(t)
	if len(files) != 2 || len(n.veths(t)) != 2 {
		t.Fatalf("after GC: files %v veths %v, want ctr-a's and ctr-b's only", files, n.veths(t))
	}
	for _, f := range files {
		c, _ := os.ReadFile(filepath.Join(n.dataDir, "cbr0", f))
		if id := strings.SplitN(string(c), "\r\n", 2)[0]; id != "ctr-a" && id != "ctr-b" {
			t.Fatalf("GC kept %s of %s", f, id)
		}
	}
	if _, err := nettest.Handle(t, lost.NetNS).LinkByName("eth0"); err == nil {
		t.Fatal("GC left the lost pod's interface")
	}
	if _, err := nettest.Handle(t, orphan.NetNS).LinkByName("eth0"); err == nil {
		t.Fatal("GC left the interface of the pod without a reservation")
	}
	for _, rt := range []*libcni.RuntimeConf{rtA, rtB} {
		if err := n.check(list, rt); err != nil {
			t.Fatalf("CHECK after GC: %v", err)
		}
	}
}

// TestStatus: STATUS through libcni (1.1.0): ready, then 50 without
// subnet.env and with an unwritable IPAM directory.
func TestStatus(t *testing.T) {
	nettest.Privileged(t)
	n := newNode(t, "10.244.1.1/24")
	list := n.conflist(t, "", nil)
	status := func() error {
		return n.in(func() error { return n.cni.GetStatusNetworkList(context.Background(), list) })
	}
	if err := status(); err != nil {
		t.Fatalf("STATUS ready: %v", err)
	}
	if err := os.Rename(n.subnetFile, n.subnetFile+".off"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, status(), 50, "is weftd running?")
	if err := os.Rename(n.subnetFile+".off", n.subnetFile); err != nil {
		t.Fatal(err)
	}
	blocked := n.conflist(t, "", func(w map[string]any) { w["dataDir"] = n.subnetFile }) // a file, not a dir
	wantCode(t, n.in(func() error { return n.cni.GetStatusNetworkList(context.Background(), blocked) }), 50, "not writable")
	if err := status(); err != nil {
		t.Fatalf("STATUS ready again: %v", err)
	}
}

// TestVersion: the binary answers VERSION with the supported list.
func TestVersion(t *testing.T) {
	info, err := libcni.NewCNIConfig([]string{cniPath(t)}, nil).GetVersionInfo(context.Background(), "weft")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(info.SupportedVersions(), ","); got != "0.3.0,0.3.1,0.4.0,1.0.0,1.1.0" {
		t.Fatalf("supported versions %s", got)
	}
}
