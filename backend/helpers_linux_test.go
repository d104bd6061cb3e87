package backend

import (
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
	"github.com/weftnet/weft/test/nettest"
	"github.com/weftnet/weft/test/testlog"
)

// Privileged test topology (two nodes, one veth as the underlay):
//
//	 bk-<n1>                                    bk-<n2>
//	 flannel.1 10.244.1.0/32                    flannel.1 10.244.2.0/32
//	 eth0 198.18.0.1/24 ───────── veth ───────── eth0 198.18.0.2/24

// recorder is an Observer that keeps what it saw.
type recorder struct {
	mu         sync.Mutex
	answered   map[string][]time.Duration
	ignored    map[string]int
	reconciled []error
}

func (r *recorder) observer() Observer {
	return Observer{
		MissAnswered: func(kind string, d time.Duration) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.answered[kind] = append(r.answered[kind], d)
		},
		MissIgnored: func(kind string) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.ignored[kind]++
		},
		Reconciled: func(err error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.reconciled = append(r.reconciled, err)
		},
	}
}

func (r *recorder) answers(kind string) []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.answered[kind])
}

func (r *recorder) reconciles() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reconciled)
}

// node is one side of the topology.
type node struct {
	ns       *nettest.NS
	h        *netlink.Handle // the test's own view and setup
	host     *host.NS        // the datapath's
	pub      netip.Addr
	lease    netip.Prefix
	network  netip.Prefix // the config's Network; zero: 10.244.0.0/16
	underlay int
	wrap     host.Host // used instead of host when set
	v        *VXLAN
	dev      Device
	rec      *recorder
	stop     func()
}

// twoNodes builds the topology; the datapaths are started by node.start.
func twoNodes(t *testing.T) (*node, *node) {
	t.Helper()
	nettest.Privileged(t)
	a, b := nettest.NewNS(t, "bk"), nettest.NewNS(t, "bk")
	nettest.Veth(t, a, "eth0", "198.18.0.1/24", b, "eth0", "198.18.0.2/24")
	mk := func(n *nettest.NS, pub, lease string) *node {
		h := nettest.Handle(t, n.NetNS)
		l, err := h.LinkByName("eth0")
		if err != nil {
			t.Fatalf("find eth0: %v", err)
		}
		hn, err := host.Open(n.Path)
		if err != nil {
			t.Fatalf("open %s: %v", n.Path, err)
		}
		t.Cleanup(func() { _ = hn.Close() })
		return &node{ns: n, h: h, host: hn, pub: netip.MustParseAddr(pub), lease: netip.MustParsePrefix(lease), underlay: l.Attrs().Index}
	}
	return mk(a, "198.18.0.1", "10.244.1.0/24"), mk(b, "198.18.0.2", "10.244.2.0/24")
}

// config is the node's datapath configuration.
func (n *node) config(mode Mode) Config {
	network := n.network
	if !network.IsValid() {
		network = netip.MustParsePrefix("10.244.0.0/16")
	}
	return Config{
		Device:         DeviceConfig{LocalIP: n.pub, UnderlayIndex: n.underlay, UnderlayMTU: 1500},
		Mode:           mode,
		Network:        network,
		ResyncInterval: time.Hour, // tests trigger repairs themselves
	}
}

// ensure creates the node's datapath (not yet running) and its device.
func (n *node) ensure(t *testing.T, cfg Config) {
	t.Helper()
	n.rec = &recorder{answered: map[string][]time.Duration{}, ignored: map[string]int{}}
	cfg.Observer = n.rec.observer()
	log := testlog.New(t, slog.LevelDebug).With("node", n.ns.Name)
	var nl host.Host = n.host
	if n.wrap != nil {
		nl = n.wrap
	}
	v, err := New(nl, cfg, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if n.dev, err = v.EnsureDevice(); err != nil {
		t.Fatalf("EnsureDevice: %v", err)
	}
	if err := v.SetAddress(n.lease); err != nil {
		t.Fatalf("SetAddress: %v", err)
	}
	n.v = v
}

// peer is how other nodes see n.
func (n *node) peer() Peer {
	return Peer{Subnet: n.lease, PublicIP: n.pub, VtepMAC: n.dev.MAC, Name: n.ns.Name}
}

// run starts Run until the test ends (or stop is called) and waits for the
// first reconcile.
func (n *node) run(t *testing.T) {
	t.Helper()
	n.stop = startRun(t, n.v)
	t.Cleanup(n.stop)
	waitFor(t, "first reconcile", func() bool { return n.rec.reconciles() > 0 })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var lossRE = regexp.MustCompile(`(\d+(?:\.\d+)?)% packet loss`)

// ping runs ping in n's namespace and returns the loss percentage.
func (n *node) ping(t *testing.T, dst netip.Addr, args ...string) float64 {
	t.Helper()
	if dst.Is6() {
		args = append([]string{"-6"}, args...)
	}
	out, err := n.ns.Exec(t, "ping", append(append([]string{"-n"}, args...), dst.String())...)
	m := lossRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ping %s: %v: %s", dst, err, out)
	}
	loss, _ := strconv.ParseFloat(m[1], 64)
	if loss > 0 {
		t.Logf("ping %s from %s: %s", dst, n.ns.Name, out)
	}
	return loss
}

// mustPing fails unless a short ping gets through with no loss.
func (n *node) mustPing(t *testing.T, dst netip.Addr) {
	t.Helper()
	if loss := n.ping(t, dst, "-c", "3", "-i", "0.2", "-W", "1"); loss != 0 {
		t.Fatalf("ping %s from %s: %v%% loss", dst, n.ns.Name, loss)
	}
}

// entries renders n's kernel neighbour, FDB and route entries on its device
// (flannel.1, or flannel-v6.1 for an IPv6 node), of its family.
type kernelEntries struct {
	neigh map[netip.Addr]string // ip → mac
	fdb   map[string]netip.Addr // mac → dst
	route map[netip.Prefix]string
}

func (n *node) entries(t *testing.T) kernelEntries {
	t.Helper()
	name, family := n.devName(), n.family()
	l, err := n.h.LinkByName(name)
	if err != nil {
		t.Fatalf("find %s: %v", name, err)
	}
	idx := l.Attrs().Index
	e := kernelEntries{neigh: map[netip.Addr]string{}, fdb: map[string]netip.Addr{}, route: map[netip.Prefix]string{}}
	neighs, err := n.h.NeighList(idx, family)
	if err != nil {
		t.Fatalf("list neighbours: %v", err)
	}
	for _, x := range neighs {
		// Not NOARP ones: the kernel's multicast entries (on an IPv6
		// device, ff02::16 for its MLD reports).
		if len(x.HardwareAddr) > 0 && x.State&netlink.NUD_NOARP == 0 {
			ip, _ := netip.AddrFromSlice(x.IP)
			e.neigh[ip.Unmap()] = x.HardwareAddr.String()
		}
	}
	fdbs, err := n.h.NeighList(idx, unix.AF_BRIDGE)
	if err != nil {
		t.Fatalf("list fdb: %v", err)
	}
	for _, x := range fdbs {
		if ip, ok := netip.AddrFromSlice(x.IP); ok {
			e.fdb[x.HardwareAddr.String()] = ip.Unmap()
		}
	}
	routes, err := n.h.RouteListFiltered(family, &netlink.Route{LinkIndex: idx}, netlink.RT_FILTER_OIF)
	if err != nil {
		t.Fatalf("list routes: %v", err)
	}
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL {
			continue // an IPv6 address's prefix route
		}
		p, _ := host.IPNetPrefix(r.Dst)
		if r.Gw != nil {
			e.route[p] = "via " + r.Gw.String()
		} else {
			e.route[p] = "dev"
		}
	}
	return e
}

// devName is the node's VXLAN device: flannel.1, or flannel-v6.1 for IPv6.
func (n *node) devName() string {
	if n.pub.Is6() {
		return DeviceNameV6(1)
	}
	return DeviceName(1)
}

// family is the node's address family.
func (n *node) family() int {
	if n.pub.Is6() {
		return unix.AF_INET6
	}
	return unix.AF_INET
}
