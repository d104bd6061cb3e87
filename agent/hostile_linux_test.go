package agent_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/lease/etcdstore/etcdtest"
	"github.com/weftnet/weft/test/nettest"
)

// Conditions of real nodes that the happy-path tests do not model.

// Two agents given the same --node-name from different IPs: the second takes
// the lease over (for it, the name says "my IP changed"); the first must not
// fight back, and must say so: /readyz 503 naming both IPs and the fix, a
// metric, its datapath as it was, and no lease deleted.
func TestDuplicateNodeNameIsReportedNotFought(t *testing.T) {
	nettest.Privileged(t)
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) }) // registered first: runs after every other cleanup
	c := newCluster(t, etcdtest.Start(t))
	n1, n2 := c.addNode(backend.ModeProactive), c.addNode(backend.ModeProactive)
	n1.cfg.NodeName, n2.cfg.NodeName = "twin", "twin"
	n1.start()
	sub := n1.ag.Lease().Subnet
	n2.start()
	t.Cleanup(func() { n1.stop(); n2.stop() })

	eventually(t, 10*time.Second, "node1 reports the conflict", func() error {
		ok, why := n1.ag.Ready()
		if ok {
			return fmt.Errorf("node1 still ready")
		}
		for _, want := range []string{n1.ip, n2.ip, `"twin"`, "--node-name"} {
			if !strings.Contains(why, want) {
				return fmt.Errorf("readiness reason %q lacks %q", why, want)
			}
		}
		return nil
	})
	if err := n1.exited(); err != nil {
		t.Fatalf("node1 must keep running (datapath in place): %v", err)
	}
	if got := counter(t, n1.metrics, "weft_lease_conflicts_total"); got != 1 {
		t.Errorf("weft_lease_conflicts_total = %v, want 1", got)
	}
	// node1 does not take the lease back and deletes nothing.
	time.Sleep(2 * time.Second)
	kvs, err := c.cli.Get(t.Context(), c.prefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs.Kvs) != 1 || !strings.Contains(string(kvs.Kvs[0].Value), `"PublicIP":"`+n2.ip+`"`) {
		t.Fatalf("leases after the conflict: %v, want one, node2's", kvs.Kvs)
	}
	if out, _ := n1.exec("ip", "-4", "addr", "show", "dev", "flannel.1"); !strings.Contains(out, sub.Addr().String()+"/32") {
		t.Errorf("node1's flannel.1 lost its address %s:\n%s", sub.Addr(), out)
	}
}

// After a reboot /run is empty and /etc/cni/net.d is not: the agent removes
// its own conflist at start (so the runtime does not report the network
// ready) and installs it again once subnet.env is written. Other conflists
// stay.
func TestConflistWithdrawnUntilSubnetEnv(t *testing.T) {
	nettest.Privileged(t)
	c := newCluster(t, etcdtest.Start(t))
	// No network config yet: the agent waits, and the window is observable.
	if _, err := c.cli.Delete(t.Context(), c.prefix+"/config"); err != nil {
		t.Fatal(err)
	}
	n := c.addNode(backend.ModeProactive)
	ours := filepath.Join(n.cfg.CNIConfDir, "10-weft.conflist")
	other := filepath.Join(n.cfg.CNIConfDir, "20-other.conflist")
	if err := os.MkdirAll(n.cfg.CNIConfDir, 0o755); err != nil {
		t.Fatal(err)
	}
	const otherConf = `{"name":"other","cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}`
	for path, data := range map[string]string{ours: agent.DefaultConflist, other: otherConf} {
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(n.cfg.SubnetFile); !os.IsNotExist(err) {
		t.Fatalf("subnet.env must be missing: %v", err)
	}
	n.launch()
	t.Cleanup(n.stop)
	eventually(t, 5*time.Second, "our conflist removed", func() error {
		if _, err := os.Stat(ours); !os.IsNotExist(err) {
			return fmt.Errorf("%s still there (%v)", ours, err)
		}
		return n.exited()
	})
	if b, err := os.ReadFile(other); err != nil || string(b) != otherConf {
		t.Fatalf("another network's conflist was touched: %q %v", b, err)
	}
	if ok, _ := n.ag.Ready(); ok {
		t.Fatal("ready without a network config")
	}
	if _, err := c.cli.Put(t.Context(), c.prefix+"/config", testNetConf); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "ready with the conflist back", func() error {
		if ok, why := n.ag.Ready(); !ok {
			return fmt.Errorf("not ready: %s", why)
		}
		b, err := os.ReadFile(ours)
		if err != nil || string(b) != agent.DefaultConflist {
			return fmt.Errorf("conflist: %q %v", b, err)
		}
		return nil
	})
}

// Rules flushed under a running agent (an operator, a firewall reload, an
// iptables-restore) come back within the resync interval (masquerade and the
// router-advertisement guard on flannel.1), and a FORWARD
// chain made after the agent started (Docker starting later) gets weft's
// accepts too.
func TestRulesComeBackWithinResync(t *testing.T) {
	nettest.Privileged(t)
	c := newCluster(t, etcdtest.Start(t))
	n := c.addNode(backend.ModeProactive)
	n.cfg.ResyncInterval = 300 * time.Millisecond
	n.start()
	if out, err := n.exec("nft", "list", "table", "ip", "weft"); err != nil {
		t.Fatalf("no ip weft table with --ip-masq: %v\n%s", err, out)
	}
	for _, table := range [][]string{{"ip", "weft"}, {"ip6", "weft-ra"}} {
		if out, err := n.exec("nft", "delete", "table", table[0], table[1]); err != nil {
			t.Fatalf("delete table %v: %v\n%s", table, err, out)
		}
	}
	if out, err := n.exec("iptables", "-P", "FORWARD", "DROP"); err != nil {
		t.Fatalf("iptables -P FORWARD DROP: %v\n%s", err, out)
	}
	eventually(t, 5*time.Second, "masquerade table and forward accepts back", func() error {
		if out, err := n.exec("nft", "list", "table", "ip", "weft"); err != nil {
			return fmt.Errorf("ip weft: %v: %s", err, out)
		}
		if out, err := n.exec("nft", "list", "table", "ip6", "weft-ra"); err != nil || !strings.Contains(out, `iifname "flannel.1"`) {
			return fmt.Errorf("ip6 weft-ra: %v: %s", err, out)
		}
		out, err := n.exec("iptables", "-S", "FORWARD")
		if err != nil || !strings.Contains(out, "-s 10.244.0.0/16") || !strings.Contains(out, "-d 10.244.0.0/16") {
			return fmt.Errorf("FORWARD: %v: %s", err, out)
		}
		return nil
	})
	if ok, why := n.ag.Ready(); !ok {
		t.Errorf("not ready after the repair: %s", why)
	}
}

// A base chain of another table on the forward hook with policy drop
// (firewalld's shape) drops pod traffic whatever weft accepts in its own
// table or in iptables' FORWARD: /readyz says which chain, a gauge counts it,
// and readiness returns when it is gone.
func TestForeignForwardDropIsNamed(t *testing.T) {
	nettest.Privileged(t)
	c := newCluster(t, etcdtest.Start(t))
	n := c.addNode(backend.ModeProactive)
	n.cfg.ResyncInterval = 300 * time.Millisecond
	n.start()
	for _, args := range [][]string{
		{"nft", "add", "table", "inet", "fwtest"},
		{"nft", "add", "chain", "inet", "fwtest", "filter_FORWARD", "{ type filter hook forward priority 10 ; policy drop ; }"},
	} {
		if out, err := n.exec(args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	eventually(t, 5*time.Second, "the drop chain named on /readyz", func() error {
		ok, why := n.ag.Ready()
		if ok || !strings.Contains(why, "inet fwtest") || !strings.Contains(why, "filter_FORWARD") {
			return fmt.Errorf("ready=%v %q", ok, why)
		}
		return nil
	})
	if got := counter(t, n.metrics, "weft_forward_blockers"); got != 1 {
		t.Errorf("weft_forward_blockers = %v, want 1", got)
	}
	if out, err := n.exec("nft", "delete", "table", "inet", "fwtest"); err != nil {
		t.Fatalf("delete table: %v\n%s", err, out)
	}
	eventually(t, 5*time.Second, "ready again", func() error {
		if ok, why := n.ag.Ready(); !ok {
			return fmt.Errorf("%s", why)
		}
		return nil
	})
}
