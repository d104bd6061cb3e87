package kube

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"

	"github.com/weftnet/weft/test/lab"
)

// podMTU is FLANNEL_MTU, the MTU of the pods' interfaces: in a dual-stack
// network the smaller of the two VXLAN devices' (flannel-v6.1's: 1500 − 70),
// so a packet of either family fits both devices.
const podMTU = vxlan6MTU

// maxPing is the largest ICMP payload that fits the pod's MTU: − 20 (IPv4
// header) or − 40 (IPv6 header), − 8 (ICMP header).
func maxPing(f family) int {
	if f.is6 {
		return podMTU - 48
	}
	return podMTU - 28
}

// checkMTU (check 8): the pods' MTU is the overlay's, end to end, over each
// family: an echo of the largest size that fits (DF set) crosses VXLAN, one
// byte more is refused in the pod already, and 10 MB cross in both
// directions over HTTP.
func (k *tier) checkMTU(t *testing.T) {
	ctx := t.Context()
	want := "FLANNEL_MTU=" + strconv.Itoa(podMTU) + "\n"
	for _, n := range k.c.Nodes() {
		b, err := os.ReadFile(n.SubnetEnv())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), want) {
			t.Errorf("%s: subnet.env without %s:\n%s", n.Name, strings.TrimSpace(want), b)
		}
	}
	for i, from := range k.web {
		to := k.web[1-i]
		for _, f := range families {
			dst, size := podAddr(&to, f).String(), maxPing(f)
			out, err := k.exec(ctx, "default", from.Name, "testpod", "ping", "-c", "3", "-i", "100ms", "-s", strconv.Itoa(size), dst)
			if err != nil {
				t.Errorf("%s → %s (%s): ping -s %d (DF): %v", from.Name, to.Name, dst, size, err)
			} else {
				t.Logf("%s → %s (%s): ping -s %d (DF): %s", from.Name, to.Name, dst, size, strings.TrimSpace(out))
			}
			out, err = k.exec(ctx, "default", from.Name, "testpod", "ping", "-c", "1", "-s", strconv.Itoa(size+1), dst)
			if err == nil || !strings.Contains(out, "message too long") {
				t.Errorf("%s → %s (%s): ping -s %d (DF) should not fit the pod's MTU: %v: %s", from.Name, to.Name, dst, size+1, err, out)
			}
			url := hostURL(podAddr(&to, f), webPort)
			out, err = k.exec(ctx, "default", from.Name, "testpod", "fetch", "-bytes", strconv.Itoa(10<<20), url)
			if err != nil {
				t.Errorf("%s ← %s: 10 MB over HTTP over %s: %v", from.Name, to.Name, f.name, err)
			} else {
				t.Logf("%s ← %s over %s: %s", from.Name, to.Name, f.name, strings.TrimSpace(out))
			}
		}
	}
}

// dnsLine is one answer of `testpod dns`.
type dnsLine struct {
	server, nsid, rcode, a string
}

func parseDNS(out string) ([]dnsLine, error) {
	var ls []dnsLine
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var d dnsLine
		for _, f := range strings.Fields(l) {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "server":
				d.server = v
			case "nsid":
				d.nsid = v
			case "rcode":
				d.rcode = v
			case "a":
				d.a = v
			}
		}
		if d.server == "" || d.rcode == "" {
			return nil, fmt.Errorf("dns answer %q", l)
		}
		ls = append(ls, d)
	}
	return ls, nil
}

// checkDNS (check 9): a pod on each node resolves the Service web through
// the name server in its resolv.conf (the kubelet's clusterDNS, the kube-dns
// Service), over UDP and over TCP; every answer is right, and at least one
// comes from the CoreDNS pod on the other node (NSID), i.e. through the
// ClusterIP across VXLAN.
func (k *tier) checkDNS(t *testing.T) {
	ctx := t.Context()
	web, err := k.service(ctx, "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	for i, from := range k.web {
		other := k.dns[1-i]
		for _, proto := range []string{"udp", "tcp"} {
			argv := []string{"testpod", "dns", "-n", "16", "web"}
			if proto == "tcp" {
				argv = []string{"testpod", "dns", "-tcp", "-n", "16", "web"}
			}
			out, err := k.exec(ctx, "default", from.Name, argv...)
			if err != nil {
				t.Errorf("%s: resolve web over %s: %v", from.Name, proto, err)
				continue
			}
			ls, err := parseDNS(out)
			if err != nil {
				t.Fatal(err)
			}
			fromOther := 0
			for _, l := range ls {
				if l.server != clusterDNS() || l.rcode != "NOERROR" || l.a != web.Spec.ClusterIP {
					t.Errorf("%s over %s: answer server=%s rcode=%s a=%s, want server=%s NOERROR a=%s",
						from.Name, proto, l.server, l.rcode, l.a, clusterDNS(), web.Spec.ClusterIP)
				}
				if l.nsid == other.Name {
					fromOther++
				}
			}
			if fromOther == 0 {
				t.Errorf("%s over %s: no answer from %s (the CoreDNS pod on %s) in %d queries:\n%s",
					from.Name, proto, other.Name, other.Spec.NodeName, len(ls), out)
			} else {
				t.Logf("%s (%s) over %s: %d answers right, %d of them from %s on %s", from.Name, from.Spec.NodeName, proto, len(ls), fromOther, other.Name, other.Spec.NodeName)
			}
		}
	}
}

// podNetNS opens the network namespace of the pod's first container, for
// sockets the test opens in it (the Pinger).
func (k *tier) podNetNS(ctx context.Context, p *corev1.Pod) (*lab.NetNS, error) {
	n := k.c.Node(p.Spec.NodeName)
	if n == nil || len(p.Status.ContainerStatuses) == 0 {
		return nil, fmt.Errorf("pod %s: no node or container", p.Name)
	}
	_, cid, _ := strings.Cut(p.Status.ContainerStatuses[0].ContainerID, "://")
	out, err := n.Output(ctx, "crictl", "--runtime-endpoint", "unix:///run/containerd/containerd.sock",
		"inspect", "--output", "go-template", "--template", "{{.info.pid}}", cid)
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", p.Name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		return nil, fmt.Errorf("pod %s: container pid %q: %w", p.Name, out, err)
	}
	path := fmt.Sprintf("/proc/%d/ns/net", pid)
	h, err := ns.GetNS(path)
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", p.Name, err)
	}
	return &lab.NetNS{Name: p.Name, Path: path, NetNS: h}, nil
}
