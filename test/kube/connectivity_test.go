package kube

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftnet/weft/test/kube/cluster"
)

// requests per "reaches every backend" probe: with two backends picked at
// random, the chance that one is never picked is 2^-31.
const spread = 32

// checkPodToPod (check 2): the web pods, one per node, reach each other
// across VXLAN and see each other's pod IP as the client; each node reaches
// both pods.
func (k *tier) checkPodToPod(t *testing.T) {
	ctx := t.Context()
	for _, from := range k.web {
		for _, to := range k.web {
			if from.Name == to.Name {
				continue
			}
			url := fmt.Sprintf("http://%s/", net.JoinHostPort(to.Status.PodIP, strconv.Itoa(webPort)))
			out, err := k.exec(ctx, "default", from.Name, "testpod", "get", url)
			if err != nil {
				t.Errorf("%s → %s: %v", from.Name, to.Name, err)
				continue
			}
			as, err := parseAnswers(out)
			if err != nil {
				t.Errorf("%s → %s: %v", from.Name, to.Name, err)
				continue
			}
			if as[0].pod != to.Name || as[0].client != podIP(&from) {
				t.Errorf("%s (%s) → %s: answered %q by %s, want %s seeing %s", from.Name, from.Status.PodIP, url, out, as[0].pod, to.Name, from.Status.PodIP)
			}
			if out, err := k.exec(ctx, "default", from.Name, "testpod", "ping", "-c", "3", "-i", "100ms", to.Status.PodIP); err != nil {
				t.Errorf("ping %s → %s: %v (%s)", from.Name, to.Name, err, strings.TrimSpace(out))
			}
		}
	}
	for _, n := range k.c.Nodes() {
		subnet, err := subnetOf(n)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range k.web {
			url := fmt.Sprintf("http://%s/", net.JoinHostPort(p.Status.PodIP, strconv.Itoa(webPort)))
			as, err := httpFrom(ctx, n.NS, url, 1)
			if err != nil {
				t.Errorf("%s → %s: %v", n.Name, p.Name, err)
				continue
			}
			// The node's source address is on cni0 or flannel.1: its own subnet.
			if as[0].pod != p.Name || !subnet.Contains(as[0].client) {
				t.Errorf("%s → %s: answered by %s seeing %s, want %s seeing an address of %s", n.Name, url, as[0].pod, as[0].client, p.Name, subnet)
			}
			res, err := pingFrom(ctx, n, podIP(&p), 3)
			if err != nil || res.Loss() != 0 {
				t.Errorf("ping %s → %s: %v (%v)", n.Name, p.Name, res, err)
			}
		}
	}
}

// checkServices (check 3): the ClusterIP of web from both pods reaches both
// backends (the client IP kept for the other one); each pod reaches itself
// through its hairpin Service; the NodePort of every node reaches both
// backends and the hostPort its node's pod, from outside the cluster (the
// control-plane namespace), which the pod sees as the client.
func (k *tier) checkServices(t *testing.T) {
	ctx := t.Context()
	web, err := k.service(ctx, "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	names := podNames(k.web)
	for _, from := range k.web {
		out, err := k.exec(ctx, "default", from.Name, "testpod", "get", "-n", strconv.Itoa(spread), "http://"+web.Spec.ClusterIP+"/")
		if err != nil {
			t.Errorf("%s → ClusterIP %s: %v", from.Name, web.Spec.ClusterIP, err)
			continue
		}
		as, err := parseAnswers(out)
		if err != nil {
			t.Fatal(err)
		}
		if got := answeredBy(as); !slices.Equal(got, names) {
			t.Errorf("%s → ClusterIP %s: answered by %v, want every backend %v", from.Name, web.Spec.ClusterIP, got, names)
		}
		for _, a := range as {
			if a.pod != from.Name && a.client != podIP(&from) {
				t.Errorf("%s → ClusterIP → %s: client %s, want the pod IP %s", from.Name, a.pod, a.client, from.Status.PodIP)
				break
			}
		}

		hp, err := k.service(ctx, "default", "hp-"+from.Spec.NodeName)
		if err != nil {
			t.Fatal(err)
		}
		out, err = k.exec(ctx, "default", from.Name, "testpod", "get", "-n", "3", "http://"+hp.Spec.ClusterIP+"/")
		if err != nil {
			t.Errorf("%s → its own ClusterIP %s (hairpin): %v", from.Name, hp.Spec.ClusterIP, err)
			continue
		}
		as, err = parseAnswers(out)
		if err != nil {
			t.Fatal(err)
		}
		if got := answeredBy(as); !slices.Equal(got, []string{from.Name}) {
			t.Errorf("%s → hairpin Service %s: answered by %v", from.Name, hp.Name, got)
		}
	}

	k.checkNodePorts(t, names)
}

// checkNodePorts: from outside the cluster (the control-plane namespace),
// the NodePort of every node reaches every backend, and its hostPort the
// node's own web pod, which sees the client's address.
func (k *tier) checkNodePorts(t *testing.T, names []string) {
	ctx := t.Context()
	outside := k.c.ControlPlane()
	for i, n := range k.c.Nodes() {
		url := fmt.Sprintf("http://%s/", net.JoinHostPort(n.IP.String(), strconv.Itoa(nodePort)))
		as, err := httpFrom(ctx, outside, url, spread)
		if err != nil {
			t.Errorf("outside → NodePort %s: %v", url, err)
		} else if got := answeredBy(as); !slices.Equal(got, names) {
			t.Errorf("outside → NodePort %s: answered by %v, want every backend %v", url, got, names)
		}

		url = fmt.Sprintf("http://%s/", net.JoinHostPort(n.IP.String(), strconv.Itoa(hostPort)))
		as, err = httpFrom(ctx, outside, url, 3)
		if err != nil {
			t.Errorf("outside → hostPort %s: %v", url, err)
			continue
		}
		for _, a := range as {
			if a.pod != k.web[i].Name || a.client != cluster.CPIP {
				t.Errorf("outside (%s) → hostPort %s: answered by %s seeing %s, want %s (the pod on %s) seeing %s",
					cluster.CPIP, url, a.pod, a.client, k.web[i].Name, n.Name, cluster.CPIP)
				break
			}
		}
	}
}

func podNames(ps []corev1.Pod) []string {
	var names []string
	for _, p := range ps {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	return names
}

// answeredBy is the sorted set of pods in as.
func answeredBy(as []answer) []string {
	var names []string
	for _, a := range as {
		if !slices.Contains(names, a.pod) {
			names = append(names, a.pod)
		}
	}
	slices.Sort(names)
	return names
}

// useProxyMode restarts kube-proxy on every node in mode (it removes the
// other mode's rules as it starts) and waits until every node has the
// Services in the new mode's rules and none in the old one's.
func (k *tier) useProxyMode(t *testing.T, mode string) {
	t.Helper()
	for _, n := range k.c.Nodes() {
		if n.ProxyMode() == mode {
			continue
		}
		if err := n.StartProxy(mode); err != nil {
			t.Fatal(err)
		}
	}
	web, err := k.service(t.Context(), "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range k.c.Nodes() {
		err := k.c.WaitFor(t.Context(), n.Name+" kube-proxy "+mode+" rules", 30*time.Second, func() (bool, string) {
			ipt, nft, err := proxyRules(t, n)
			if err != nil {
				return false, err.Error()
			}
			inIPT := strings.Contains(ipt, web.Spec.ClusterIP)
			inNFT := strings.Contains(nft, web.Spec.ClusterIP)
			if mode == "iptables" {
				return inIPT && !strings.Contains(nft, "table ip kube-proxy"), fmt.Sprintf("iptables %v, nftables %v", inIPT, inNFT)
			}
			return inNFT && !strings.Contains(ipt, "KUBE-SERVICES"), fmt.Sprintf("iptables %v, nftables %v", inIPT, inNFT)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// proxyRules returns the node's iptables nat rules and nftables ruleset.
func proxyRules(t *testing.T, n *cluster.Node) (string, string, error) {
	ipt, err := n.Output(t.Context(), "iptables-save", "-t", "nat")
	if err != nil {
		return "", "", err
	}
	nft, err := n.Output(t.Context(), "nft", "list", "ruleset")
	if err != nil {
		return "", "", err
	}
	return ipt, nft, nil
}
