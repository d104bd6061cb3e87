package masq

import (
	"bytes"
	"crypto/rand"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/test/nettest"
	"github.com/weftnet/weft/test/testlog"
)

// Topology of TestMasqueradeTraffic (all in namespaces made by the test):
//
//	pod  10.244.1.2/24 ─── p1 10.244.1.1/24 ┐
//	                                        node ── up 198.18.0.1/24 ─── 198.18.0.2/24 outside
//	pod2 10.244.2.2/24 ─── p2 10.244.2.1/24 ┘       (ip_forward=1, weft's table)     (no route to 10.244/16)
//
// The node's lease subnet is 10.244.1.0/24; pod2 stands in for a pod on another node.
type topo struct {
	pod, pod2, node, outside *nettest.NS
}

func newTopo(t *testing.T) *topo {
	tp := &topo{
		pod:     nettest.NewNS(t, "masq-pod"),
		pod2:    nettest.NewNS(t, "masq-pod2"),
		node:    nettest.NewNS(t, "masq-node"),
		outside: nettest.NewNS(t, "masq-out"),
	}
	nettest.Veth(t, tp.pod, "eth0", "10.244.1.2/24", tp.node, "p1", "10.244.1.1/24")
	nettest.Veth(t, tp.pod2, "eth0", "10.244.2.2/24", tp.node, "p2", "10.244.2.1/24")
	nettest.Veth(t, tp.node, "up", "198.18.0.1/24", tp.outside, "eth0", "198.18.0.2/24")
	defaultRoute(t, tp.pod, "10.244.1.1")
	defaultRoute(t, tp.pod2, "10.244.2.1")
	// The sysctl is per netns: /proc/sys/net resolves against the writing thread's netns.
	err := tp.node.Do(func(ns.NetNS) error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	})
	if err != nil {
		t.Fatalf("enable ip_forward in %s: %v", tp.node.Name, err)
	}
	return tp
}

func defaultRoute(t *testing.T, n *nettest.NS, gw string) {
	t.Helper()
	h := nettest.Handle(t, n.NetNS)
	if err := h.RouteAdd(&netlink.Route{Gw: net.ParseIP(gw)}); err != nil {
		t.Fatalf("default route via %s in %s: %v", gw, n.Name, err)
	}
}

// listenUDP opens a UDP socket on addr inside n; it stays in n after Do returns.
func listenUDP(t *testing.T, n *nettest.NS, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := n.Do(func(ns.NetNS) error {
		var err error
		ap := netip.MustParseAddrPort(addr)
		c, err = net.ListenUDP(udpNet(ap.Addr()), net.UDPAddrFromAddrPort(ap))
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, n.Name, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// sourceSeen sends one datagram from n (bound to from, "" = kernel's choice, with
// SO_MARK mark when non-zero) to the listener l at to, and returns the source
// address l received it from. A fresh socket per call means a fresh conntrack entry.
func sourceSeen(t *testing.T, n *nettest.NS, from, to string, mark int, l *net.UDPConn) netip.Addr {
	t.Helper()
	msg := make([]byte, 16)
	_, _ = rand.Read(msg)
	err := n.Do(func(ns.NetNS) error {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if mark != 0 {
				err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, mark) })
				if err != nil {
					return err
				}
			}
			return serr
		}}
		if from != "" {
			d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(from)}
		}
		c, err := d.Dial(udpNet(netip.MustParseAddrPort(to).Addr()), to)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(msg)
		return err
	})
	if err != nil {
		t.Fatalf("send from %s to %s: %v", n.Name, to, err)
	}
	buf := make([]byte, 64)
	_ = l.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		k, src, err := l.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("datagram from %s to %s never arrived: %v", n.Name, to, err)
		}
		if bytes.Equal(buf[:k], msg) {
			return src.Addr().Unmap()
		}
	}
}

// udpNet is the network name for a socket to or from a.
func udpNet(a netip.Addr) string {
	if a.Is4() {
		return "udp4"
	}
	return "udp6"
}

// wantSource asserts the source address a receiver saw.
func wantSource(t *testing.T, what string, got netip.Addr, want string) {
	t.Helper()
	if got != netip.MustParseAddr(want) {
		t.Errorf("%s: receiver saw source %v, want %s", what, got, want)
	}
}

// ping reports whether one echo from n to dst gets a reply.
func ping(t *testing.T, n *nettest.NS, dst string) bool {
	t.Helper()
	_, err := n.Exec(t, "ping", "-c1", "-W1", "-n", dst)
	return err == nil
}

func TestMasqueradeTraffic(t *testing.T) {
	nettest.Privileged(t)
	tp := newTopo(t)
	nsh := openHost(t, tp.node)
	outside := listenUDP(t, tp.outside, "198.18.0.2:9000")
	outsideVXLAN := listenUDP(t, tp.outside, "198.18.0.2:8472")
	pod := listenUDP(t, tp.pod, "10.244.1.2:9000")
	pod2 := listenUDP(t, tp.pod2, "10.244.2.2:9000")

	// Without rules the outside sees pod addresses it cannot answer.
	wantSource(t, "no rules: pod → outside", sourceSeen(t, tp.pod, "", "198.18.0.2:9000", 0, outside), "10.244.1.2")
	if ping(t, tp.pod, "198.18.0.2") {
		t.Fatal("pod pings the outside without masquerade rules: the test topology leaks a route back")
	}

	if err := Ensure(nsh, podRules, testlog.New(t, slog.LevelDebug)); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if !ping(t, tp.pod, "198.18.0.2") {
		t.Error("pod cannot ping the outside with masquerade rules")
	}
	// Rule 4: pod → outside is masqueraded to the node's underlay address.
	wantSource(t, "pod → outside", sourceSeen(t, tp.pod, "", "198.18.0.2:9000", 0, outside), "198.18.0.1")
	// Rule 2: UDP to the VXLAN port is never NATed, even from a pod address.
	wantSource(t, "pod → outside:8472", sourceSeen(t, tp.pod, "", "198.18.0.2:8472", 0, outsideVXLAN), "10.244.1.2")
	// Rule 3: pod → pod keeps the pod's address.
	wantSource(t, "pod → pod2", sourceSeen(t, tp.pod, "", "10.244.2.2:9000", 0, pod2), "10.244.1.2")
	// Rule 5: outside → a pod of this node's subnet keeps its source.
	wantSource(t, "node underlay → local pod", sourceSeen(t, tp.node, "198.18.0.1", "10.244.1.2:9000", 0, pod), "198.18.0.1")
	// Rule 6: outside → a pod elsewhere in the Network is masqueraded.
	wantSource(t, "node underlay → remote pod", sourceSeen(t, tp.node, "198.18.0.1", "10.244.2.2:9000", 0, pod2), "10.244.2.1")
	// Rule 1: kube-proxy's mark exempts the packet from rule 6.
	wantSource(t, "marked node underlay → remote pod", sourceSeen(t, tp.node, "198.18.0.1", "10.244.2.2:9000", 0x4000, pod2), "198.18.0.1")

	if err := Delete(nsh); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if ping(t, tp.pod, "198.18.0.2") {
		t.Error("pod still pings the outside after Delete")
	}
	wantSource(t, "deleted: pod → outside", sourceSeen(t, tp.pod, "", "198.18.0.2:9000", 0, outside), "10.244.1.2")
}

// Topology of TestMasqueradeTraffic6: newTopo's, with IPv6 on every link too
// (dual stack):
//
//	pod  fd00:10:0:1::2/64 ─── p1 fd00:10:0:1::1/64 ┐
//	                                                node ── up fd00:198::1/64 ─── fd00:198::2/64 outside
//	pod2 fd00:10:0:2::2/64 ─── p2 fd00:10:0:2::1/64 ┘       (IPv6 forwarding on)   (no route to fd00:10::/48)
func newTopo6(t *testing.T) *topo {
	tp := newTopo(t)
	for _, a := range []struct {
		n         *nettest.NS
		dev, cidr string
	}{
		{tp.pod, "eth0", "fd00:10:0:1::2/64"}, {tp.node, "p1", "fd00:10:0:1::1/64"},
		{tp.pod2, "eth0", "fd00:10:0:2::2/64"}, {tp.node, "p2", "fd00:10:0:2::1/64"},
		{tp.node, "up", "fd00:198::1/64"}, {tp.outside, "eth0", "fd00:198::2/64"},
	} {
		// nodad: a tentative address cannot be bound or used as a source.
		if out, err := a.n.Exec(t, "ip", "-6", "addr", "add", a.cidr, "dev", a.dev, "nodad"); err != nil {
			t.Fatalf("add %s to %s in %s: %v: %s", a.cidr, a.dev, a.n.Name, err, out)
		}
	}
	defaultRoute(t, tp.pod, "fd00:10:0:1::1")
	defaultRoute(t, tp.pod2, "fd00:10:0:2::1")
	err := tp.node.Do(func(ns.NetNS) error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0o644)
	})
	if err != nil {
		t.Fatalf("enable IPv6 forwarding in %s: %v", tp.node.Name, err)
	}
	// The link-local addresses are tentative for a second or two after the links came
	// up, and until then neighbour discovery between the namespaces does not complete.
	for _, n := range []*nettest.NS{tp.pod, tp.pod2, tp.node, tp.outside} {
		waitNoTentative(t, n)
	}
	return tp
}

// waitNoTentative waits until no IPv6 address in n is tentative.
func waitNoTentative(t *testing.T, n *nettest.NS) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := n.Exec(t, "ip", "-6", "addr", "show", "tentative")
		if err != nil {
			t.Fatalf("ip -6 addr show tentative in %s: %v: %s", n.Name, err, out)
		}
		if strings.TrimSpace(out) == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("addresses in %s still tentative:\n%s", n.Name, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var podRules6 = Rules{
	IPv6Network: netip.MustParsePrefix("fd00:10::/48"),
	IPv6Subnet:  netip.MustParsePrefix("fd00:10:0:1::/64"),
}

var dualRules = Rules{
	Network: podRules.Network, Subnet: podRules.Subnet,
	IPv6Network: podRules6.IPv6Network, IPv6Subnet: podRules6.IPv6Subnet,
}

// TestMasqueradeTraffic6: the same masquerade semantics for IPv6 as for IPv4, in a
// dual-stack Ensure; moving to IPv4-only stops masquerading IPv6 (its table goes)
// and keeps IPv4's.
func TestMasqueradeTraffic6(t *testing.T) {
	nettest.Privileged(t)
	tp := newTopo6(t)
	nsh := openHost(t, tp.node)
	outside := listenUDP(t, tp.outside, "[fd00:198::2]:9000")
	outsideVXLAN := listenUDP(t, tp.outside, "[fd00:198::2]:8472")
	outside4 := listenUDP(t, tp.outside, "198.18.0.2:9000")
	pod := listenUDP(t, tp.pod, "[fd00:10:0:1::2]:9000")
	pod2 := listenUDP(t, tp.pod2, "[fd00:10:0:2::2]:9000")

	wantSource(t, "no rules: pod → outside", sourceSeen(t, tp.pod, "", "[fd00:198::2]:9000", 0, outside), "fd00:10:0:1::2")
	if ping(t, tp.pod, "fd00:198::2") {
		t.Fatal("pod pings the outside over IPv6 without masquerade rules: the test topology leaks a route back")
	}

	if err := Ensure(nsh, dualRules, testlog.New(t, slog.LevelDebug)); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if !ping(t, tp.pod, "fd00:198::2") {
		t.Error("pod cannot ping the outside over IPv6 with masquerade rules")
	}
	wantSource(t, "pod → outside", sourceSeen(t, tp.pod, "", "[fd00:198::2]:9000", 0, outside), "fd00:198::1")
	wantSource(t, "pod → outside:8472", sourceSeen(t, tp.pod, "", "[fd00:198::2]:8472", 0, outsideVXLAN), "fd00:10:0:1::2")
	wantSource(t, "pod → pod2", sourceSeen(t, tp.pod, "", "[fd00:10:0:2::2]:9000", 0, pod2), "fd00:10:0:1::2")
	wantSource(t, "node underlay → local pod", sourceSeen(t, tp.node, "fd00:198::1", "[fd00:10:0:1::2]:9000", 0, pod), "fd00:198::1")
	wantSource(t, "node underlay → remote pod", sourceSeen(t, tp.node, "fd00:198::1", "[fd00:10:0:2::2]:9000", 0, pod2), "fd00:10:0:2::1")
	wantSource(t, "marked node underlay → remote pod", sourceSeen(t, tp.node, "fd00:198::1", "[fd00:10:0:2::2]:9000", 0x4000, pod2), "fd00:198::1")
	// IPv4 is masqueraded alongside.
	wantSource(t, "IPv4 pod → outside", sourceSeen(t, tp.pod, "", "198.18.0.2:9000", 0, outside4), "198.18.0.1")

	// Dual stack → IPv4-only: the IPv6 table goes, IPv4 stays.
	if err := Ensure(nsh, podRules, testlog.New(t, slog.LevelDebug)); err != nil {
		t.Fatalf("Ensure IPv4-only: %v", err)
	}
	wantSource(t, "IPv4-only: pod → outside", sourceSeen(t, tp.pod, "", "[fd00:198::2]:9000", 0, outside), "fd00:10:0:1::2")
	wantSource(t, "IPv4-only: IPv4 pod → outside", sourceSeen(t, tp.pod, "", "198.18.0.2:9000", 0, outside4), "198.18.0.1")
}
