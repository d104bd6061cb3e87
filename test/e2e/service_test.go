package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/test/lab"
)

// The Service of scenario 3, as kube-proxy (iptables mode) would program it.
const (
	serviceIP   = "10.96.0.10"
	serviceAddr = serviceIP + ":80"
	connections = 60 // per client: P(a backend never chosen) = 3·(2/3)^60 ≈ 1e-10
)

var kubeChains = []string{"KUBE-SERVICES", "KUBE-MARK-MASQ", "KUBE-POSTROUTING", "KUBE-SVC-E2E", "KUBE-SEP-E2E1", "KUBE-SEP-E2E2", "KUBE-SEP-E2E3"}

// kubeProxyRules is an iptables-restore file for the nat table: ClusterIP
// serviceAddr → the backends' :8080 with kube-proxy's random probabilities,
// KUBE-MARK-MASQ (0x4000) for off-cluster clients and hairpin, and
// KUBE-POSTROUTING masquerading marked packets.
func kubeProxyRules(network string, backends []*lab.Pod) string {
	var b strings.Builder
	b.WriteString("*nat\n")
	for _, c := range kubeChains {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	b.WriteString(`-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -j MASQUERADE --random-fully
`)
	fmt.Fprintf(&b, "-A KUBE-SERVICES -d %s/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-E2E\n", serviceIP)
	fmt.Fprintf(&b, "-A KUBE-SVC-E2E ! -s %s -d %s/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ\n", network, serviceIP)
	for i, p := range backends {
		sep := fmt.Sprintf("KUBE-SEP-E2E%d", i+1)
		if left := len(backends) - i; left > 1 {
			fmt.Fprintf(&b, "-A KUBE-SVC-E2E -m statistic --mode random --probability %.11f -j %s\n", 1/float64(left), sep)
		} else {
			fmt.Fprintf(&b, "-A KUBE-SVC-E2E -j %s\n", sep)
		}
		fmt.Fprintf(&b, "-A %s -s %s/32 -j KUBE-MARK-MASQ\n", sep, p.IP)
		fmt.Fprintf(&b, "-A %s -p tcp -m tcp -j DNAT --to-destination %s:%s\n", sep, p.IP, serverPort)
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// checkService is scenario 3: from a pod on each node, 60 connections to the
// ClusterIP reach every backend (backends on three nodes); a backend that
// connects to the Service reaches itself too (hairpin through cni0).
func checkService(t *testing.T, nodes []*lab.Node, pods []*lab.Pod) {
	var backends, clients []*lab.Pod
	for _, n := range nodes {
		var onNode []*lab.Pod
		for _, p := range pods {
			if p.Node == n {
				onNode = append(onNode, p)
			}
		}
		if len(onNode) < 2 {
			t.Fatalf("%s: want 2 pods, have %d", n.Name, len(onNode))
		}
		backends, clients = append(backends, onNode[0]), append(clients, onNode[1])
	}
	installKubeProxy(t, nodes, backends)
	want := map[string]bool{}
	for _, b := range backends {
		want[podID(b)] = true
	}
	for _, c := range clients {
		got := serviceAnswers(t, c, want)
		if len(got) != len(want) {
			t.Errorf("%s → Service: %d connections reached %v, want all of %v", podID(c), connections, got, slices.Sorted(maps.Keys(want)))
		}
	}
	// Hairpin: the backend's own connection DNATed back to itself leaves and
	// re-enters cni0 through the same port.
	self := backends[0]
	if got := serviceAnswers(t, self, want); got[podID(self)] == 0 {
		t.Errorf("hairpin: %s → Service never reached itself in %d connections: %v", podID(self), connections, got)
	}
}

// serviceAnswers connects 60 times from c to the Service and counts the
// answering backends; an answer from anything else fails the test.
func serviceAnswers(t *testing.T, c *lab.Pod, want map[string]bool) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range connections {
		id, _, err := ask(t.Context(), c.NS, serviceAddr)
		if err != nil {
			t.Fatalf("%s → Service %s: %v", podID(c), serviceAddr, err)
		}
		if !want[id] {
			t.Fatalf("%s → Service: answered by %s, not a backend", podID(c), id)
		}
		got[id]++
	}
	t.Logf("%s → Service %s: %v", podID(c), serviceAddr, got)
	return got
}

// installKubeProxy loads the rules on every node (and removes them when the
// test ends). br_netfilter makes bridged frames traverse iptables inside
// the node, which same-node DNAT needs: without it the backend's reply is
// bridged straight to the client pod and never un-DNATed.
func installKubeProxy(t *testing.T, nodes []*lab.Node, backends []*lab.Pod) {
	ctx := t.Context()
	file := filepath.Join(t.TempDir(), "kube-proxy.rules")
	if err := os.WriteFile(file, []byte(kubeProxyRules("10.244.0.0/16", backends)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if err := n.NS.Sysctl(ctx, "net.bridge.bridge-nf-call-iptables", "1"); err != nil {
			if out, merr := n.NS.Exec(ctx, "modprobe", "br_netfilter"); merr != nil {
				t.Fatalf("br_netfilter: %v; modprobe: %v %s", err, merr, out)
			}
			if err := n.NS.Sysctl(ctx, "net.bridge.bridge-nf-call-iptables", "1"); err != nil {
				t.Fatalf("br_netfilter: %v", err)
			}
		}
		if _, err := n.NS.Exec(ctx, "iptables-restore", "--noflush", file); err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		t.Cleanup(func() { removeKubeProxy(t, n) })
	}
}

func removeKubeProxy(t *testing.T, n *lab.Node) {
	ctx := context.Background() // t.Context() is already cancelled in cleanups
	var errs []string
	run := func(args ...string) {
		if _, err := n.NS.Exec(ctx, "iptables", append([]string{"-t", "nat"}, args...)...); err != nil {
			errs = append(errs, err.Error())
		}
	}
	run("-D", "PREROUTING", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES")
	run("-D", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES")
	run("-D", "POSTROUTING", "-m", "comment", "--comment", "kubernetes postrouting rules", "-j", "KUBE-POSTROUTING")
	for _, c := range kubeChains {
		run("-F", c)
	}
	for _, c := range kubeChains {
		run("-X", c)
	}
	if len(errs) > 0 {
		t.Errorf("%s: remove kube-proxy rules: %s", n.Name, strings.Join(errs, "; "))
	}
}
