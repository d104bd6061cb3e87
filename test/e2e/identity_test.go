package e2e

import (
	"os"
	"strings"
	"testing"

	"github.com/weftnet/weft/test/lab"
)

// TestSharedHostname: node namespaces share the host's UTS namespace, so
// three agents without --node-name have one hostname, as cloned VMs or
// several agents on one host do. The public IP is their identity: three
// distinct subnets, pods reach each other, and a restart keeps the subnet.
func TestSharedHostname(t *testing.T) {
	l := newLab(t, lab.Options{})
	opts := l.NodeDefaults()
	opts.NoNodeName = true
	var nodes []*lab.Node
	for range 3 {
		n, err := l.AddNode(t.Context(), opts)
		if err != nil {
			t.Fatalf("add node: %v", err)
		}
		nodes = append(nodes, n)
	}
	seen := map[string]string{}
	for _, n := range nodes {
		s, err := n.Subnet()
		if err != nil {
			t.Fatal(err)
		}
		if other, dup := seen[s.Masked().String()]; dup {
			t.Fatalf("%s and %s share subnet %s", other, n.Name, s.Masked())
		}
		seen[s.Masked().String()] = n.Name
		lk, err := n.Lease(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(lk.Value, "NodeName") {
			t.Errorf("%s: lease without --node-name carries a name: %s", n.Name, lk.Value)
		}
	}
	agentsHealthy(t, nodes)
	pods := addPods(t, l, nodes, 1)
	checkConnectivity(t, l, nodes, pods)

	before, _ := nodes[1].Subnet()
	if err := nodes[1].RestartAgent(t.Context()); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if after, _ := nodes[1].Subnet(); after != before {
		t.Errorf("subnet after restart %s, want %s", after, before)
	}
	agentsHealthy(t, nodes)
}

// TestAgentLogLines: what an operator reads at start and stop. The VXLAN
// port is logged as the port in use (a config's Port 0 means 8472, not 0),
// and SIGTERM leaves a line saying the agent stopped and what it left.
func TestAgentLogLines(t *testing.T) {
	l := newLab(t, lab.Options{Nodes: 1})
	n := l.Nodes()[0]
	if err := n.StopAgent(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(n.LogFile())
	if err != nil {
		t.Fatal(err)
	}
	log := string(b)
	for _, want := range []string{`msg="network config"`, "port=8472", `msg="weftd stopped`} {
		if !strings.Contains(log, want) {
			t.Errorf("agent log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "port=0") {
		t.Errorf("agent log says port=0 for the default port:\n%s", log)
	}
}
