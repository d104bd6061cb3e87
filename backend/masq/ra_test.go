package masq

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/test/nettest"
	"github.com/weftnet/weft/test/testlog"
)

// raTopo is two nodes in namespaces made by the test, joined by a veth underlay:
//
//	A: eth0 198.18.0.1/24, flannel.1 (VNI 1, dstport 8472, nolearning, addrgen none,
//	   accept_ra=1, forwarding=0: what weft leaves when /proc/sys is read-only)
//	B: eth0 198.18.0.2/24, vx0 (VNI 1, remote 198.18.0.1), fe80::b/64 (nodad)
//
// B stands in for anything that can send a UDP datagram to A's VXLAN port.
type raTopo struct {
	a, b   *nettest.NS
	raRule int // index of the rule dropping RAs on flannel.1 in weft's chain
}

const (
	raDevice = "flannel.1"
	raSource = "fe80::b"
	raPrefix = "2001:db8:1::" // the /64 B advertises for SLAAC
)

// newRATopo builds the topology; before, if set, runs in A before flannel.1 exists.
func newRATopo(t *testing.T, before func(a *nettest.NS)) *raTopo {
	t.Helper()
	tp := &raTopo{a: nettest.NewNS(t, "ra-a"), b: nettest.NewNS(t, "ra-b")}
	nettest.Veth(t, tp.a, "eth0", "198.18.0.1/24", tp.b, "eth0", "198.18.0.2/24")
	if before != nil {
		before(tp.a)
	}
	tp.addFlannel(t)

	hb := nettest.Handle(t, tp.b.NetNS)
	vx := addVXLAN(t, hb, "vx0", "198.18.0.2", "198.18.0.1")
	if err := hb.LinkSetIP6AddrGenMode(vx, nl.IN6_ADDR_GEN_MODE_NONE); err != nil {
		t.Fatalf("addrgen none on vx0: %v", err)
	}
	ll := &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(raSource), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD}
	if err := hb.AddrAdd(vx, ll); err != nil {
		t.Fatalf("add %s to vx0: %v", raSource, err)
	}
	if err := hb.LinkSetUp(vx); err != nil {
		t.Fatalf("set vx0 up: %v", err)
	}
	return tp
}

// addFlannel adds A's flannel.1 as weft leaves it when /proc/sys is read-only: no
// link-local address (addrgen none, backend/device.go), accept_ra=1, forwarding=0.
func (tp *raTopo) addFlannel(t *testing.T) {
	t.Helper()
	ha := nettest.Handle(t, tp.a.NetNS)
	fl := addVXLAN(t, ha, raDevice, "198.18.0.1", "")
	if err := ha.LinkSetIP6AddrGenMode(fl, nl.IN6_ADDR_GEN_MODE_NONE); err != nil {
		t.Fatalf("addrgen none on %s: %v", raDevice, err)
	}
	err := tp.a.Do(func(ns.NetNS) error {
		for key, val := range map[string]string{"accept_ra": "1", "forwarding": "0"} {
			p := "/proc/sys/net/ipv6/conf/" + raDevice + "/" + key
			if err := os.WriteFile(p, []byte(val), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("sysctls of %s in %s: %v", raDevice, tp.a.Name, err)
	}
	if err := ha.LinkSetUp(fl); err != nil {
		t.Fatalf("set %s up: %v", raDevice, err)
	}
}

// addVXLAN adds a VXLAN device (VNI 1, port 8472, nolearning) on eth0 with local
// address local and, when remote is set, that default destination.
func addVXLAN(t *testing.T, h *netlink.Handle, name, local, remote string) netlink.Link {
	t.Helper()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatalf("find eth0: %v", err)
	}
	vx := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: name},
		VxlanId:      1,
		VtepDevIndex: eth0.Attrs().Index,
		SrcAddr:      net.ParseIP(local),
		Port:         8472,
	}
	if remote != "" {
		vx.Group = net.ParseIP(remote) // a unicast group is the default remote
	}
	if err := h.LinkAdd(vx); err != nil {
		t.Fatalf("add vxlan %s: %v", name, err)
	}
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("find %s: %v", name, err)
	}
	return l
}

// routerAdvert is an RA with router lifetime 1800 s and a prefix information option
// for raPrefix/64 with the on-link and autonomous (SLAAC) flags.
func routerAdvert(t *testing.T) []byte {
	t.Helper()
	body := []byte{
		64, 0, // current hop limit, flags (no M, no O)
		0x07, 0x08, // router lifetime 1800 s
		0, 0, 0, 0, // reachable time
		0, 0, 0, 0, // retrans timer
		3, 4, 64, 0xc0, // prefix information, 32 bytes, /64, L and A
		0, 1, 0x51, 0x80, // valid lifetime 86400 s
		0, 0, 0x38, 0x40, // preferred lifetime 14400 s
		0, 0, 0, 0, // reserved
	}
	body = append(body, netip.MustParseAddr(raPrefix).AsSlice()...)
	m := icmp.Message{Type: ipv6.ICMPTypeRouterAdvertisement, Body: &icmp.RawBody{Data: body}}
	b, err := m.Marshal(nil) // the kernel fills in an ICMPv6 raw socket's checksum
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hopByHop is a hop-by-hop options header holding only padding (PadN, 4 bytes); the
// kernel fills in the next header.
var hopByHop = []byte{0, 0, 1, 4, 0, 0, 0, 0}

// sendRA sends one RA from B's vx0 to ff02::1, hop limit 255, source fe80::b; with
// hbh behind a hop-by-hop options header. Zones resolve in the thread's namespace,
// so everything happens inside B.
func (tp *raTopo) sendRA(t *testing.T, hbh bool) {
	t.Helper()
	msg := routerAdvert(t)
	err := tp.b.Do(func(ns.NetNS) error {
		ifi, err := net.InterfaceByName("vx0")
		if err != nil {
			return err
		}
		c, err := icmp.ListenPacket("ip6:ipv6-icmp", raSource+"%vx0")
		if err != nil {
			return err
		}
		defer c.Close()
		p := c.IPv6PacketConn()
		if err := p.SetMulticastInterface(ifi); err != nil {
			return err
		}
		if err := p.SetMulticastHopLimit(255); err != nil {
			return err
		}
		if hbh {
			rc, err := p.PacketConn.(syscall.Conn).SyscallConn()
			if err != nil {
				return err
			}
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptString(int(fd), unix.IPPROTO_IPV6, unix.IPV6_HOPOPTS, string(hopByHop))
			}); err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("IPV6_HOPOPTS: %w", serr)
			}
		}
		_, err = c.WriteTo(msg, &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: "vx0"})
		return err
	})
	if err != nil {
		t.Fatalf("send RA from %s: %v", tp.b.Name, err)
	}
}

var raRoute = regexp.MustCompile(`default via ` + regexp.QuoteMeta(raSource) + ` dev ` + regexp.QuoteMeta(raDevice) + ` proto ra`)

// raEffects returns A's IPv6 default routes and its SLAAC addresses in raPrefix.
func (tp *raTopo) raEffects(t *testing.T) (routes, addrs string) {
	t.Helper()
	routes, err := tp.a.Exec(t, "ip", "-6", "route", "show", "default")
	if err != nil {
		t.Fatalf("ip -6 route in %s: %v: %s", tp.a.Name, err, routes)
	}
	out, err := tp.a.Exec(t, "ip", "-6", "-o", "addr", "show", "dev", raDevice)
	if err != nil {
		t.Fatalf("ip -6 addr in %s: %v: %s", tp.a.Name, err, out)
	}
	for l := range strings.Lines(out) {
		if strings.Contains(l, strings.TrimSuffix(raPrefix, ":")) {
			addrs += l
		}
	}
	return strings.TrimSpace(routes), strings.TrimSpace(addrs)
}

// raDropped returns the packet counter of rule i of weft's RA chain in n.
func raDropped(n *nettest.NS, i int) (uint64, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(n.Fd())))
	if err != nil {
		return 0, err
	}
	tbl := &nftables.Table{Name: RATableName, Family: nftables.TableFamilyIPv6}
	rules, err := c.GetRules(tbl, &nftables.Chain{Name: RAChainName, Table: tbl})
	if err != nil || len(rules) <= i {
		return 0, fmt.Errorf("rules of ip6 %s %s: %d, %v", RATableName, RAChainName, len(rules), err)
	}
	for _, e := range rules[i].Exprs {
		if ctr, ok := e.(*expr.Counter); ok {
			return ctr.Packets, nil
		}
	}
	return 0, fmt.Errorf("rule %d has no counter", i)
}

// eventually polls cond every 10 ms for up to d.
func eventually(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

// TestRADropTraffic: an RA sent through the VXLAN port to ff02::1 gives a node whose
// flannel.1 has accept_ra=1 (forwarding 0) a default route via flannel.1, and
// EnsureRADrop stops that. Each half gets fresh namespaces, so no RA state carries over.
func TestRADropTraffic(t *testing.T) {
	nettest.Privileged(t)

	// Both kinds of RA work on an unguarded node: the drop has to catch both.
	for _, hbh := range []bool{false, true} {
		t.Run(fmt.Sprintf("unguarded node takes the RA/hop-by-hop=%t", hbh), func(t *testing.T) {
			tp := newRATopo(t, nil)
			if r, a := tp.raEffects(t); r != "" || a != "" {
				t.Fatalf("before any RA: routes %q, addresses %q; want none", r, a)
			}
			tp.sendRA(t, hbh)
			var routes, addrs string
			ok := eventually(2*time.Second, func() bool {
				routes, addrs = tp.raEffects(t)
				return raRoute.MatchString(routes) && addrs != ""
			})
			t.Logf("after the RA: routes %q, addresses %q", routes, addrs)
			if !ok {
				t.Fatalf("without EnsureRADrop the RA gave no default route via %s and SLAAC address: the test cannot tell a drop from a lost packet", raDevice)
			}
		})
	}

	t.Run("EnsureRADrop drops it", func(t *testing.T) {
		log, logs := captureLog(t)
		// As the agent does: in place before the device exists (the match is by name).
		tp := newRATopo(t, func(a *nettest.NS) {
			if err := EnsureRADrop(openHost(t, a), []string{raDevice}, log); err != nil {
				t.Fatalf("EnsureRADrop: %v", err)
			}
		})
		nsh := openHost(t, tp.a)
		tp.wantDropped(t, "installed table", false, 1)
		if l := logs.take(); !strings.Contains(l, `level=INFO msg="router advertisement drop installed"`) {
			t.Fatalf("EnsureRADrop logged %q, want an Info install", l)
		}
		tp.wantDropped(t, "installed table, hop-by-hop header", true, 2)

		// Someone deletes the table; the next EnsureRADrop restores it.
		nft(t, tp.a, "delete", "table", "ip6", RATableName)
		if err := EnsureRADrop(nsh, []string{raDevice}, log); err != nil {
			t.Fatalf("EnsureRADrop after the table was deleted: %v", err)
		}
		if l := logs.take(); !strings.Contains(l, `level=WARN msg="router advertisement drop repaired"`) {
			t.Fatalf("restoring a deleted table logged %q, want a Warn repair", l)
		}
		tp.wantDropped(t, "restored table", false, 1)

		// The device is recreated (another index): the rule still holds.
		h := nettest.Handle(t, tp.a.NetNS)
		l, err := h.LinkByName(raDevice)
		if err == nil {
			err = h.LinkDel(l)
		}
		if err != nil {
			t.Fatalf("delete %s: %v", raDevice, err)
		}
		tp.addFlannel(t)
		tp.wantDropped(t, "recreated device", false, 2)
		if n, err := raDropped(tp.a, 1); err != nil || n != 0 {
			t.Errorf("the redirect rule counted %d packets (%v), want 0", n, err)
		}
	})

	// Dual stack: flannel.1 and flannel-v6.1 are guarded by one table. flannel.1's
	// rules come second (the devices are sorted), and still drop its RAs.
	t.Run("EnsureRADrop on two devices drops it", func(t *testing.T) {
		tp := newRATopo(t, func(a *nettest.NS) {
			if err := EnsureRADrop(openHost(t, a), []string{raDevice, "flannel-v6.1"}, testlog.New(t, slog.LevelDebug)); err != nil {
				t.Fatalf("EnsureRADrop: %v", err)
			}
		})
		tp.raRule = 2
		tp.wantDropped(t, "second device's rules", false, 1)
		for _, i := range []int{0, 1, 3} {
			if n, err := raDropped(tp.a, i); err != nil || n != 0 {
				t.Errorf("rule %d counted %d packets (%v), want 0", i, n, err)
			}
		}
	})
}

// TestEnsureRADropDevices: one table for every device given (order and duplicates
// do not matter), repaired per device, and shrunk when a device is no longer given.
func TestEnsureRADropDevices(t *testing.T) {
	nettest.Privileged(t)
	n := nettest.NewNS(t, "ra")
	nsh := openHost(t, n)
	fd := nsh.Fd()
	log, logs := captureLog(t)
	handles := func() []uint64 { return chainHandles(t, fd, nftables.TableFamilyIPv6, RATableName, RAChainName) }
	const v6dev = "flannel-v6.1"

	if err := EnsureRADrop(nsh, []string{raDevice, v6dev}, log); err != nil {
		t.Fatalf("EnsureRADrop: %v", err)
	}
	if l := logs.take(); !strings.Contains(l, `level=INFO msg="router advertisement drop installed" table="ip6 weft-ra" device=flannel-v6.1,flannel.1`) {
		t.Fatalf("EnsureRADrop logged %q, want an Info install for both devices", l)
	}
	table := nft(t, n, "list", "table", "ip6", RATableName)
	wantInOrder(t, table,
		`type filter hook input priority filter; policy accept;`,
		`iifname "flannel-v6\.1" icmpv6 type nd-router-advert counter packets 0 bytes 0 drop comment "weft: drop router advertisements arriving on flannel-v6\.1"`,
		`iifname "flannel-v6\.1" icmpv6 type nd-redirect counter packets 0 bytes 0 drop comment "weft: drop redirects arriving on flannel-v6\.1"`,
		`iifname "flannel\.1" icmpv6 type nd-router-advert counter packets 0 bytes 0 drop`,
		`iifname "flannel\.1" icmpv6 type nd-redirect counter packets 0 bytes 0 drop`)
	if c := strings.Count(table, "counter packets"); c != 4 {
		t.Fatalf("table has %d rules, want 4:\n%s", c, table)
	}
	first := handles()
	if err := EnsureRADrop(nsh, []string{v6dev, raDevice, v6dev}, log); err != nil {
		t.Fatalf("EnsureRADrop in another order: %v", err)
	}
	if l := logs.take(); l != "" {
		t.Fatalf("EnsureRADrop with the table in place logged %q", l)
	}
	if got := handles(); !equal(first, got) {
		t.Fatalf("rule handles %v changed to %v by EnsureRADrop with nothing to do", first, got)
	}

	// One of the second device's rules deleted: repaired.
	nft(t, n, "delete", "rule", "ip6", RATableName, RAChainName, "handle", strconv.FormatUint(first[3], 10))
	if err := EnsureRADrop(nsh, []string{raDevice, v6dev}, log); err != nil {
		t.Fatalf("EnsureRADrop after a deleted rule: %v", err)
	}
	if l := logs.take(); !strings.Contains(l, `level=WARN msg="router advertisement drop repaired" repaired="3 rules, want 2 per device"`) {
		t.Fatalf("repair logged %q, want a Warn", l)
	}
	if c := strings.Count(nft(t, n, "list", "table", "ip6", RATableName), "counter packets"); c != 4 {
		t.Fatalf("table has %d rules after the repair, want 4", c)
	}

	// Dual stack → IPv4-only: flannel-v6.1's rules go.
	if err := EnsureRADrop(nsh, []string{raDevice}, log); err != nil {
		t.Fatalf("EnsureRADrop for flannel.1 alone: %v", err)
	}
	if l := logs.take(); !strings.Contains(l, `level=INFO msg="router advertisement drop moved to another device" old_device=flannel-v6.1,flannel.1 table="ip6 weft-ra" device=flannel.1`) {
		t.Fatalf("EnsureRADrop for one device logged %q, want an Info move", l)
	}
	if table := nft(t, n, "list", "table", "ip6", RATableName); strings.Contains(table, v6dev) || strings.Count(table, "counter packets") != 2 {
		t.Fatalf("table after dropping %s:\n%s", v6dev, table)
	}
}

// wantDropped sends an RA from B (behind a hop-by-hop header with hbh) and fails
// unless A's RA rule counts it (its counter reaching count) and A takes no route or
// address from it.
func (tp *raTopo) wantDropped(t *testing.T, what string, hbh bool, count uint64) {
	t.Helper()
	tp.sendRA(t, hbh)
	var routes, addrs string
	var n uint64
	var err error
	eventually(2*time.Second, func() bool {
		routes, addrs = tp.raEffects(t)
		n, err = raDropped(tp.a, tp.raRule)
		return routes != "" || addrs != "" || n >= count
	})
	if routes != "" || addrs != "" {
		t.Fatalf("%s: the RA gave routes %q, addresses %q", what, routes, addrs)
	}
	if n != count {
		t.Fatalf("%s: the RA rule counted %d packets (%v), want %d", what, n, err, count)
	}
	time.Sleep(100 * time.Millisecond) // ndisc acts at once; be generous all the same
	if routes, addrs = tp.raEffects(t); routes != "" || addrs != "" {
		t.Fatalf("%s: the RA gave routes %q, addresses %q", what, routes, addrs)
	}
}

// TestEnsureRADrop: the table's shape, idempotence, coexistence with the masquerade
// table, repairs of every kind of damage, and DeleteRADrop removing only its table.
func TestEnsureRADrop(t *testing.T) {
	nettest.Privileged(t)
	n := nettest.NewNS(t, "ra")
	nsh := openHost(t, n)
	fd := nsh.Fd()
	log, logs := captureLog(t)

	handles := func() []uint64 {
		t.Helper()
		return chainHandles(t, fd, nftables.TableFamilyIPv6, RATableName, RAChainName)
	}

	// The masquerade table (IPv6 Network: also table ... weft in family ip6) and
	// an operator's table are there first and must be left alone.
	v6 := Rules{IPv6Network: netip.MustParsePrefix("fd00:10::/48"), IPv6Subnet: netip.MustParsePrefix("fd00:10:0:7::/64")}
	if err := Ensure(nsh, v6, log); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	nft(t, n, "add", "table", "ip6", "operator")
	nft(t, n, "add", "chain", "ip6", "operator", "input", "{", "type", "filter", "hook", "input", "priority", "0", ";", "}")
	nft(t, n, "add", "rule", "ip6", "operator", "input", "udp", "dport", "9", "drop")
	_ = logs.take()

	if err := EnsureRADrop(nsh, []string{raDevice}, log); err != nil {
		t.Fatalf("EnsureRADrop: %v", err)
	}
	if l := logs.take(); strings.Count(l, "\n") != 0 || !strings.Contains(l, `level=INFO msg="router advertisement drop installed"`) {
		t.Fatalf("first EnsureRADrop logged %q, want one Info install", l)
	}
	table := nft(t, n, "list", "table", "ip6", RATableName)
	wantInOrder(t, table,
		`chain input \{`,
		`type filter hook input priority filter; policy accept;`,
		`iifname "flannel\.1" icmpv6 type nd-router-advert counter packets 0 bytes 0 drop comment "weft: drop router advertisements arriving on flannel\.1"`,
		`iifname "flannel\.1" icmpv6 type nd-redirect counter packets 0 bytes 0 drop comment "weft: drop redirects arriving on flannel\.1"`)
	if c := strings.Count(table, "counter packets"); c != 2 {
		t.Fatalf("table has %d rules, want 2:\n%s", c, table)
	}

	first := handles()
	start := time.Now()
	const calls = 20
	for range calls {
		if err := EnsureRADrop(nsh, []string{raDevice}, log); err != nil {
			t.Fatalf("EnsureRADrop with the table in place: %v", err)
		}
	}
	t.Logf("EnsureRADrop with the table in place: %v per call", time.Since(start)/calls)
	if l := logs.take(); l != "" {
		t.Fatalf("EnsureRADrop with the table in place logged %q", l)
	}
	if got := handles(); !equal(first, got) {
		t.Fatalf("rule handles %v changed to %v by EnsureRADrop with nothing to do", first, got)
	}
	// Neither table mistakes the other for its own.
	want := v6
	want.VXLANPort = backend.DefaultPort
	if got, err := Current(nsh); err != nil || got == nil || *got != want {
		t.Fatalf("masquerade Current next to the RA table = %+v, %v; want %+v", got, err, want)
	}
	if err := Ensure(nsh, v6, log); err != nil {
		t.Fatalf("Ensure next to the RA table: %v", err)
	}
	if l := logs.take(); l != "" {
		t.Fatalf("Ensure next to the RA table logged %q", l)
	}

	for _, tc := range []struct {
		name   string
		damage func() []string // nft commands
		reason string
	}{
		{"deleted table", func() []string { return []string{"delete table ip6 weft-ra"} }, "table ip6 weft-ra missing"},
		{"deleted chain", func() []string { return []string{"delete chain ip6 weft-ra input"} }, `chain \"input\" missing`},
		{"flushed chain", func() []string { return []string{"flush chain ip6 weft-ra input"} }, "0 rules, want 2"},
		{"deleted rule", func() []string {
			return []string{"delete rule ip6 weft-ra input handle " + strconv.FormatUint(handles()[0], 10)}
		}, "1 rules, want 2"},
		{"added rule", func() []string { return []string{"insert rule ip6 weft-ra input udp dport 9 accept"} }, "3 rules, want 2"},
		{"changed verdict", func() []string {
			return []string{"replace rule ip6 weft-ra input handle " + strconv.FormatUint(handles()[0], 10) +
				` iifname "flannel.1" icmpv6 type nd-router-advert counter accept`}
		}, "rule 1 (handle"},
		{"changed device", func() []string {
			return []string{"replace rule ip6 weft-ra input handle " + strconv.FormatUint(handles()[1], 10) +
				` iifname "eth0" icmpv6 type nd-redirect counter drop`}
		}, "rule 2 (handle"},
		{"changed type", func() []string {
			return []string{"replace rule ip6 weft-ra input handle " + strconv.FormatUint(handles()[0], 10) +
				` iifname "flannel.1" icmpv6 type nd-neighbor-advert counter drop`}
		}, "rule 1 (handle"},
		{"policy drop", func() []string { return []string{"chain ip6 weft-ra input { policy drop ; }"} }, "policy accept"},
		{"dormant table", func() []string { return []string{"add table ip6 weft-ra { flags dormant ; }"} }, "table flags 0x1"},
		{"added set", func() []string { return []string{"add set ip6 weft-ra s { type ipv6_addr ; }"} }, "table holds 2 chains or sets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, cmd := range tc.damage() {
				nft(t, n, strings.Fields(cmd)...)
			}
			if err := EnsureRADrop(nsh, []string{raDevice}, log); err != nil {
				t.Fatalf("EnsureRADrop after %s: %v", tc.name, err)
			}
			l := logs.take()
			if strings.Count(l, "\n") != 0 || !strings.Contains(l, `level=WARN msg="router advertisement drop repaired"`) || !strings.Contains(l, tc.reason) {
				t.Fatalf("repair logged %q, want one Warn with %q", l, tc.reason)
			}
			if got := nft(t, n, "list", "table", "ip6", RATableName); got != table {
				t.Fatalf("table after repair:\n%s\nwant:\n%s", got, table)
			}
			before := handles()
			if err := EnsureRADrop(nsh, []string{raDevice}, log); err != nil {
				t.Fatalf("EnsureRADrop after the repair: %v", err)
			}
			if l := logs.take(); l != "" {
				t.Fatalf("EnsureRADrop after the repair logged %q", l)
			}
			if after := handles(); !equal(before, after) {
				t.Fatalf("rule handles %v changed to %v by EnsureRADrop with nothing to do", before, after)
			}
		})
	}

	// Another device name (another VNI) moves the rules, logged at Info.
	if err := EnsureRADrop(nsh, []string{"flannel.2"}, log); err != nil {
		t.Fatalf("EnsureRADrop for flannel.2: %v", err)
	}
	if l := logs.take(); !strings.Contains(l, `level=INFO msg="router advertisement drop moved to another device" old_device=flannel.1`) {
		t.Fatalf("EnsureRADrop for another device logged %q, want an Info move", l)
	}
	if got := nft(t, n, "list", "table", "ip6", RATableName); strings.Contains(got, `"flannel.1"`) || strings.Count(got, `iifname "flannel.2"`) != 2 {
		t.Fatalf("table for flannel.2:\n%s", got)
	}

	// DeleteRADrop removes its table and nothing else.
	if err := DeleteRADrop(nsh); err != nil {
		t.Fatalf("DeleteRADrop: %v", err)
	}
	if err := DeleteRADrop(nsh); err != nil {
		t.Fatalf("DeleteRADrop of an absent table: %v", err)
	}
	tables := strings.Fields(nft(t, n, "list", "tables"))
	if want := strings.Fields("table ip6 weft table ip6 operator"); !sameSet(tables, want) {
		t.Fatalf("tables after DeleteRADrop: %q, want %q", tables, want)
	}
	if !strings.Contains(nft(t, n, "list", "table", "ip6", "operator"), "udp dport 9 drop") {
		t.Fatal("DeleteRADrop changed the operator's table")
	}
	if got, err := Current(nsh); err != nil || got == nil || *got != want {
		t.Fatalf("masquerade Current after DeleteRADrop = %+v, %v; want %+v", got, err, want)
	}
	// A table deleted on purpose is installed again without a repair warning.
	if err := EnsureRADrop(nsh, []string{raDevice}, log); err != nil {
		t.Fatalf("EnsureRADrop after DeleteRADrop: %v", err)
	}
	if l := logs.take(); !strings.Contains(l, `level=INFO msg="router advertisement drop installed"`) {
		t.Fatalf("EnsureRADrop after DeleteRADrop logged %q, want an Info install", l)
	}
	// And the masquerade code's Delete leaves it alone.
	if err := Delete(nsh); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if got := nft(t, n, "list", "table", "ip6", RATableName); got != table {
		t.Fatalf("RA table after the masquerade Delete:\n%s", got)
	}
}

// sameSet reports whether a and b hold the same words, each once, in any order:
// here "table <family> <name>" triples flattened.
func sameSet(a, b []string) bool {
	key := func(w []string) map[string]bool {
		m := map[string]bool{}
		for i := 0; i+2 < len(w); i += 3 {
			m[fmt.Sprint(w[i:i+3])] = true
		}
		return m
	}
	ka, kb := key(a), key(b)
	if len(a) != len(b) || len(ka) != len(kb) {
		return false
	}
	for k := range ka {
		if !kb[k] {
			return false
		}
	}
	return true
}

func TestEnsureRADropInvalid(t *testing.T) {
	// Validation happens before any kernel access, so this needs no privileges.
	for _, name := range []string{"", ".", "..", "flannel/1", "a:b", "with space", "abcdefghijklmnop"} {
		err := EnsureRADrop(nil, []string{"flannel.1", name}, nil)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "router advertisement drop: invalid device name") {
			t.Errorf("EnsureRADrop(%q) = %v, want ErrInvalid", name, err)
		}
	}
	if err := EnsureRADrop(nil, nil, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("EnsureRADrop(no device) = %v, want ErrInvalid", err)
	}
}

func TestRARulesIfnames(t *testing.T) {
	rules := func(names ...string) []*nftables.Rule {
		var rs []*nftables.Rule
		for i, n := range names {
			rs = append(rs, &nftables.Rule{Handle: uint64(i + 1), Exprs: raExprs(n, i%len(raDrops))})
		}
		return rs
	}
	for _, tc := range []struct {
		name    string
		rules   []*nftables.Rule
		ifnames []string
		drift   string
	}{
		{"in place", rules("flannel.1", "flannel.1"), []string{"flannel.1"}, ""},
		{"other device", rules("flannel.2", "flannel.2"), []string{"flannel.2"}, ""},
		{"two devices", rules("flannel-v6.1", "flannel-v6.1", "flannel.1", "flannel.1"), []string{"flannel-v6.1", "flannel.1"}, ""},
		{"mixed devices", rules("flannel.1", "flannel.2"), nil, "rule 2 (handle 2)"},
		{"mixed second device", rules("flannel.1", "flannel.1", "flannel-v6.1", "flannel.2"), nil, "rule 4 (handle 4)"},
		{"device twice", rules("flannel.1", "flannel.1", "flannel.1", "flannel.1"), nil, `device "flannel.1" twice`},
		{"no rules", nil, nil, "0 rules, want 2 per device"},
		{"one rule", rules("flannel.1"), nil, "1 rules, want 2 per device"},
		{"three rules", rules("flannel.1", "flannel.1", "flannel.2"), nil, "3 rules, want 2 per device"},
		{"swapped", []*nftables.Rule{{Handle: 1, Exprs: raExprs("flannel.1", 1)}, {Handle: 2, Exprs: raExprs("flannel.1", 0)}}, nil, "rule 1 (handle 1)"},
		{"no iifname", []*nftables.Rule{{Handle: 7, Exprs: raExprs("flannel.1", 0)[2:]}, {Handle: 8, Exprs: raExprs("flannel.1", 1)}}, nil, "rule 1 (handle 7) is not an iifname match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ifnames, drift := raRulesIfnames(tc.rules)
			if !slices.Equal(ifnames, tc.ifnames) || (tc.drift == "") != (drift == "") || !strings.Contains(drift, tc.drift) {
				t.Errorf("raRulesIfnames = %q, %q; want %q, %q", ifnames, drift, tc.ifnames, tc.drift)
			}
		})
	}
}
