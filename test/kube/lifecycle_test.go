package kube

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"

	"github.com/weftnet/weft/test/kube/cluster"
	"github.com/weftnet/weft/test/lab"
)

// scalePods is how many pods check 7 creates and deletes on one node.
const scalePods = 50

func scaleYAML(node string) string {
	var b strings.Builder
	for i := range scalePods {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Pod
metadata:
  name: scale-%02d
  namespace: default
  labels:
    batch: scale
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers:
    - name: testpod
      image: %s
      imagePullPolicy: Never
      args: ["wait"]
`, i, node, testpodImage)
	}
	return b.String()
}

// reservations lists the IPs with a reservation file in the node's IPAM
// directory.
func reservations(n *cluster.Node) ([]netip.Addr, error) {
	ents, err := os.ReadDir(n.IPAMDir())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.Name, err)
	}
	var ips []netip.Addr
	for _, e := range ents {
		if ip, err := netip.ParseAddr(e.Name()); err == nil {
			ips = append(ips, ip)
		}
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	return ips, nil
}

// podNetworkPods lists the pod-network pods on node that are not being
// deleted.
func (k *tier) podNetworkPods(t *testing.T, node string) []corev1.Pod {
	t.Helper()
	var l corev1.PodList
	if err := k.c.Get(t.Context(), "/api/v1/pods?fieldSelector=spec.nodeName="+node, &l); err != nil {
		t.Fatal(err)
	}
	var ps []corev1.Pod
	for _, p := range l.Items {
		if !p.Spec.HostNetwork && p.DeletionTimestamp == nil && len(p.Status.PodIPs) > 0 {
			ps = append(ps, p)
		}
	}
	return ps
}

// podIPsOn lists the IPs (both families) of the pod-network pods on node
// that are not being deleted.
func (k *tier) podIPsOn(t *testing.T, node string) []netip.Addr {
	t.Helper()
	var ips []netip.Addr
	for _, p := range k.podNetworkPods(t, node) {
		for _, ip := range podIPs(&p) {
			if a, err := netip.ParseAddr(ip); err == nil {
				ips = append(ips, a)
			}
		}
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	return ips
}

// veths counts the veth links in the node's network namespace (one per pod
// on the pod network).
func veths(n *cluster.Node) (int, error) {
	h, err := n.NS.Handle()
	if err != nil {
		return 0, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return 0, fmt.Errorf("%s: list links: %w", n.Name, err)
	}
	c := 0
	for _, l := range links {
		if _, ok := l.(*netlink.Veth); ok && l.Attrs().Name != "eth0" {
			c++
		}
	}
	return c, nil
}

// checkIPsFreed (check 7): 50 pods created on node1 and deleted again leave
// no reservation file (of either family) and no veth behind; the IPAM
// directory then holds exactly the IPs of the pods still running there.
func (k *tier) checkIPsFreed(t *testing.T) {
	n := k.c.Nodes()[0]
	start := time.Now()
	k.kubectl(t, scaleYAML(n.Name), "apply", "-f", "-")
	pods := k.readyPods(t, "default", "batch=scale", scalePods, 3*time.Minute)
	created := time.Since(start)
	var ips []netip.Addr // both families: one reservation file each
	for i := range pods {
		for _, f := range families {
			ips = append(ips, podAddr(&pods[i], f))
		}
	}
	res, err := reservations(n)
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range ips {
		if !slices.Contains(res, ip) {
			t.Errorf("pod IP %s has no reservation file", ip)
		}
	}

	start = time.Now()
	k.kubectl(t, "", "-n", "default", "delete", "pods", "-l", "batch=scale", "--wait=true", "--timeout=120s")
	err = k.c.WaitFor(t.Context(), "reservations of the deleted pods gone", 60*time.Second, func() (bool, string) {
		res, err := reservations(n)
		if err != nil {
			return false, err.Error()
		}
		left := 0
		for _, ip := range ips {
			if slices.Contains(res, ip) {
				left++
			}
		}
		return left == 0, fmt.Sprintf("%d of %d left", left, len(ips))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d pods on %s: running in %s, deleted and their IPs freed in %s", scalePods, n.Name,
		created.Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
	res, err = reservations(n)
	if err != nil {
		t.Fatal(err)
	}
	if want := k.podIPsOn(t, n.Name); !slices.Equal(res, want) {
		t.Errorf("%s: reservations %v, want the running pods' IPs %v", n.Name, res, want)
	}
	v, err := veths(n)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(k.podNetworkPods(t, n.Name)); v != want {
		t.Errorf("%s: %d veths, want %d (one per running pod)", n.Name, v, want)
	}
}

// checkRolloutRestart (check 5): `kubectl rollout restart ds/weft` while a
// pod pings the pod on the other node every 20 ms over each family: no echo
// is lost, every weftd pod is replaced and every node keeps its subnets.
func (k *tier) checkRolloutRestart(t *testing.T) {
	ctx := t.Context()
	before := map[string][]netip.Prefix{}
	for _, n := range k.c.Nodes() {
		for _, f := range families {
			s, err := subnetOfFamily(n, f)
			if err != nil {
				t.Fatal(err)
			}
			before[n.Name] = append(before[n.Name], s)
		}
	}
	old, err := k.pods(ctx, "kube-weft", "app.kubernetes.io/name=weft")
	if err != nil {
		t.Fatal(err)
	}
	from, to := k.web[0], k.web[1]
	pns, err := k.podNetNS(ctx, &from)
	if err != nil {
		t.Fatal(err)
	}
	defer pns.Close()
	pingers := map[family]*lab.Pinger{}
	for _, f := range families {
		p, err := lab.StartPing(ctx, pns, podAddr(&to, f), 0, 20*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		pingers[f] = p
	}
	start := time.Now()
	k.kubectl(t, "", "-n", "kube-weft", "rollout", "restart", "ds/weft")
	k.kubectl(t, "", "-n", "kube-weft", "rollout", "status", "ds/weft", "--timeout=120s")
	took := time.Since(start)
	time.Sleep(time.Second)
	t.Logf("rollout restart took %s", took.Round(100*time.Millisecond))
	for _, f := range families {
		res, err := pingers[f].Stop()
		if err != nil {
			t.Fatalf("ping %s → %s over %s: %v", from.Name, to.Name, f.name, err)
		}
		t.Logf("ping %s → %s over %s: %s", from.Name, to.Name, f.name, res)
		if res.Loss() != 0 || res.Sent < 50 {
			t.Errorf("ping %s → %s over %s during the rollout: %s, want no loss", from.Name, to.Name, f.name, res)
		}
	}
	cur, err := k.pods(ctx, "kube-weft", "app.kubernetes.io/name=weft")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range old {
		if slices.ContainsFunc(cur, func(c corev1.Pod) bool { return c.UID == o.UID }) {
			t.Errorf("weft pod %s on %s was not replaced", o.Name, o.Spec.NodeName)
		}
	}
	for _, n := range k.c.Nodes() {
		for i, f := range families {
			s, err := subnetOfFamily(n, f)
			if err != nil {
				t.Fatal(err)
			}
			if s != before[n.Name][i] {
				t.Errorf("%s: %s subnet %s after the rollout, %s before", n.Name, f.name, s, before[n.Name][i])
			}
		}
	}
}

// checkWeftdStopped (check 6): weftd stops on node2 only: a NoExecute taint
// that the DaemonSet does not tolerate (it tolerates NoSchedule taints only)
// has its pod there evicted and not recreated, while the other nodes' weftd
// and the test's pods (which tolerate it) keep running. The stopped agent
// leaves subnet.env and the datapath in place, but no longer holds its lock
// (subnetenv.AgentLockFile): the runtime's CNI STATUS call fails and the node
// turns NotReady within 15 s, with weft's reason. With the taint removed
// weftd returns with the same subnets and the node is Ready again.
func (k *tier) checkWeftdStopped(t *testing.T) {
	ctx := t.Context()
	n := k.c.Nodes()[1]
	var subnets []netip.Prefix
	for _, f := range families {
		s, err := subnetOfFamily(n, f)
		if err != nil {
			t.Fatal(err)
		}
		subnets = append(subnets, s)
	}
	untaint := k.keepWeftdOff(t, n) // returns once the weft pod is gone
	defer untaint()
	stopped := time.Now()
	msg := k.waitNodeReady(t, n.Name, false, 30*time.Second)
	took := time.Since(stopped)
	t.Logf("%s NotReady %s after its weft pod was gone: %s", n.Name, took.Round(100*time.Millisecond), msg)
	if took > 15*time.Second {
		t.Errorf("%s NotReady only %s after weftd stopped, want ≤ 15 s", n.Name, took.Round(100*time.Millisecond))
	}
	if !strings.Contains(msg, "weftd is not running") {
		t.Errorf("%s NotReady for %q: want weft's STATUS error (weftd is not running)", n.Name, msg)
	}
	if ok, why, err := runtimeNetwork(ctx, n); err != nil || ok || !strings.Contains(why, "weftd is not running") {
		t.Errorf("%s: runtime NetworkReady=%v (%s, %v), want false with weft's STATUS error", n.Name, ok, why, err)
	}
	if _, err := os.Stat(n.SubnetEnv()); err != nil {
		t.Errorf("%s: subnet.env gone with the agent: %v (it stays, so pods keep talking)", n.Name, err)
	}

	untaint()
	back := time.Now()
	k.waitNodeReady(t, n.Name, true, 60*time.Second)
	t.Logf("%s Ready %s after weftd was allowed back", n.Name, time.Since(back).Round(100*time.Millisecond))
	for i, f := range families {
		if s, err := subnetOfFamily(n, f); err != nil || s != subnets[i] {
			t.Errorf("%s: %s subnet %s (%v) after weftd came back, %s before", n.Name, f.name, s, err, subnets[i])
		}
	}
}

// keepWeftdOff taints n with weftdOffTaint and waits until its weft pod is
// gone and stays gone; the returned func removes the taint (once).
func (k *tier) keepWeftdOff(t *testing.T, n *cluster.Node) func() {
	t.Helper()
	ctx := t.Context()
	taint := weftdOffTaint + "=true:NoExecute"
	k.kubectl(t, "", "taint", "node", n.Name, taint)
	var once sync.Once
	untaint := func() {
		once.Do(func() {
			if _, err := k.c.Kubectl(context.Background(), "", "taint", "node", n.Name, taint+"-"); err != nil {
				t.Errorf("untaint %s: %v", n.Name, err)
			}
		})
	}
	weftPods := func() (int, error) {
		var l corev1.PodList
		err := k.c.Get(ctx, "/api/v1/namespaces/kube-weft/pods?fieldSelector=spec.nodeName="+n.Name, &l)
		return len(l.Items), err
	}
	err := k.c.WaitFor(ctx, "weftd gone from "+n.Name, 60*time.Second, func() (bool, string) {
		c, err := weftPods()
		if err != nil {
			return false, err.Error()
		}
		return c == 0, fmt.Sprintf("%d weft pods", c)
	})
	if err != nil {
		untaint()
		t.Fatal(err)
	}
	// The DaemonSet must not bring it back while the taint is there.
	time.Sleep(2 * time.Second)
	if c, err := weftPods(); err != nil || c != 0 {
		untaint()
		t.Fatalf("%s: %d weft pods (%v) with the taint in place", n.Name, c, err)
	}
	return untaint
}
