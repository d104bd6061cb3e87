package backend

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
)

func lines(s string) []string { return strings.Split(s, "\n") }

func TestEnsureDeviceOverFake(t *testing.T) {
	f := host.NewFake()
	v := newFakeVXLAN(t, f, ModeProactive, Observer{})
	dev, err := v.EnsureDevice()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.SetAddress(netip.MustParsePrefix("10.244.1.0/24")); err != nil {
		t.Fatal(err)
	}
	if dev.Name != "flannel.1" || dev.MTU != 1450 || dev.MAC.String() != "0e:00:00:00:00:01" {
		t.Errorf("device %+v", dev)
	}
	want := []string{
		"link add flannel.1 vxlan id 1 local 198.18.0.1 dev eth0 port 8472 nolearning l2miss mtu 1450",
		"link set flannel.1 addrgenmode 1",
		"sysctl net/ipv6/conf/flannel.1/accept_ra = 0",
		"neightbl flannel.1 app_solicit 3",
		"link set flannel.1 up",
		"addr replace 10.244.1.0/32 dev flannel.1",
	}
	if d := cmp.Diff(want, f.Ops()); d != "" {
		t.Errorf("ops (-want +got):\n%s", d)
	}
	// A second call (a reconcile) finds everything right: no link writes.
	f.ResetOps()
	if _, err := v.EnsureDevice(); err != nil {
		t.Fatal(err)
	}
	for _, op := range f.Ops() {
		if strings.HasPrefix(op, "link add") || strings.HasPrefix(op, "link del") || strings.Contains(op, "mtu") {
			t.Errorf("second EnsureDevice wrote %q", op)
		}
	}
	// A stray address is removed; the lease address is replaced.
	link, _ := f.LinkByName("flannel.1")
	if err := f.AddrReplace(link, &netlink.Addr{IPNet: host.PrefixIPNet(netip.MustParsePrefix("10.244.9.0/32"))}); err != nil {
		t.Fatal(err)
	}
	if err := v.SetAddress(netip.MustParsePrefix("10.244.1.0/24")); err != nil {
		t.Fatal(err)
	}
	if got := f.Lines("addr"); got != "addr 10.244.1.0/32 dev flannel.1\naddr 198.18.0.1/24 dev eth0" {
		t.Errorf("addresses:\n%s", got)
	}
}

func TestRAAccepted(t *testing.T) {
	for _, tc := range []struct {
		disable, accept, forwarding int
		want                        bool
	}{
		{0, 1, 0, true}, // a new device's default
		{0, 0, 0, false},
		{0, 1, 1, false}, // forwarding: only accept_ra 2 accepts
		{0, 2, 1, true},
		{0, 2, 0, true},
		{1, 2, 0, false}, // IPv6 off on the device
	} {
		if got := raAccepted(tc.disable, tc.accept, tc.forwarding); got != tc.want {
			t.Errorf("raAccepted(disable_ipv6 %d, accept_ra %d, forwarding %d) = %t, want %t",
				tc.disable, tc.accept, tc.forwarding, got, tc.want)
		}
	}
}

func TestIncompatibleDeviceRecreated(t *testing.T) {
	f := host.NewFake()
	eth0 := f.AddUnderlay("eth0", 9000, netip.MustParsePrefix("198.18.0.1/24"))
	old := net.HardwareAddr{0x0e, 0xaa, 0, 0, 0, 1}
	if err := f.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "flannel.1", HardwareAddr: old},
		VxlanId: 2, VtepDevIndex: eth0, SrcAddr: net.ParseIP("198.18.0.1"), L2miss: true}); err != nil {
		t.Fatal(err)
	}
	v := newFakeVXLAN(t, f, ModeProactive, Observer{})
	f.ResetOps()
	dev, err := v.EnsureDevice()
	if err != nil {
		t.Fatal(err)
	}
	// VNI differs: recreated, keeping the MAC peers know; MTU from the
	// underlay link (9000 − 50).
	if dev.MAC.String() != old.String() || dev.MTU != 8950 {
		t.Errorf("device %+v, want MAC %s, MTU 8950", dev, old)
	}
	if got := f.Ops()[:2]; !cmp.Equal(got, []string{
		"link del flannel.1",
		"link add flannel.1 vxlan id 1 local 198.18.0.1 dev eth0 port 8472 nolearning l2miss mtu 8950",
	}) {
		t.Errorf("ops %q", got)
	}
}

// programmedFake returns a datapath over a Fake with peers b and c
// programmed, and the PeersProgrammed reports so far.
func programmedFake(t *testing.T) (*host.Fake, *VXLAN, *[]int) {
	t.Helper()
	f := host.NewFake()
	programmed := &[]int{}
	v := newFakeVXLAN(t, f, ModeProactive, Observer{PeersProgrammed: func(n int) { *programmed = append(*programmed, n) }})
	if err := v.SetPeers([]Peer{peerB()}); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("SetPeers before EnsureDevice: %v, want ErrNoDevice", err)
	}
	if _, err := v.EnsureDevice(); err != nil {
		t.Fatal(err)
	}
	if err := v.SetPeers([]Peer{peerB(), peerC()}); err != nil {
		t.Fatal(err)
	}
	return f, v, programmed
}

func TestSetPeersOverFake(t *testing.T) {
	f, v, programmed := programmedFake(t)
	want := `fdb 0a:00:00:00:00:02 dev flannel.1 self dst 198.18.0.2 permanent
fdb 0a:00:00:00:00:03 dev flannel.1 self dst 198.18.1.3 permanent
neigh 10.244.2.0 lladdr 0a:00:00:00:00:02 dev flannel.1 permanent
neigh 10.244.3.0 lladdr 0a:00:00:00:00:03 dev flannel.1 permanent
route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 proto 119 onlink metric 717826
route 10.244.3.0/24 via 10.244.3.0 dev flannel.1 proto 119 onlink metric 717827`
	if d := cmp.Diff(lines(want), lines(f.Lines("neigh", "fdb", "route"))); d != "" {
		t.Errorf("state (-want +got):\n%s", d)
	}
	if !v.Ready() {
		t.Error("not Ready after a clean SetPeers")
	}
	// Idempotent: the same peers again write nothing.
	f.ResetOps()
	if err := v.SetPeers([]Peer{peerC(), peerB()}); err != nil {
		t.Fatal(err)
	}
	if ops := f.Ops(); len(ops) != 0 {
		t.Errorf("repeated SetPeers wrote %q", ops)
	}
	// Removal deletes all three entries, route first.
	if err := v.SetPeers([]Peer{peerB()}); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{
		"route del 10.244.3.0/24 via 10.244.3.0 dev flannel.1 proto 119 onlink metric 717827",
		"neigh del 10.244.3.0 dev flannel.1",
		"fdb del 0a:00:00:00:00:03 dev flannel.1 self dst 198.18.1.3",
	}, f.Ops()); d != "" {
		t.Errorf("removal ops (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]int{2, 2, 1}, *programmed); d != "" {
		t.Errorf("PeersProgrammed (-want +got):\n%s", d)
	}
}

func TestSetPeersFailureOverFake(t *testing.T) {
	f, v, programmed := programmedFake(t)
	// c moves to a new VtepMAC and its neighbour write fails: c is
	// reported, its stale entries stay until the new ones are in, b is
	// untouched, not Ready; an invalid peer is reported but does not block
	// the others.
	moved := peerC()
	moved.VtepMAC = macX
	f.Fail = func(op string) error {
		if strings.HasPrefix(op, "neigh replace 10.244.3.0") {
			return unix.EPERM
		}
		return nil
	}
	f.ResetOps()
	bad := Peer{Name: "bad", Subnet: netip.MustParsePrefix("10.244.5.0/24")}
	err := v.SetPeers([]Peer{peerB(), moved, bad})
	if !errors.Is(err, unix.EPERM) || !errors.Is(err, ErrInvalidPeer) || v.Ready() {
		t.Errorf("SetPeers = %v, Ready %t; want EPERM and ErrInvalidPeer, not Ready", err, v.Ready())
	}
	if ops := f.Ops(); len(ops) != 0 {
		t.Errorf("writes after a failed neighbour write: %q", ops)
	}
	f.Fail = nil
	// The retry programs only what is missing, then drops the stale FDB.
	f.ResetOps()
	if err := v.SetPeers([]Peer{peerB(), moved}); err != nil || !v.Ready() {
		t.Fatalf("retry: %v, Ready %t", err, v.Ready())
	}
	if d := cmp.Diff([]string{
		"neigh replace 10.244.3.0 lladdr 0a:00:00:00:00:09 dev flannel.1 permanent",
		"fdb replace 0a:00:00:00:00:09 dev flannel.1 self dst 198.18.1.3 permanent",
		"fdb del 0a:00:00:00:00:03 dev flannel.1 self dst 198.18.1.3",
	}, f.Ops()); d != "" {
		t.Errorf("retry ops (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]int{2, 1, 2}, *programmed); d != "" {
		t.Errorf("PeersProgrammed (-want +got):\n%s", d)
	}
}

func TestRestartOverFake(t *testing.T) {
	f := host.NewFake()
	v := newFakeVXLAN(t, f, ModeProactive, Observer{})
	if _, err := v.EnsureDevice(); err != nil {
		t.Fatal(err)
	}
	if err := v.SetPeers([]Peer{peerB(), peerC()}); err != nil {
		t.Fatal(err)
	}
	before, _ := f.LinkByName("flannel.1")

	// A new process: different random MAC on offer, same device reused.
	f.ResetOps()
	f.InterruptDumps = 2 // the start-up dump is retried
	v2 := newFakeVXLAN(t, f, ModeProactive, Observer{})
	v2.device.newMAC = func() (net.HardwareAddr, error) { return macX, nil }
	dev, err := v2.EnsureDevice()
	if err != nil {
		t.Fatal(err)
	}
	if dev.MAC.String() != before.Attrs().HardwareAddr.String() || dev.Index != before.Attrs().Index {
		t.Errorf("restart got device %+v, want the existing one (%s)", dev, before.Attrs().HardwareAddr)
	}
	if err := v2.SetPeers([]Peer{peerB()}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"sysctl net/ipv6/conf/flannel.1/accept_ra = 0",
		"neightbl flannel.1 app_solicit 3",
		"route del 10.244.3.0/24 via 10.244.3.0 dev flannel.1 proto 119 onlink metric 717827",
		"neigh del 10.244.3.0 dev flannel.1",
		"fdb del 0a:00:00:00:00:03 dev flannel.1 self dst 198.18.1.3",
	}
	got := f.Ops()
	if len(got) > 0 && strings.HasPrefix(got[0], "link set flannel.1 addrgenmode") {
		got = got[1:]
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("restart writes (-want +got):\n%s", d)
	}

	// Dumps that never settle fail the resync with the sentinel.
	f.InterruptDumps = 100
	if _, err := v2.EnsureDevice(); !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Errorf("EnsureDevice with endless interrupted dumps: %v", err)
	}
}

func TestRunOverFake(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) }) // registered first: runs after every other cleanup
	f := host.NewFake()
	reconciled := make(chan error, 100)
	answered := make(chan string, 100)
	subscribed := make(chan string, 10)
	v := newFakeVXLAN(t, f, ModeOnDemand, Observer{
		Reconciled:   func(err error) { reconciled <- err },
		MissAnswered: func(kind string, _ time.Duration) { answered <- kind },
		Subscribed:   func(kind string) { subscribed <- kind },
	})
	dev, err := v.EnsureDevice()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.SetAddress(netip.MustParsePrefix("10.244.1.0/24")); err != nil {
		t.Fatal(err)
	}
	if err := v.SetPeers([]Peer{peerB()}); err != nil {
		t.Fatal(err)
	}
	defer startRun(t, v)()
	expectSubscriptions(t, subscribed)
	expect(t, reconciled, "initial reconcile")

	// A miss through the subscription activates the peer.
	miss := l3Miss("10.244.2.5")
	miss.LinkIndex = dev.Index
	f.EmitNeigh(miss)
	expect(t, answered, "the L3 miss answered")
	waitFor(t, "activation", func() bool {
		return strings.Contains(f.Lines("route"), "10.244.2.0/24 via 10.244.2.0")
	})

	// The device disappears: recreated with its MAC, address and entries.
	f.RemoveLink("flannel.1")
	waitFor(t, "device recreated", func() bool {
		l, err := f.LinkByName("flannel.1")
		return err == nil && l.Attrs().HardwareAddr.String() == dev.MAC.String() &&
			strings.Contains(f.Lines("addr"), "10.244.1.0/32 dev flannel.1") &&
			strings.Contains(f.Lines("route"), "10.244.0.0/16 dev flannel.1 proto 119 scope link")
	})

	// The subscriptions end (ENOBUFS): Run resubscribes and resyncs.
	f.EndSubscriptions()
	expectSubscriptions(t, subscribed)
	miss2 := l2Miss(macB)
	l, _ := f.LinkByName("flannel.1")
	miss2.LinkIndex = l.Attrs().Index
	f.EmitNeigh(miss2)
	expect(t, answered, "the L2 miss answered after resubscribing")
}

// expectSubscriptions waits until Run reports both subscriptions made.
func expectSubscriptions(t *testing.T, subscribed <-chan string) {
	t.Helper()
	got := map[string]bool{}
	for !got[SubscriptionLink] || !got[SubscriptionNeigh] {
		got[expect(t, subscribed, "link and neighbour subscriptions")] = true
	}
}

func expect[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

func TestNewValidates(t *testing.T) {
	ok := Config{Device: DeviceConfig{LocalIP: netip.MustParseAddr("198.18.0.1"), UnderlayIndex: 2}}
	for name, mut := range map[string]func(*Config){
		"no local IP":           func(c *Config) { c.Device.LocalIP = netip.Addr{} },
		"no underlay":           func(c *Config) { c.Device.UnderlayIndex = 0 },
		"VNI too big":           func(c *Config) { c.Device.VNI = 1 << 24 },
		"unknown mode":          func(c *Config) { c.Mode = "lazy" },
		"on-demand, no Network": func(c *Config) { c.Mode = ModeOnDemand },
	} {
		c := ok
		mut(&c)
		if _, err := New(host.NewFake(), c, nil); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: New = %v, want ErrInvalidConfig", name, err)
		}
	}
	v, err := New(host.NewFake(), ok, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := v.cfg; c.Device.VNI != 1 || c.Device.Port != 8472 || c.Mode != ModeProactive || c.ResyncInterval != time.Minute {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestRunBeforeFirstSetPeersKeepsEntries(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) }) // registered first: runs after every other cleanup
	f, _, _ := programmedFake(t)
	before := f.Lines("neigh", "fdb", "route")

	// The restarted agent starts Run before its watcher's first SetPeers.
	f.ResetOps()
	reconciled := make(chan error, 10)
	v := newFakeVXLAN(t, f, ModeProactive, Observer{Reconciled: func(err error) { reconciled <- err }})
	if _, err := v.EnsureDevice(); err != nil {
		t.Fatal(err)
	}
	defer startRun(t, v)()
	if err := expect(t, reconciled, "initial reconcile"); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if got := f.Lines("neigh", "fdb", "route"); got != before {
		t.Errorf("reconcile before SetPeers changed entries:\n%s\nwant:\n%s", got, before)
	}
	if v.Ready() {
		t.Error("Ready before the first SetPeers")
	}
	if err := v.SetPeers([]Peer{peerB()}); err != nil || !v.Ready() {
		t.Fatalf("SetPeers: %v, Ready %t", err, v.Ready())
	}
	if got := f.Lines("neigh", "fdb", "route"); strings.Contains(got, "10.244.3.") || !strings.Contains(got, "10.244.2.0/24") {
		t.Errorf("after SetPeers:\n%s", got)
	}
}

// startRun runs v.Run until the returned stop is called (at most once takes
// effect); stop fails the test if Run errs or does not end with its context.
func startRun(t *testing.T, v *VXLAN) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- v.Run(ctx) }()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("Run did not end with its context")
			}
		})
	}
}
