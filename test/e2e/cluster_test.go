package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// TestCluster runs scenarios 1, 8, 3 and 2 on one proactive lab with
// --ip-masq: 3 nodes × 2 pods.
func TestCluster(t *testing.T) {
	l := newLab(t, lab.Options{Nodes: 3, IPMasq: true})
	nodes := l.Nodes()
	pods := addPods(t, l, nodes, 2)

	t.Run("1-connectivity", func(t *testing.T) {
		checkConnectivity(t, l, nodes, pods)
	})
	t.Run("8-malformed-lease", func(t *testing.T) {
		writeMalformedLeases(t, l)
		// The running agents saw the bad keys through their watch; a restarted
		// agent meets them in its initial list.
		if err := nodes[0].RestartAgent(t.Context()); err != nil {
			t.Fatalf("restart: %v", err)
		}
		agentsHealthy(t, nodes)
		checkConnectivity(t, l, nodes, pods)
		agentsHealthy(t, nodes)
	})
	t.Run("3-service", func(t *testing.T) {
		checkService(t, nodes, pods)
	})
	t.Run("2-outside", func(t *testing.T) {
		checkOutside(t, l, pods)
	})
}

// writeMalformedLeases is scenario 8: keys and values under subnets/ that
// do not decode. Agents must skip them with a warning, never fail.
func writeMalformedLeases(t *testing.T, l *lab.Lab) {
	t.Helper()
	dir := l.Prefix() + "/subnets/"
	bad := map[string]string{
		dir + "10.244.250.0-24": `{"PublicIP":"198.18.0.99","BackendType":"vxl`, // truncated JSON
		dir + "10.244.251.0-24": `{"PublicIP":"198.18.0.98","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"not-a-mac"}}`,
		dir + "10.244.252.0-24": `{"PublicIP":"not-an-ip","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:01"}}`,
		dir + "not-a-subnet":    `{"PublicIP":"198.18.0.97","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:02"}}`,
		dir + "10.244.253.7-24": `{"PublicIP":"198.18.0.96","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:03"}}`, // unmasked
		dir + "10.244.254.0-24": ``,
	}
	for k, v := range bad {
		if _, err := l.Etcd().Put(t.Context(), k, v); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
	}
}

// checkOutside is scenario 2: a pod's packets to a host outside the pod
// network leave with the node's IP when --ip-masq is on, and with the pod's
// IP on a node whose agent runs without it. The outside host has no route to
// the pods, so it only listens (UDP) and reports the source.
func checkOutside(t *testing.T, l *lab.Lab, pods []*lab.Pod) {
	ctx := t.Context()
	ln, err := l.Outside().ListenPacket("udp4", net.JoinHostPort(lab.OutsideIP.String(), "9999"))
	if err != nil {
		t.Fatalf("outside listener: %v", err)
	}
	defer ln.Close()
	for _, p := range pods {
		src, err := sourceSeenOutside(ctx, ln, p)
		if err != nil {
			t.Errorf("%s → outside: %v", podID(p), err)
		} else if src != p.Node.IP {
			t.Errorf("%s → outside with --ip-masq: outside saw %s, want the node's IP %s", podID(p), src, p.Node.IP)
		}
	}
	o := l.NodeDefaults()
	o.IPMasq = false
	n, err := l.AddNode(ctx, o)
	if err != nil {
		t.Fatalf("add node without --ip-masq: %v", err)
	}
	p, err := l.AddPod(ctx, n, "pod1")
	if err != nil {
		t.Fatalf("add pod: %v", err)
	}
	src, err := sourceSeenOutside(ctx, ln, p)
	if err != nil {
		t.Fatalf("%s → outside: %v", podID(p), err)
	}
	if src != p.IP {
		t.Errorf("%s → outside with --ip-masq=false: outside saw %s, want the pod IP %s", podID(p), src, p.IP)
	}
}

// sourceSeenOutside sends a datagram naming p from p to the outside host
// (up to 3 tries) and returns the source address the outside host saw.
func sourceSeenOutside(ctx context.Context, ln net.PacketConn, p *lab.Pod) (netip.Addr, error) {
	c, err := p.NS.DialContext(ctx, "udp", ln.LocalAddr().String())
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	token := fmt.Sprintf("%s@%d", podID(p), time.Now().UnixNano())
	buf := make([]byte, 512)
	for range 3 {
		if _, err := c.Write([]byte(token)); err != nil {
			return netip.Addr{}, fmt.Errorf("send: %w", err)
		}
		_ = ln.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, from, err := ln.ReadFrom(buf)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break // send again
			}
			if err != nil {
				return netip.Addr{}, fmt.Errorf("outside read: %w", err)
			}
			if strings.TrimSpace(string(buf[:n])) == token {
				return from.(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
			}
		}
	}
	return netip.Addr{}, errors.New("no datagram reached the outside host in 3 tries")
}
