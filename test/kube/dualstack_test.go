package kube

import (
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftnet/weft/test/kube/cluster"
)

// Underlay MTU 1500 of the nodes' eth0, less VXLAN over IPv4 (50) and over
// IPv6 (70).
const (
	vxlanMTU  = 1450
	vxlan6MTU = 1430
)

// checkDualStack (check 10): weft made the network dual stack: every node's
// subnet.env has both networks and a subnet of each within them (the IPv6
// one from FLANNEL_IPV6_*), flannel.1 and flannel-v6.1 exist with the
// underlay MTU less their family's encapsulation, each node is registered
// with an address of each family, and every pod on the pod network has
// two pod IPs, one per family, each in its node's subnet of that family.
func (k *tier) checkDualStack(t *testing.T) {
	ctx := t.Context()
	for _, n := range k.c.Nodes() {
		b, err := os.ReadFile(n.SubnetEnv())
		if err != nil {
			t.Fatal(err)
		}
		env := string(b)
		for _, want := range []string{"FLANNEL_NETWORK=" + cluster.PodCIDR.String() + "\n",
			"FLANNEL_IPV6_NETWORK=" + cluster.PodCIDR6.String() + "\n"} {
			if !strings.Contains(env, want) {
				t.Errorf("%s: subnet.env without %q:\n%s", n.Name, strings.TrimSpace(want), env)
			}
		}
		for _, f := range families {
			s, err := subnetOfFamily(n, f)
			if err != nil {
				t.Error(err)
				continue
			}
			network := cluster.PodCIDR
			if f.is6 {
				network = cluster.PodCIDR6
			}
			if !network.Contains(s.Addr()) || s.Bits() <= network.Bits() {
				t.Errorf("%s: %s subnet %s not within %s", n.Name, f.name, s, network)
			}
		}
		h, err := n.NS.Handle()
		if err != nil {
			t.Fatal(err)
		}
		for dev, mtu := range map[string]int{"flannel.1": vxlanMTU, "flannel-v6.1": vxlan6MTU} {
			l, err := h.LinkByName(dev)
			if err != nil {
				t.Errorf("%s: %s: %v", n.Name, dev, err)
			} else if l.Attrs().MTU != mtu {
				t.Errorf("%s: %s MTU %d, want %d", n.Name, dev, l.Attrs().MTU, mtu)
			}
		}
		h.Close()

		node, err := k.node(ctx, n.Name)
		if err != nil {
			t.Fatal(err)
		}
		var internal []string
		for _, a := range node.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				internal = append(internal, a.Address)
			}
		}
		if want := []string{n.IP.String(), n.IP6.String()}; strings.Join(internal, ",") != strings.Join(want, ",") {
			t.Errorf("%s: InternalIPs %v, want %v", n.Name, internal, want)
		}

		pods := k.podNetworkPods(t, n.Name)
		if len(pods) == 0 {
			t.Errorf("%s: no pod on the pod network", n.Name)
		}
		for _, p := range pods {
			ips := podIPs(&p)
			if len(ips) != 2 {
				t.Errorf("%s on %s: pod IPs %v, want one per family", p.Name, n.Name, ips)
				continue
			}
			for _, f := range families {
				s, err := subnetOfFamily(n, f)
				if err != nil {
					t.Fatal(err)
				}
				if a := podAddr(&p, f); !s.Contains(a) {
					t.Errorf("%s on %s: pod IPs %v: no %s address in %s", p.Name, n.Name, ips, f.name, s)
				}
			}
		}
	}
	web, err := k.service(ctx, "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	if v4, v6 := clusterIP(web, ipv4), clusterIP(web, ipv6); len(web.Spec.ClusterIPs) != 2 ||
		!cluster.ServiceCIDR.Contains(v4) || !cluster.ServiceCIDR6.Contains(v6) {
		t.Errorf("Service web: ClusterIPs %v, want one in %s and one in %s", web.Spec.ClusterIPs, cluster.ServiceCIDR, cluster.ServiceCIDR6)
	}
}
