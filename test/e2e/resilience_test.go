package e2e

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// pingInterval is the continuous ping's rate in scenarios 4 and 5 (50/s).
const pingInterval = 20 * time.Millisecond

// TestResilience runs scenarios 4, 6 and 5 on one proactive lab: 3 nodes,
// one pod each.
func TestResilience(t *testing.T) {
	l := newLab(t, lab.Options{Nodes: 3, IPMasq: true})
	nodes := l.Nodes()
	pods := addPods(t, l, nodes, 1)

	t.Run("4-agent-restart", func(t *testing.T) {
		checkAgentRestart(t, nodes[1], pods[0], pods[1])
	})
	// 6 before 5, so that a node leaving is checked on a lab that has not
	// been through an etcd outage; 5 then runs on nodes 1 and 2.
	t.Run("6-node-leaves", func(t *testing.T) {
		checkLeave(t, l, nodes[2])
	})
	t.Run("5-etcd-outage-then-join", func(t *testing.T) {
		checkEtcdOutage(t, l, pods[0], pods[1])
		checkJoin(t, l, pods[:2])
	})
}

// checkAgentRestart is scenario 4: node's agent restarts while from pings to
// (a pod on node): no echo is lost and node keeps its subnet and lease key.
func checkAgentRestart(t *testing.T, node *lab.Node, from, to *lab.Pod) {
	ctx := t.Context()
	before, err := node.Subnet()
	if err != nil {
		t.Fatal(err)
	}
	keyBefore, err := node.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p, err := lab.StartPing(ctx, from.NS, to.IP, 0, pingInterval)
	if err != nil {
		t.Fatal(err)
	}
	r, err := pingAcross(p, func() error { return node.RestartAgent(ctx) })
	if err != nil {
		t.Fatalf("restart %s: %v", node.Name, err)
	}
	if r.Loss() > 0 {
		t.Errorf("ping %s → %s across the restart of %s: %v, want no loss", podID(from), podID(to), node.Name, r)
	}
	t.Logf("ping across the restart: %v", r)
	after, err := node.Subnet()
	if err != nil {
		t.Fatal(err)
	}
	keyAfter, err := node.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after != before || keyAfter.Key != keyBefore.Key || keyAfter.VtepMAC.String() != keyBefore.VtepMAC.String() {
		t.Errorf("%s after restart: subnet %s lease %s mac %s, want %s %s %s", node.Name, after, keyAfter.Key, keyAfter.VtepMAC, before, keyBefore.Key, keyBefore.VtepMAC)
	}
}

// pingAcross runs event while p pings, and makes sure the ping covers it:
// echoes were sent before the event started and after it ended.
func pingAcross(p *lab.Pinger, event func() error) (lab.PingResult, error) {
	rs, err := pingAcrossAll(event, p)
	return rs[0], err
}

// pingAcrossAll is pingAcross for several pingers at once (one per family,
// say); the results are in the order of ps.
func pingAcrossAll(event func() error, ps ...*lab.Pinger) ([]lab.PingResult, error) {
	for _, p := range ps {
		waitSent(p, 5)
	}
	errs := []error{event()}
	want := make([]int, len(ps))
	for i, p := range ps {
		want[i] = p.Sent() + 25
	}
	rs := make([]lab.PingResult, len(ps))
	for i, p := range ps {
		waitSent(p, want[i])
		var err error
		rs[i], err = p.Stop()
		errs = append(errs, err)
	}
	return rs, errors.Join(errs...)
}

// waitSent waits until p has sent n echoes; it gives up after 10 s (a
// pinger that stopped sending reports why from Stop).
func waitSent(p *lab.Pinger, n int) {
	for start := time.Now(); p.Sent() < n && time.Since(start) < 10*time.Second; {
		time.Sleep(pingInterval)
	}
}

// checkEtcdOutage is scenario 5, first half: etcd is down for 20 s while
// from pings to; nothing is lost and every agent survives.
func checkEtcdOutage(t *testing.T, l *lab.Lab, from, to *lab.Pod) {
	ctx := t.Context()
	p, err := lab.StartPing(ctx, from.NS, to.IP, 0, pingInterval)
	if err != nil {
		t.Fatal(err)
	}
	r, err := pingAcross(p, func() error {
		stopErr := l.StopEtcd()
		time.Sleep(20 * time.Second)
		for _, n := range l.Nodes() {
			if done, err := n.AgentExited(); done {
				t.Errorf("%s: agent exited during the etcd outage: %v\n%s", n.Name, err, n.LogTail(20))
			}
		}
		return errors.Join(stopErr, l.StartEtcd(ctx))
	})
	if err != nil {
		t.Fatalf("etcd stop/start: %v", err)
	}
	if r.Loss() > 0 {
		t.Errorf("ping %s → %s across a 20 s etcd outage: %v, want no loss", podID(from), podID(to), r)
	}
	t.Logf("ping across the etcd outage: %v", r)
}

// checkJoin is scenario 5, second half: after etcd is back a new node
// joins, and a pod on it answers a pod on every old node (with a running
// agent) within 2 s of the new agent being ready; the 2 s include creating
// the pod. On failure it keeps pinging up to 30 s to report when each old
// node caught up.
func checkJoin(t *testing.T, l *lab.Lab, from []*lab.Pod) {
	ctx := t.Context()
	n, err := l.AddNode(ctx, l.NodeDefaults())
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	ready := n.ReadyAt()
	pod, err := l.AddPod(ctx, n, "pod1")
	if err != nil {
		t.Fatalf("add pod on %s: %v", n.Name, err)
	}
	t.Logf("%s: pod %s made %s after the agent was ready", n.Name, pod.IP, time.Since(ready).Round(time.Millisecond))
	pingers := map[*lab.Pod]*lab.Pinger{}
	for _, f := range from {
		p, err := lab.StartPing(ctx, f.NS, pod.IP, 0, 10*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		pingers[f] = p
	}
	allReplied := func() error {
		var errs []error
		for f, p := range pingers {
			if p.FirstReplyAt().IsZero() {
				errs = append(errs, fmt.Errorf("no reply from %s (%s) to %s yet", podID(pod), pod.IP, podID(f)))
			}
		}
		return errors.Join(errs...)
	}
	if err := eventually(ready, 2*time.Second, allReplied); err != nil {
		t.Errorf("%s joined after the etcd outage: %v", n.Name, err)
		if late := eventually(ready, 30*time.Second, allReplied); late != nil {
			t.Errorf("still unreachable 30 s after ready: %v", late)
		}
	}
	for f, p := range pingers {
		r, _ := p.Stop()
		first := p.FirstReplyAt()
		if first.IsZero() {
			continue // reported above
		}
		if first.Sub(ready) > 2*time.Second {
			t.Errorf("%s → %s: first reply %s after %s was ready, want within 2s", podID(f), podID(pod), first.Sub(ready).Round(time.Millisecond), n.Name)
		}
		t.Logf("%s → %s: first reply %s after %s was ready (%d/%d echoes answered)", podID(f), podID(pod), first.Sub(ready).Round(time.Millisecond), n.Name, r.Received, r.Sent)
	}
}
