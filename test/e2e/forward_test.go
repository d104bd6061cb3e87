package e2e

import (
	"strings"
	"testing"

	"github.com/weftnet/weft/test/lab"
)

// TestForwardPolicyDrop: Docker (and many hardening guides) set the iptables
// FORWARD policy to DROP. Pod traffic between nodes is forwarded
// (cni0 ↔ flannel.1), so without weft's accept rules (flannel's
// --iptables-forward-rules) every cross-node packet is dropped.
func TestForwardPolicyDrop(t *testing.T) {
	l := newLab(t, lab.Options{})
	opts := l.NodeDefaults()
	opts.NoStart = true
	var nodes []*lab.Node
	for range 2 {
		n, err := l.AddNode(t.Context(), opts)
		if err != nil {
			t.Fatalf("add node: %v", err)
		}
		// iptables here is iptables-nft: this makes table ip filter, chain
		// FORWARD, policy drop, as Docker does.
		if out, err := l.Exec(t.Context(), n.NS, "iptables", "-P", "FORWARD", "DROP"); err != nil {
			t.Fatalf("%s: iptables -P FORWARD DROP: %v\n%s", n.Name, err, out)
		}
		if err := n.StartAgent(t.Context()); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	pods := addPods(t, l, nodes, 1)
	checkConnectivity(t, l, nodes, pods)
	// iptables still reads the chain it owns, policy unchanged, our rules in it.
	out, err := l.Exec(t.Context(), nodes[0].NS, "iptables", "-S", "FORWARD")
	if err != nil || !strings.Contains(out, "-P FORWARD DROP") || !strings.Contains(out, "10.244.0.0/16") {
		t.Errorf("iptables -S FORWARD: %v\n%s", err, out)
	}
	if strings.Contains(strings.ToLower(out), "warning") || strings.Contains(out, "incompatible") {
		t.Errorf("iptables cannot read the chain any more:\n%s", out)
	}
	agentsHealthy(t, nodes)
}
