package plugin_test

import (
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weftnet/weft/test/nettest"
)

// TestPodTraffic: two pods on one node reach each other and the gateway, and
// a pod reaches itself through a DNAT to its own address (portmap's hostPort
// on the gateway address). With br_netfilter the DNATed packet is bridged
// back out of the port it came in on, which the bridge only does with
// hairpin on.
func TestPodTraffic(t *testing.T) {
	nettest.Privileged(t)
	n := newNode(t, "10.244.1.1/24")
	// Make the DNATed packet take the bridged path (per-netns sysctl).
	if err := n.in(func() error {
		return os.WriteFile("/proc/sys/net/bridge/bridge-nf-call-iptables", []byte("1"), 0o644)
	}); err != nil {
		t.Skipf("br_netfilter not available: %v", err)
	}
	list := n.conflist(t, "", nil)
	pod1, pod2 := nettest.NewNS(t, "cp"), nettest.NewNS(t, "cp")
	rt1, rt2 := rtFor("ctr-one", pod1), rtFor("ctr-two", pod2)
	rt1.CapabilityArgs = map[string]any{"portMappings": []map[string]any{
		{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"},
	}}
	ip := map[string]string{}
	for _, c := range []struct {
		name string
		rt   *libcni.RuntimeConf
	}{{"pod1", rt1}, {"pod2", rt2}} {
		res, err := n.add(list, c.rt)
		if err != nil {
			t.Fatalf("ADD %s: %v", c.name, err)
		}
		t.Cleanup(func() {
			if err := n.del(list, c.rt); err != nil {
				t.Errorf("DEL %s: %v", c.name, err)
			}
		})
		r, err := current.NewResultFromResult(res)
		if err != nil {
			t.Fatal(err)
		}
		ip[c.name] = r.IPs[0].Address.IP.String()
	}
	ping(t, pod1, ip["pod2"])
	ping(t, pod2, ip["pod1"])
	ping(t, pod1, "10.244.1.1")
	ping(t, pod2, "10.244.1.1")

	// A listener in pod1; pod1 (hairpin) and pod2 connect to the gateway's
	// hostPort, which portmap DNATs to pod1:8080.
	serveHello(t, pod1, ":8080")
	want := "hello from " + ip["pod1"] + ":8080"
	if got := dialHello(t, pod1, "10.244.1.1:18080"); !strings.HasPrefix(got, want) {
		t.Fatalf("pod1 through the DNAT to itself got %q, want %q", got, want)
	}
	if got := dialHello(t, pod2, "10.244.1.1:18080"); !strings.HasPrefix(got, want) {
		t.Fatalf("pod2 through the DNAT got %q, want %q", got, want)
	}
}

// serveHello listens in pod and answers every connection with its local address.
func serveHello(t *testing.T, pod *nettest.NS, addr string) {
	t.Helper()
	var ln net.Listener
	if err := pod.Do(func(ns.NetNS) (err error) {
		ln, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "hello from "+c.LocalAddr().String()+"\n")
			_ = c.Close()
		}
	}()
}

// dialHello connects from pod to addr and returns what the server says.
func dialHello(t *testing.T, pod *nettest.NS, addr string) string {
	t.Helper()
	var got string
	err := pod.Do(func(ns.NetNS) error {
		// The timeouts only bound a broken run (SYN retries last ~2 min).
		c, err := net.DialTimeout("tcp4", addr, 10*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c)
		got = string(b)
		return err
	})
	if err != nil {
		t.Fatalf("connect from %s to %s: %v", pod.Name, addr, err)
	}
	return got
}

// TestBridgeAddressChange: a bridge still carrying an old subnet is fixed when
// no pod is attached, and refused (code 7, nothing changed) when pods are.
func TestBridgeAddressChange(t *testing.T) {
	nettest.Privileged(t)
	n := newNode(t, "10.244.1.1/24")
	list := n.conflist(t, "", nil)
	pod1 := nettest.NewNS(t, "cp")
	rt1 := rtFor("ctr-old", pod1)
	if _, err := n.add(list, rt1); err != nil {
		t.Fatal(err)
	}
	n.writeSubnetEnv(t, "10.244.7.1/24") // weftd got another subnet
	pod2 := nettest.NewNS(t, "cp")
	rt2 := rtFor("ctr-new", pod2)
	before, beforeV := n.ipFiles(t), n.veths(t)
	_, err := n.add(list, rt2)
	wantCode(t, err, 7, "still attached")
	if got := n.ipFiles(t); len(got) != len(before) || len(n.veths(t)) != len(beforeV) {
		t.Fatalf("refused ADD left state: files %v veths %v", got, n.veths(t))
	}
	if err := n.del(list, rt1); err != nil {
		t.Fatal(err)
	}
	res, err := n.add(list, rt2)
	if err != nil {
		t.Fatalf("ADD with no ports attached: %v", err)
	}
	r, _ := current.NewResultFromResult(res)
	if !strings.HasPrefix(r.IPs[0].Address.IP.String(), "10.244.7.") {
		t.Fatalf("address %s not from the new subnet", r.IPs[0].Address.IP)
	}
	ping(t, pod2, "10.244.7.1")
	if err := n.del(list, rt2); err != nil {
		t.Fatal(err)
	}
}
