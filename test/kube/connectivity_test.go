package kube

import (
	"fmt"
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

// checkPodToPod (check 2): over each family, the web pods, one per node,
// reach each other across VXLAN (flannel.1, flannel-v6.1) and see each
// other's pod IP of that family as the client; each node reaches both pods.
func (k *tier) checkPodToPod(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) { k.checkPodToPodFamily(t, f) })
	}
}

func (k *tier) checkPodToPodFamily(t *testing.T, f family) {
	ctx := t.Context()
	for _, from := range k.web {
		for _, to := range k.web {
			if from.Name == to.Name {
				continue
			}
			src, dst := podAddr(&from, f), podAddr(&to, f)
			if !src.IsValid() || !dst.IsValid() {
				t.Fatalf("%s %v, %s %v: want an %s pod IP each", from.Name, podIPs(&from), to.Name, podIPs(&to), f.name)
			}
			url := hostURL(dst, webPort)
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
			if as[0].pod != to.Name || as[0].client != src {
				t.Errorf("%s (%s) → %s: answered %q by %s, want %s seeing %s", from.Name, src, url, out, as[0].pod, to.Name, src)
			}
			if out, err := k.exec(ctx, "default", from.Name, "testpod", "ping", "-c", "3", "-i", "100ms", dst.String()); err != nil {
				t.Errorf("ping %s → %s (%s): %v (%s)", from.Name, to.Name, dst, err, strings.TrimSpace(out))
			}
		}
	}
	for _, n := range k.c.Nodes() {
		subnet, err := subnetOfFamily(n, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range k.web {
			dst := podAddr(&p, f)
			url := hostURL(dst, webPort)
			as, err := httpFrom(ctx, n.NS, url, 1)
			if err != nil {
				t.Errorf("%s → %s: %v", n.Name, p.Name, err)
				continue
			}
			// The node's source address is on cni0 or the VXLAN device:
			// its own subnet of the family.
			if as[0].pod != p.Name || !subnet.Contains(as[0].client) {
				t.Errorf("%s → %s: answered by %s seeing %s, want %s seeing an address of %s", n.Name, url, as[0].pod, as[0].client, p.Name, subnet)
			}
			res, err := pingFrom(ctx, n, dst, 3)
			if err != nil || res.Loss() != 0 {
				t.Errorf("ping %s → %s (%s): %v (%v)", n.Name, p.Name, dst, res, err)
			}
		}
	}
}

// checkServices (check 3): the ClusterIPs of web (dual stack: one per
// family) from both pods reach both backends, the one across VXLAN with the
// client's pod IP of that family kept; each pod reaches itself through its
// hairpin Service (IPv4); the NodePort of every node (each of its
// addresses) reaches both backends and the hostPort its node's pod, from
// outside the cluster (the control-plane namespace), which the pod sees as
// the client.
func (k *tier) checkServices(t *testing.T) {
	ctx := t.Context()
	web, err := k.service(ctx, "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	names := podNames(k.web)
	for _, f := range families {
		ip := clusterIP(web, f)
		if !ip.IsValid() {
			t.Errorf("Service web: ClusterIPs %v without an %s address", web.Spec.ClusterIPs, f.name)
			continue
		}
		for _, from := range k.web {
			out, err := k.exec(ctx, "default", from.Name, "testpod", "get", "-n", strconv.Itoa(spread), hostURL(ip, 80))
			if err != nil {
				t.Errorf("%s → ClusterIP %s: %v", from.Name, ip, err)
				continue
			}
			as, err := parseAnswers(out)
			if err != nil {
				t.Fatal(err)
			}
			if got := answeredBy(as); !slices.Equal(got, names) {
				t.Errorf("%s → ClusterIP %s: answered by %v, want every backend %v", from.Name, ip, got, names)
			}
			for _, a := range as {
				if a.pod != from.Name && a.client != podAddr(&from, f) {
					t.Errorf("%s → ClusterIP %s → %s: client %s, want the pod IP %s", from.Name, ip, a.pod, a.client, podAddr(&from, f))
					break
				}
			}
		}
	}
	for _, from := range k.web {
		hp, err := k.service(ctx, "default", "hp-"+from.Spec.NodeName)
		if err != nil {
			t.Fatal(err)
		}
		out, err := k.exec(ctx, "default", from.Name, "testpod", "get", "-n", "3", "http://"+hp.Spec.ClusterIP+"/")
		if err != nil {
			t.Errorf("%s → its own ClusterIP %s (hairpin): %v", from.Name, hp.Spec.ClusterIP, err)
			continue
		}
		as, err := parseAnswers(out)
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
// the NodePort at every node address (both families) reaches every
// backend, and its hostPort the node's own web pod, which sees the client's
// address.
func (k *tier) checkNodePorts(t *testing.T, names []string) {
	ctx := t.Context()
	outside := k.c.ControlPlane()
	for _, f := range families {
		client := cluster.CPIP
		if f.is6 {
			client = cluster.CPIP6
		}
		for i, n := range k.c.Nodes() {
			url := hostURL(nodeAddr(n, f), nodePort)
			as, err := httpFrom(ctx, outside, url, spread)
			if err != nil {
				t.Errorf("outside → NodePort %s: %v", url, err)
			} else if got := answeredBy(as); !slices.Equal(got, names) {
				t.Errorf("outside → NodePort %s: answered by %v, want every backend %v", url, got, names)
			}

			url = hostURL(nodeAddr(n, f), hostPort)
			as, err = httpFrom(ctx, outside, url, 3)
			if err != nil {
				t.Errorf("outside → hostPort %s: %v", url, err)
				continue
			}
			for _, a := range as {
				if a.pod != k.web[i].Name || a.client != client {
					t.Errorf("outside (%s) → hostPort %s: answered by %s seeing %s, want %s (the pod on %s) seeing %s",
						client, url, a.pod, a.client, k.web[i].Name, n.Name, client)
					break
				}
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
// Services (both ClusterIPs of web) in the new mode's rules and none in the
// old one's.
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
			inIPT, inNFT := true, true
			for _, f := range families {
				ip := clusterIP(web, f).String()
				inIPT = inIPT && strings.Contains(ipt, ip)
				inNFT = inNFT && strings.Contains(nft, ip)
			}
			noNFT := !strings.Contains(nft, "table ip kube-proxy") && !strings.Contains(nft, "table ip6 kube-proxy")
			if mode == "iptables" {
				return inIPT && noNFT, fmt.Sprintf("iptables %v, nftables %v", inIPT, inNFT)
			}
			return inNFT && !strings.Contains(ipt, "KUBE-SERVICES"), fmt.Sprintf("iptables %v, nftables %v", inIPT, inNFT)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// proxyRules returns the node's iptables and ip6tables nat rules and its
// nftables ruleset.
func proxyRules(t *testing.T, n *cluster.Node) (string, string, error) {
	ipt, err := n.Output(t.Context(), "iptables-save", "-t", "nat")
	if err != nil {
		return "", "", err
	}
	ip6t, err := n.Output(t.Context(), "ip6tables-save", "-t", "nat")
	if err != nil {
		return "", "", err
	}
	ipt += ip6t
	nft, err := n.Output(t.Context(), "nft", "list", "ruleset")
	if err != nil {
		return "", "", err
	}
	return ipt, nft, nil
}
