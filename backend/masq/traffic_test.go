package masq

import (
	"bytes"
	"crypto/rand"
	"log/slog"
	"net"
	"net/netip"
	"os"
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
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
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
		c, err := d.Dial("udp4", to)
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
