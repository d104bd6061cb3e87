package kube

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftnet/weft/test/kube/cluster"
	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/testlog"
)

var keepLogs = flag.String("kube.logs", "", "copy every daemon's log into this directory before the cluster is removed")

// tier is the running cluster the checks share.
type tier struct {
	c   *cluster.Cluster
	web []corev1.Pod // the web Deployment's pods, one per node, in node order
	dns []corev1.Pod // the CoreDNS pods, one per node, in node order
}

// newCluster starts a cluster for t and removes it in t.Cleanup; on failure
// the daemons' unexpected error lines and log tails are logged first.
func newCluster(t *testing.T, mode string) *cluster.Cluster {
	t.Helper()
	log := testlog.New(t, slog.LevelInfo)
	c, err := cluster.New(t.Context(), cluster.Options{
		KubeBin: env.kubeBin, EtcdBin: env.etcdBin, Images: env.images, PauseImage: pauseImage,
		ProxyMode: mode, Log: log,
	})
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	openClusters.Store(c, struct{}{})
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, c)
		} else {
			summarizeErrors(t, c)
		}
		if *keepLogs != "" {
			if err := c.CopyLogs(*keepLogs); err != nil {
				t.Error(err)
			}
		}
		openClusters.Delete(c)
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	// go test -timeout ends the process without running t.Cleanup: remove
	// the cluster a minute before, so the hung step fails instead.
	if dl, ok := t.Deadline(); ok {
		guard := time.AfterFunc(time.Until(dl)-time.Minute, func() {
			t.Errorf("test deadline %s close: removing the cluster", dl.Format(time.TimeOnly))
			_ = c.Close()
		})
		t.Cleanup(func() { guard.Stop() })
	}
	return c
}

// dumpLogs shows every error line that is not known to be harmless, then
// the tail of every log.
func dumpLogs(t *testing.T, c *cluster.Cluster) {
	lines, err := c.ErrorLines(provoked)
	if err != nil {
		t.Logf("error lines: %v", err)
	}
	for _, name := range slices.Sorted(maps.Keys(lines)) {
		var l []string
		for i, line := range lines[name] {
			if i == 15 {
				l = append(l, fmt.Sprintf("... %d more", len(lines[name])-i))
				break
			}
			if len(line) > 400 {
				line = line[:400] + "..."
			}
			l = append(l, line)
		}
		t.Logf("---- %s: %d unexpected error lines ----\n%s", name, len(lines[name]), strings.Join(l, "\n"))
	}
	tails := c.LogTails(15)
	for _, name := range slices.Sorted(maps.Keys(tails)) {
		t.Logf("---- %s (tail) ----\n%s", name, tails[name])
	}
	if out, err := c.Kubectl(context.Background(), "", "get", "pods", "-A", "-o", "wide"); err == nil {
		t.Logf("---- pods ----\n%s", out)
	}
}

// summarizeErrors logs, after a passing run, how many error lines each
// daemon printed that are not known to be harmless, and the first of them.
func summarizeErrors(t *testing.T, c *cluster.Cluster) {
	lines, err := c.ErrorLines(provoked)
	if err != nil {
		t.Logf("error lines: %v", err)
	}
	for _, name := range slices.Sorted(maps.Keys(lines)) {
		first := lines[name][0]
		if len(first) > 300 {
			first = first[:300] + "..."
		}
		t.Logf("%s: %d error lines not known to be harmless, the first: %s", name, len(lines[name]), first)
	}
}

// provoked are the error lines the checks cause on purpose: a node without
// a pod network, before weft is installed and in check 6.
var provoked = []cluster.Harmless{
	{Daemon: "kubelet", Text: "Container runtime network not ready", Why: "no network before weft is installed; check 6"},
	{Daemon: "kubelet", Text: "network is not ready", Why: "pods waiting for the network, as above"},
}

// kubectl runs kubectl and fails t on error.
func (k *tier) kubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	out, err := k.c.Kubectl(ctx, stdin, args...)
	if err != nil {
		t.Fatalf("kubectl: %v", err)
	}
	return out
}

// exec runs argv in the pod's first container with kubectl exec (at most
// a minute).
func (k *tier) exec(ctx context.Context, ns, pod string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return k.c.Kubectl(ctx, "", append([]string{"-n", ns, "exec", pod, "--"}, argv...)...)
}

func (k *tier) node(ctx context.Context, name string) (*corev1.Node, error) {
	var n corev1.Node
	if err := k.c.Get(ctx, "/api/v1/nodes/"+name, &n); err != nil {
		return nil, err
	}
	return &n, nil
}

// readyCondition returns the node's Ready condition (zero if none).
func readyCondition(n *corev1.Node) corev1.NodeCondition {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c
		}
	}
	return corev1.NodeCondition{}
}

// pods lists the pods of namespace ns matching selector (k=v,...).
func (k *tier) pods(ctx context.Context, ns, selector string) ([]corev1.Pod, error) {
	var l corev1.PodList
	path := "/api/v1/namespaces/" + ns + "/pods"
	if selector != "" {
		path += "?labelSelector=" + selector
	}
	if err := k.c.Get(ctx, path, &l); err != nil {
		return nil, err
	}
	return l.Items, nil
}

// podReady reports whether p runs and is Ready.
func podReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// family is one IP family of the dual-stack cluster.
type family struct {
	name string // "IPv4", "IPv6"
	is6  bool
}

var (
	ipv4     = family{"IPv4", false}
	ipv6     = family{"IPv6", true}
	families = []family{ipv4, ipv6}
)

// has reports whether a is of family f.
func (f family) has(a netip.Addr) bool { return a.IsValid() && a.Unmap().Is6() == f.is6 }

// pick returns the first address of family f in addrs (zero if none).
func (f family) pick(addrs []string) netip.Addr {
	for _, s := range addrs {
		if a, err := netip.ParseAddr(s); err == nil && f.has(a) {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}

// podIPs returns the pod's IPs as the apiserver lists them (status.podIPs).
func podIPs(p *corev1.Pod) []string {
	var ips []string
	for _, ip := range p.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	return ips
}

// podAddr is the pod's IP of family f (zero if it has none).
func podAddr(p *corev1.Pod, f family) netip.Addr { return f.pick(podIPs(p)) }

// clusterIP is the Service's ClusterIP of family f (zero if it has none).
func clusterIP(s *corev1.Service, f family) netip.Addr { return f.pick(s.Spec.ClusterIPs) }

// nodeAddr is the node's underlay address of family f.
func nodeAddr(n *cluster.Node, f family) netip.Addr {
	if f.is6 {
		return n.IP6
	}
	return n.IP
}

// hostURL is http://<a>:<port>/ (brackets around an IPv6 address).
func hostURL(a netip.Addr, port int) string {
	return "http://" + netip.AddrPortFrom(a, uint16(port)).String() + "/"
}

// readyPods waits until ns has want Ready pods matching selector and
// returns them sorted by node name.
func (k *tier) readyPods(t *testing.T, ns, selector string, want int, limit time.Duration) []corev1.Pod {
	t.Helper()
	var ready []corev1.Pod
	err := k.c.WaitFor(t.Context(), fmt.Sprintf("%d ready pods %s in %s", want, selector, ns), limit, func() (bool, string) {
		ps, err := k.pods(t.Context(), ns, selector)
		if err != nil {
			return false, err.Error()
		}
		ready = ready[:0]
		var states []string
		for i := range ps {
			if podReady(&ps[i]) {
				ready = append(ready, ps[i])
			}
			states = append(states, ps[i].Name+"="+string(ps[i].Status.Phase))
		}
		return len(ready) == want, strings.Join(states, " ")
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(ready, func(a, b corev1.Pod) int { return strings.Compare(a.Spec.NodeName, b.Spec.NodeName) })
	return ready
}

// runtimeNetwork returns the NetworkReady condition of the node's container
// runtime (`crictl info`): whether the runtime reports the pod network ready
// and why not.
func runtimeNetwork(ctx context.Context, n *cluster.Node) (bool, string, error) {
	out, err := n.Output(ctx, "crictl", "--runtime-endpoint", "unix:///run/containerd/containerd.sock", "info")
	if err != nil {
		return false, "", err
	}
	var info struct {
		Status struct {
			Conditions []struct {
				Type    string
				Status  bool
				Reason  string
				Message string
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		return false, "", fmt.Errorf("%s: crictl info: %w", n.Name, err)
	}
	for _, c := range info.Status.Conditions {
		if c.Type == "NetworkReady" {
			return c.Status, c.Reason + ": " + c.Message, nil
		}
	}
	return false, "", fmt.Errorf("%s: crictl info: no NetworkReady condition", n.Name)
}

// subnetEnvTime returns the modification time of the node's subnet.env
// (zero and no error when it does not exist).
func subnetEnvTime(n *cluster.Node) (time.Time, error) {
	fi, err := os.Stat(n.SubnetEnv())
	if os.IsNotExist(err) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", n.Name, err)
	}
	return fi.ModTime(), nil
}

// subnetOfFamily reads the node's subnet of family f from its subnet.env
// (FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET).
func subnetOfFamily(n *cluster.Node, f family) (netip.Prefix, error) {
	if f.is6 {
		return envPrefix(n, "FLANNEL_IPV6_SUBNET")
	}
	return envPrefix(n, "FLANNEL_SUBNET")
}

// envPrefix reads the prefix key=... from the node's subnet.env (masked).
func envPrefix(n *cluster.Node, key string) (netip.Prefix, error) {
	b, err := os.ReadFile(n.SubnetEnv())
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s: %w", n.Name, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			p, err := netip.ParsePrefix(strings.TrimSpace(v))
			if err != nil {
				return netip.Prefix{}, fmt.Errorf("%s: %s: %w", n.Name, key, err)
			}
			return p.Masked(), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("%s: no %s in %s", n.Name, key, n.SubnetEnv())
}

// pingFrom sends count echo requests (ICMPv6 to an IPv6 address) from the
// node's network namespace to ip, 100 ms apart, and returns the result once
// the replies are in.
func pingFrom(ctx context.Context, n *cluster.Node, ip netip.Addr, count int) (lab.PingResult, error) {
	p, err := lab.StartPing(ctx, n.NS, ip, count, 100*time.Millisecond)
	if err != nil {
		return lab.PingResult{}, err
	}
	for p.Sent() < count && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	return p.Stop()
}
