package agent_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/masq"
	"github.com/weftnet/weft/backend/underlay"
	"github.com/weftnet/weft/host"
	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/subnetenv"
	"github.com/weftnet/weft/test/testlog"
)

// The whole agent without root: leases go into a lease.MemStore, the
// datapath runs over the recording fake host, nftables is a recording
// fake, and the files go to a temporary directory. Nothing here needs a
// network namespace, netlink or nftables.

const tableNetConf = `{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan"}}`

// ownSubnet (and ownSubnet6 with IPv6) is where every table agent lands:
// its previous subnet.env names it.
var (
	ownSubnet  = netip.MustParsePrefix("10.244.1.0/24")
	ownSubnet6 = netip.MustParsePrefix("fc00:0:0:1::/64")
)

func peer(subnet, ip, mac, name string) lease.Lease {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		panic(err)
	}
	return lease.Lease{
		Subnet: netip.MustParsePrefix(subnet),
		Attrs: lease.Attrs{PublicIP: netip.MustParseAddr(ip), BackendType: "vxlan",
			BackendData: &lease.VXLANData{VNI: 1, VtepMAC: hw}, NodeName: name},
	}
}

var (
	peerA  = peer("10.244.2.0/24", "198.18.0.2", "0a:00:00:00:00:02", "a")
	peerA2 = peer("10.244.2.0/24", "198.18.0.2", "0a:00:00:00:00:22", "a") // A with a new device
	peerB  = peer("10.244.3.0/24", "198.18.0.3", "0a:00:00:00:00:03", "b")
	peerC  = peer("10.244.4.0/24", "198.18.0.4", "0a:00:00:00:00:04", "c")
)

// Golden kernel lines of one programmed peer.
var (
	linesA = []string{
		"fdb 0a:00:00:00:00:02 dev flannel.1 self dst 198.18.0.2 permanent",
		"neigh 10.244.2.0 lladdr 0a:00:00:00:00:02 dev flannel.1 permanent",
		"route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 proto 119 onlink metric 717826",
	}
	linesA2 = []string{
		"fdb 0a:00:00:00:00:22 dev flannel.1 self dst 198.18.0.2 permanent",
		"neigh 10.244.2.0 lladdr 0a:00:00:00:00:22 dev flannel.1 permanent",
		"route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 proto 119 onlink metric 717826",
	}
	linesB = []string{
		"fdb 0a:00:00:00:00:03 dev flannel.1 self dst 198.18.0.3 permanent",
		"neigh 10.244.3.0 lladdr 0a:00:00:00:00:03 dev flannel.1 permanent",
		"route 10.244.3.0/24 via 10.244.3.0 dev flannel.1 proto 119 onlink metric 717827",
	}
	linesC = []string{
		"fdb 0a:00:00:00:00:04 dev flannel.1 self dst 198.18.0.4 permanent",
		"neigh 10.244.4.0 lladdr 0a:00:00:00:00:04 dev flannel.1 permanent",
		"route 10.244.4.0/24 via 10.244.4.0 dev flannel.1 proto 119 onlink metric 717828",
	}
)

func join(groups ...[]string) []string {
	var out []string
	for _, g := range groups {
		out = append(out, g...)
	}
	slices.Sort(out)
	return out
}

func TestTable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		before []lease.Lease // in the store before the agent starts
		start  []string      // kernel lines once the agent is ready
		change func(t *testing.T, n *tableNode)
		want   []string // kernel lines after change
	}{{
		name:   "peer added",
		before: []lease.Lease{peerA},
		start:  linesA,
		change: func(t *testing.T, n *tableNode) { n.store.PutPeer(peerB) },
		want:   join(linesA, linesB),
	}, {
		name:   "peer's VtepMAC changed: the old FDB entry goes",
		before: []lease.Lease{peerA, peerB},
		start:  join(linesA, linesB),
		change: func(t *testing.T, n *tableNode) { n.store.PutPeer(peerA2) },
		want:   join(linesA2, linesB),
	}, {
		name:   "peer removed",
		before: []lease.Lease{peerA, peerB},
		start:  join(linesA, linesB),
		change: func(t *testing.T, n *tableNode) { n.store.Remove(peerB.Key()) },
		want:   linesA,
	}, {
		name:   "peer lease expired",
		before: []lease.Lease{peerA, peerB},
		start:  join(linesA, linesB),
		change: func(t *testing.T, n *tableNode) { n.store.Expire(peerA.Key()) },
		want:   linesB,
	}, {
		name:   "corrupt values skipped, other peers kept",
		before: []lease.Lease{peerA, peerB},
		start:  join(linesA, linesB),
		change: func(t *testing.T, n *tableNode) {
			// A new key with a corrupt value, then B's value spoilt: B is
			// gone as far as routing goes (as the etcd store reports it).
			for key, value := range map[string]string{
				"10.244.9.0-24": `{"PublicIP":`,
				peerB.Key():     `{"PublicIP":"198.18.0.3","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"nonsense"}}`,
			} {
				if err := n.store.PutRaw(key, []byte(value)); err == nil {
					t.Fatalf("PutRaw %s %s: accepted", key, value)
				}
			}
			n.store.PutPeer(peerC) // the watch goes on after the corrupt values
		},
		want: join(linesA, linesC),
	}, {
		name:   "agent restarted: same subnet, no flush, entries kept",
		before: []lease.Lease{peerA, peerB},
		start:  join(linesA, linesB),
		change: func(t *testing.T, n *tableNode) {
			n.stop(t)
			n.fake.ResetOps()
			n.store.PutPeer(peerC) // while the agent is down
			n.start(t)
			if got := n.ag.Lease().Subnet; got != ownSubnet {
				t.Errorf("subnet after restart %s, want %s", got, ownSubnet)
			}
			for _, op := range n.fake.Ops() {
				if strings.Contains(op, " del ") || strings.HasPrefix(op, "link add") {
					t.Errorf("restart wrote %q: a restarted agent reconciles, it does not flush or recreate", op)
				}
			}
		},
		want: join(linesA, linesB, linesC),
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := newTableNode(t)
			for _, l := range tc.before {
				n.store.PutPeer(l)
			}
			n.start(t)
			n.checkFiles(t)
			n.wantLines(t, "start", tc.start)
			tc.change(t, n)
			n.wantLines(t, "after the change", tc.want)
			if got := n.ag.Lease().Subnet; got != ownSubnet {
				t.Errorf("lease %s, want %s", got, ownSubnet)
			}
			n.stop(t)
		})
	}
}

// The nftables work with and without the flags: without --ip-masq the
// masquerade rules a previous run may have left are deleted; without
// --iptables-forward-rules so are the FORWARD accepts.
func TestTableRules(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ipMasq, forward bool
		want            []string
	}{
		{false, true, []string{
			"ensure-ra-drop flannel.1",
			"delete",
			"ensure-forward 10.244.0.0/16",
			"ensure-ra-drop flannel.1",
			"forward-blockers 10.244.0.0/16",
		}},
		{true, false, []string{
			"ensure-ra-drop flannel.1",
			"delete-forward",
			"ensure 10.244.0.0/16 10.244.1.0/24 port 0",
			"ensure-ra-drop flannel.1",
			"forward-blockers 10.244.0.0/16",
		}},
	} {
		t.Run(fmt.Sprintf("ip-masq=%v,forward-rules=%v", tc.ipMasq, tc.forward), func(t *testing.T) {
			t.Parallel()
			n := newTableNode(t)
			n.cfg.IPMasq, n.cfg.ForwardRules = tc.ipMasq, tc.forward
			n.start(t)
			if d := cmp.Diff(tc.want, n.masq.calls()); d != "" {
				t.Errorf("nftables calls (-want +got):\n%s", d)
			}
			n.checkFiles(t)
			n.stop(t)
		})
	}
}

// Without a network config the agent waits, unready, with a stale conflist
// of ours withdrawn (after a reboot subnet.env is gone); once the config
// appears it gets ready and puts the conflist back.
func TestTableWaitsForConfig(t *testing.T) {
	t.Parallel()
	n := newTableNode(t)
	if err := os.Remove(n.cfg.SubnetFile); err != nil {
		t.Fatal(err)
	}
	nw, _ := n.store.NetworkConfig(t.Context())
	n.store.SetConfig(nil)
	conflist := filepath.Join(n.cfg.CNIConfDir, "10-weft.conflist")
	if err := os.MkdirAll(n.cfg.CNIConfDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conflist, []byte(agent.DefaultConflist), 0o644); err != nil {
		t.Fatal(err)
	}
	n.configRetry = 10 * time.Millisecond
	n.launch(t)
	n.eventually(t, "stale conflist withdrawn", func() error {
		if _, err := os.Stat(conflist); !os.IsNotExist(err) {
			return fmt.Errorf("conflist still there (%v)", err)
		}
		return nil
	})
	if ok, _ := n.ag.Ready(); ok {
		t.Fatal("ready without a network config")
	}
	n.store.SetConfig(nw)
	n.waitReady(t)
	if b, err := os.ReadFile(conflist); err != nil || string(b) != agent.DefaultConflist {
		t.Fatalf("conflist after the config appeared: %q %v", b, err)
	}
	n.stop(t)
}

// tableNode is one agent over a MemStore, the fake host and fake nftables.
type tableNode struct {
	cfg   agent.Config
	store *lease.MemStore
	fake  *host.Fake
	masq  *recordingMasq
	ul    underlay.Underlay
	log   *slog.Logger
	// configRetry, when set, replaces the agent's 1s between config reads.
	configRetry time.Duration

	ag     *agent.Agent
	cancel context.CancelFunc
	done   chan error
}

func newTableNode(t *testing.T) *tableNode {
	return newFamilyNode(t, tableNetConf, netip.MustParsePrefix("198.18.0.1/24"))
}

// newFamilyNode is a table node with network config conf and an underlay
// eth0 with the given addresses (the first of each family is used), whose
// previous subnet.env names ownSubnet and ownSubnet6 for the families conf
// enables.
func newFamilyNode(t *testing.T, conf string, addrs ...netip.Prefix) *tableNode {
	t.Helper()
	nw, err := lease.ParseNetwork([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	n := &tableNode{store: lease.NewMemStore(nw), fake: host.NewFake(), masq: &recordingMasq{}}
	idx := n.fake.AddUnderlay("eth0", 1500, addrs[0], addrs[1:]...)
	n.ul = underlay.Underlay{Name: "eth0", Index: idx, MTU: 1500}
	for _, a := range addrs {
		switch {
		case a.Addr().Is4() && !n.ul.IP.IsValid():
			n.ul.IP, n.ul.PublicIP = a.Addr(), a.Addr()
		case a.Addr().Is6() && !n.ul.IPv6.IsValid():
			n.ul.IPv6, n.ul.PublicIPv6 = a.Addr(), a.Addr()
		}
	}
	n.log = testlog.New(t, slog.LevelInfo)
	dir := t.TempDir()
	n.cfg = agent.DefaultConfig()
	n.cfg.NodeName = "node1"
	n.cfg.SubnetFile = filepath.Join(dir, "run", "subnet.env")
	n.cfg.CNIConfDir = filepath.Join(dir, "net.d")
	if err := n.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// A previous run's subnet.env: the lease lands there (deterministic lines).
	prev := subnetenv.SubnetEnv{MTU: 1450}
	if nw.EnableIPv4 {
		prev.Network, prev.Subnet = nw.Network, netip.PrefixFrom(ownSubnet.Addr().Next(), 24)
	}
	if nw.EnableIPv6 {
		prev.IPv6Network, prev.IPv6Subnet = nw.IPv6Network, netip.PrefixFrom(ownSubnet6.Addr().Next(), 64)
	}
	if err := subnetenv.WriteSubnetEnv(n.cfg.SubnetFile, prev); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.stop(t) })
	return n
}

// start runs a new agent over the node's store, host and files, and waits
// until it is ready.
func (n *tableNode) start(t *testing.T) {
	t.Helper()
	n.launch(t)
	n.waitReady(t)
}

// launch runs a new agent without waiting for it.
func (n *tableNode) launch(t *testing.T) {
	t.Helper()
	ag, err := agent.New(n.cfg, agent.Deps{
		Leases: n.store,
		NewDatapath: func(c backend.Config) (agent.Datapath, error) {
			return backend.New(n.fake, c, n.log.With("component", "vxlan"))
		},
		Masq:     n.masq,
		Underlay: n.ul,
		Log:      n.log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if n.configRetry != 0 {
		agent.SetConfigRetry(ag, n.configRetry)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.ag, n.cancel, n.done = ag, cancel, make(chan error, 1)
	go func() { n.done <- ag.Run(ctx) }()
}

func (n *tableNode) waitReady(t *testing.T) {
	t.Helper()
	n.eventually(t, "ready", func() error {
		if ok, why := n.ag.Ready(); !ok {
			return errors.New(why)
		}
		return nil
	})
}

// eventually waits up to 10s for f to hold, failing early if the agent exits.
func (n *tableNode) eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		select {
		case exit := <-n.done:
			n.cancel = nil
			t.Fatalf("%s: agent exited: %v", what, exit)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s: %v", what, err)
		}
	}
}

// stop ends the agent as SIGTERM does and checks that Run returned nil.
func (n *tableNode) stop(t *testing.T) {
	if n.cancel == nil {
		return
	}
	n.cancel()
	n.cancel = nil
	select {
	case err := <-n.done:
		if err != nil {
			t.Errorf("agent returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("agent did not stop within 10s")
	}
}

// wantLines waits until the fake host's neighbour, FDB and route lines are want.
func (n *tableNode) wantLines(t *testing.T, when string, want []string) {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		got = strings.Split(n.fake.Lines("neigh", "fdb", "route"), "\n")
		if slices.Equal(got, want) {
			return
		}
	}
	t.Fatalf("kernel lines %s (-want +got):\n%s", when, cmp.Diff(want, got))
}

// checkFiles checks subnet.env, the conflist and the device address.
func (n *tableNode) checkFiles(t *testing.T) {
	t.Helper()
	wantEnv := fmt.Sprintf("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=%v\n", n.cfg.IPMasq)
	if b, err := os.ReadFile(n.cfg.SubnetFile); err != nil || string(b) != wantEnv {
		t.Errorf("subnet.env %q (%v), want %q", b, err, wantEnv)
	}
	if b, err := os.ReadFile(filepath.Join(n.cfg.CNIConfDir, "10-weft.conflist")); err != nil || string(b) != agent.DefaultConflist {
		t.Errorf("conflist %q (%v), want the default", b, err)
	}
	if got := n.fake.Lines("addr"); got != "addr 10.244.1.0/32 dev flannel.1\naddr 198.18.0.1/24 dev eth0" {
		t.Errorf("addresses:\n%s", got)
	}
}

// recordingMasq is a Masq that records its calls and finds nothing blocking.
type recordingMasq struct {
	mu  sync.Mutex
	log []string
}

func (m *recordingMasq) record(format string, args ...any) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log = append(m.log, fmt.Sprintf(format, args...))
	return nil
}

func (m *recordingMasq) calls() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.log)
}

func (m *recordingMasq) Ensure(r masq.Rules) error {
	if r.IPv6Network.IsValid() {
		return m.record("ensure %s %s %s %s port %d", r.Network, r.Subnet, r.IPv6Network, r.IPv6Subnet, r.VXLANPort)
	}
	return m.record("ensure %s %s port %d", r.Network, r.Subnet, r.VXLANPort)
}
func (m *recordingMasq) Delete() error { return m.record("delete") }
func (m *recordingMasq) EnsureForward(networks []netip.Prefix) error {
	s := make([]string, len(networks))
	for i, n := range networks {
		s[i] = n.String()
	}
	return m.record("ensure-forward %s", strings.Join(s, " "))
}
func (m *recordingMasq) DeleteForward() error { return m.record("delete-forward") }
func (m *recordingMasq) ForwardBlockers(network netip.Prefix) ([]masq.Blocker, error) {
	return nil, m.record("forward-blockers %s", network)
}
func (m *recordingMasq) EnsureRADrop(devices []string) error {
	return m.record("ensure-ra-drop %s", strings.Join(devices, " "))
}

// The VNI a network config gets when it names none (lease) is the one the
// datapath assumes when given none (backend): the two packages import nothing
// of each other, so this test is what keeps them equal.
func TestDefaultVNIsAgree(t *testing.T) {
	if backend.DefaultVNI != lease.DefaultVNI {
		t.Errorf("backend.DefaultVNI %d != lease.DefaultVNI %d", backend.DefaultVNI, lease.DefaultVNI)
	}
}

// A network config that enables a family the underlay has no address of
// stops the agent at start with an error naming the family, before any
// device, lease or file exists: never half a dual-stack network.
func TestTableRefusesFamilyWithoutUnderlayAddress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, conf string
		family     string
	}{
		{"dual stack on an IPv4-only underlay", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`, "IPv6"},
		{"IPv6-only on an IPv4-only underlay", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`, "IPv6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := newTableNode(t)
			nw, err := lease.ParseNetwork([]byte(tc.conf))
			if err != nil {
				t.Fatal(err)
			}
			n.store.SetConfig(nw)
			n.launch(t)
			var exit error
			select {
			case exit = <-n.done:
				n.cancel = nil
			case <-time.After(10 * time.Second):
				t.Fatal("agent did not refuse the config within 10s")
			}
			var nu *agent.NoUnderlayAddressError
			if !errors.As(exit, &nu) || nu.Family != tc.family || !strings.Contains(exit.Error(), "--public-ipv6") {
				t.Fatalf("agent exited with %v, want a NoUnderlayAddressError for %s naming --public-ipv6", exit, tc.family)
			}
			for _, op := range n.fake.Ops() {
				if strings.HasPrefix(op, "link add") {
					t.Errorf("a device was created: %q", op)
				}
			}
			if ls, _ := n.store.List(t.Context()); len(ls) != 0 {
				t.Errorf("leases taken: %v", ls)
			}
			if _, err := os.Stat(filepath.Join(n.cfg.CNIConfDir, "10-weft.conflist")); !os.IsNotExist(err) {
				t.Errorf("conflist installed (%v)", err)
			}
		})
	}
}

// dualPeer is a dual-stack lease as flanneld writes it: both subnets, both
// public addresses, one VtepMAC per device. v4 false makes it IPv6-only.
func dualPeer(i int, v4 bool) lease.Lease {
	l := lease.Lease{
		IPv6Subnet: netip.MustParsePrefix(fmt.Sprintf("fc00:0:0:%d::/64", i)),
		Attrs: lease.Attrs{PublicIPv6: netip.MustParseAddr(fmt.Sprintf("fd00::%d", i)), BackendType: "vxlan",
			BackendV6Data: &lease.VXLANData{VNI: 1, VtepMAC: net.HardwareAddr{0x0a, 0, 0, 0, 6, byte(i)}}},
	}
	if v4 {
		l.Subnet = netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i))
		l.Attrs.PublicIP = netip.MustParseAddr(fmt.Sprintf("198.18.0.%d", i))
		l.Attrs.BackendData = &lease.VXLANData{VNI: 1, VtepMAC: net.HardwareAddr{0x0a, 0, 0, 0, 0, byte(i)}}
	}
	return l
}

// v6Lines are the golden lines of IPv6 peer i on flannel-v6.1.
func v6Lines(i int) []string {
	return []string{
		fmt.Sprintf("fdb 0a:00:00:00:06:%02x dev flannel-v6.1 self dst fd00::%d permanent", i, i),
		fmt.Sprintf("neigh fc00:0:0:%d:: lladdr 0a:00:00:00:06:%02x dev flannel-v6.1 permanent", i, i),
		fmt.Sprintf("route fc00:0:0:%d::/64 via fc00:0:0:%d:: dev flannel-v6.1 proto 119 onlink metric %d", i, i, i),
	}
}

// The agent of a dual-stack network: both devices, each peer programmed on
// each (an IPv4-only peer, as an IPv4-only flannel node writes it, only on
// flannel.1), the v6 lease and subnet.env lines, rules for both families.
func TestTableDualStack(t *testing.T) {
	t.Parallel()
	n := newFamilyNode(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`,
		netip.MustParsePrefix("198.18.0.1/24"), netip.MustParsePrefix("fd00::1/64"))
	n.cfg.IPMasq = true
	n.store.PutPeer(dualPeer(2, true))
	n.start(t)
	l := n.ag.Lease()
	if l.Subnet != ownSubnet || l.IPv6Subnet != ownSubnet6 || l.Attrs.PublicIPv6 != netip.MustParseAddr("fd00::1") ||
		l.Attrs.BackendV6Data == nil || l.Attrs.BackendV6Data.VtepMAC.String() == l.Attrs.BackendData.VtepMAC.String() {
		t.Fatalf("lease %+v: want both subnets, PublicIPv6 and a second VtepMAC", l)
	}
	// 198.18.0.2's lines are linesA but for the MAC and name: build them.
	lines2 := []string{
		"fdb 0a:00:00:00:00:02 dev flannel.1 self dst 198.18.0.2 permanent",
		"neigh 10.244.2.0 lladdr 0a:00:00:00:00:02 dev flannel.1 permanent",
		"route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 proto 119 onlink metric 717826",
	}
	// The kernel's prefix routes of the two IPv6 addresses.
	kernelRoute := []string{"route fc00:0:0:1::/128 dev flannel-v6.1 proto kernel metric 256", "route fd00::/64 dev eth0 proto kernel metric 256"}
	n.wantLines(t, "start", join(lines2, v6Lines(2), kernelRoute))
	v4only := peerB // an IPv4-only flannel node
	n.store.PutPeer(v4only)
	n.store.PutPeer(dualPeer(4, true))
	lines4 := []string{
		"fdb 0a:00:00:00:00:04 dev flannel.1 self dst 198.18.0.4 permanent",
		"neigh 10.244.4.0 lladdr 0a:00:00:00:00:04 dev flannel.1 permanent",
		"route 10.244.4.0/24 via 10.244.4.0 dev flannel.1 proto 119 onlink metric 717828",
	}
	n.wantLines(t, "after two more peers", join(lines2, v6Lines(2), linesB, lines4, v6Lines(4), kernelRoute))
	n.store.Remove(dualPeer(2, true).Key())
	n.wantLines(t, "after a removal", join(linesB, lines4, v6Lines(4), kernelRoute))

	wantEnv := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n"
	if b, err := os.ReadFile(n.cfg.SubnetFile); err != nil || string(b) != wantEnv {
		t.Errorf("subnet.env %q (%v), want %q", b, err, wantEnv)
	}
	if got := n.fake.Lines("addr"); got != "addr 10.244.1.0/32 dev flannel.1\naddr 198.18.0.1/24 dev eth0\naddr fc00:0:0:1::/128 dev flannel-v6.1 nodad\naddr fd00::1/64 dev eth0" {
		t.Errorf("addresses:\n%s", got)
	}
	wantMasq := []string{
		"ensure-ra-drop flannel.1 flannel-v6.1",
		"ensure 10.244.0.0/16 10.244.1.0/24 fc00::/48 fc00:0:0:1::/64 port 0",
		"ensure-forward 10.244.0.0/16 fc00::/48",
		"ensure-ra-drop flannel.1 flannel-v6.1",
		"forward-blockers 10.244.0.0/16",
		"forward-blockers fc00::/48",
	}
	if d := cmp.Diff(wantMasq, n.masq.calls()); d != "" {
		t.Errorf("nftables calls (-want +got):\n%s", d)
	}
	// A restart keeps both subnets and rewrites nothing.
	n.stop(t)
	n.fake.ResetOps()
	n.start(t)
	if got := n.ag.Lease(); got.Subnet != ownSubnet || got.IPv6Subnet != ownSubnet6 {
		t.Errorf("after restart: lease %s %s", got.Subnet, got.IPv6Subnet)
	}
	for _, op := range n.fake.Ops() {
		if strings.Contains(op, " del ") || strings.HasPrefix(op, "link add") {
			t.Errorf("restart wrote %q", op)
		}
	}
	n.stop(t)
}

// The agent of an IPv6-only network: flannel-v6.1 alone, an IPv6-only lease
// (key 0.0.0.0-0&..., no PublicIP, no BackendData), subnet.env with the IPv6
// pair only, peers programmed from their IPv6 part.
func TestTableIPv6Only(t *testing.T) {
	t.Parallel()
	n := newFamilyNode(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`,
		netip.MustParsePrefix("fd00::1/64"))
	n.store.PutPeer(dualPeer(2, false))
	n.start(t)
	l := n.ag.Lease()
	if l.Subnet.IsValid() || l.IPv6Subnet != ownSubnet6 || l.Attrs.PublicIP.IsValid() || l.Attrs.BackendData != nil ||
		l.Key() != "0.0.0.0-0&fc00:0:0:1::-64" {
		t.Fatalf("lease %s %+v: want an IPv6-only lease", l.Key(), l.Attrs)
	}
	kernelRoute := []string{"route fc00:0:0:1::/128 dev flannel-v6.1 proto kernel metric 256", "route fd00::/64 dev eth0 proto kernel metric 256"}
	n.wantLines(t, "start", join(v6Lines(2), kernelRoute))
	n.store.PutPeer(dualPeer(3, false))
	n.wantLines(t, "after a peer joined", join(v6Lines(2), v6Lines(3), kernelRoute))
	n.store.Remove(dualPeer(2, false).Key())
	n.wantLines(t, "after a peer left", join(v6Lines(3), kernelRoute))
	wantEnv := "FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
	if b, err := os.ReadFile(n.cfg.SubnetFile); err != nil || string(b) != wantEnv {
		t.Errorf("subnet.env %q (%v), want %q", b, err, wantEnv)
	}
	for _, op := range n.fake.Ops() {
		if strings.Contains(op, "flannel.1") {
			t.Errorf("IPv6-only agent touched flannel.1: %q", op)
		}
	}
	if d := cmp.Diff([]string{"ensure-ra-drop flannel-v6.1", "delete", "ensure-forward fc00::/48", "ensure-ra-drop flannel-v6.1", "forward-blockers fc00::/48"}, n.masq.calls()); d != "" {
		t.Errorf("nftables calls (-want +got):\n%s", d)
	}
	n.stop(t)
	n.start(t)
	if got := n.ag.Lease(); got.Key() != l.Key() {
		t.Errorf("after restart: lease %s, want %s", got.Key(), l.Key())
	}
	n.stop(t)
}
