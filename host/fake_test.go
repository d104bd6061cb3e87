package host

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestListRetry(t *testing.T) {
	calls := 0
	got, err := listRetry("things", func() ([]int, error) {
		calls++
		if calls < 3 {
			return []int{1}, netlink.ErrDumpInterrupted
		}
		return []int{1, 2}, nil
	})
	if err != nil || !slices.Equal(got, []int{1, 2}) || calls != 3 {
		t.Fatalf("got %v, %v after %d calls; want [1 2] after 3", got, err, calls)
	}
	_, err = listRetry("things", func() ([]int, error) { return nil, netlink.ErrDumpInterrupted })
	if !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatalf("always interrupted: err %v, want ErrDumpInterrupted", err)
	}
	_, err = listRetry("things", func() ([]int, error) { return nil, unix.EPERM })
	if !errors.Is(err, unix.EPERM) || err.Error() != "list things: operation not permitted" {
		t.Fatalf("other error: %v", err)
	}
}

func TestFakeDumpsRetried(t *testing.T) {
	f := NewFake()
	f.AddUnderlay("eth0", 1500, netip.MustParsePrefix("192.0.2.1/24"))
	f.AddUnderlay("eth1", 1500, netip.MustParsePrefix("192.0.2.2/24"))
	f.InterruptDumps = dumpAttempts - 1
	links, err := f.LinkList()
	if err != nil || len(links) != 2 {
		t.Fatalf("LinkList after %d interruptions: %d links, %v", dumpAttempts-1, len(links), err)
	}
	f.InterruptDumps = dumpAttempts
	if _, err := f.LinkList(); !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatalf("LinkList interrupted every time: %v, want ErrDumpInterrupted", err)
	}
}

func TestFakeAppSolicitIsANeighbourTableWrite(t *testing.T) {
	f := NewFake()
	idx := f.AddUnderlay("eth0", 1500, netip.MustParsePrefix("192.0.2.1/24"))
	if err := f.SetAppSolicit(unix.AF_INET, idx, 3); err != nil {
		t.Fatal(err)
	}
	if got, want := f.Ops(), []string{"neightbl eth0 app_solicit 3"}; !slices.Equal(got, want) {
		t.Fatalf("ops %q, want %q", got, want)
	}
	if got := f.Lines("neightbl", "sysctl"); got != "neightbl eth0 app_solicit 3" {
		t.Fatalf("lines %q", got)
	}
	if v, err := f.ReadSysctl("net/ipv4/neigh/eth0/app_solicit"); err != nil || v != "3" {
		t.Fatalf("read back %q, %v; want 3", v, err)
	}
	// The IPv6 (NDP) table is another table: set apart, read apart.
	if _, err := f.ReadSysctl("net/ipv6/neigh/eth0/app_solicit"); err == nil {
		t.Fatal("IPv6 app_solicit reads as set after setting the IPv4 one")
	}
	if err := f.SetAppSolicit(unix.AF_INET6, idx, 2); err != nil {
		t.Fatal(err)
	}
	if got := f.Lines("neightbl"); got != "neightbl eth0 app_solicit 3\nneightbl eth0 ndisc app_solicit 2" {
		t.Fatalf("lines %q", got)
	}
	if v, err := f.ReadSysctl("net/ipv6/neigh/eth0/app_solicit"); err != nil || v != "2" {
		t.Fatalf("IPv6 read back %q, %v; want 2", v, err)
	}
	if err := f.SetAppSolicit(unix.AF_BRIDGE, idx, 3); !errors.Is(err, unix.EAFNOSUPPORT) {
		t.Fatalf("AF_BRIDGE: %v, want EAFNOSUPPORT", err)
	}
	if err := f.SetAppSolicit(unix.AF_INET, 99, 3); !IsLinkNotFound(err) {
		t.Fatalf("absent link: %v, want not found", err)
	}
	f.RemoveLink("eth0")
	if got := f.Lines("neightbl"); got != "" {
		t.Fatalf("after link removal: %q", got)
	}
}

// TestFakeKeepsFamiliesApart: dumps list the family asked for, a
// neighbour's family must be its address's, an IPv6 route without a metric
// gets 1024, an IPv6 address brings its prefix route and nodad shows on an
// address.
func TestFakeKeepsFamiliesApart(t *testing.T) {
	f := NewFake()
	idx := f.AddUnderlay("eth0", 1500, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("fd00::1/64"))
	l, _ := f.LinkByIndex(idx)
	mac := net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 2}
	if err := f.AddrReplace(l, &netlink.Addr{IPNet: PrefixIPNet(netip.MustParsePrefix("fd10::/128")), Flags: unix.IFA_F_NODAD}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []netlink.Neigh{
		{LinkIndex: idx, Family: unix.AF_INET, IP: net.ParseIP("192.0.2.9"), HardwareAddr: mac},
		{LinkIndex: idx, Family: unix.AF_INET6, IP: net.ParseIP("fd00::9"), HardwareAddr: mac},
	} {
		if err := f.NeighSet(&n); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, IP: net.ParseIP("fd00::8"), HardwareAddr: mac}); !errors.Is(err, unix.EINVAL) {
		t.Errorf("IPv6 neighbour as AF_INET: %v, want EINVAL", err)
	}
	if err := f.NeighDel(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, IP: net.ParseIP("fd00::9")}); !errors.Is(err, unix.EINVAL) {
		t.Errorf("IPv6 neighbour deleted as AF_INET: %v, want EINVAL", err)
	}
	for _, r := range []netlink.Route{
		{LinkIndex: idx, Dst: PrefixIPNet(netip.MustParsePrefix("10.1.0.0/16")), Gw: net.ParseIP("192.0.2.254")},
		{LinkIndex: idx, Dst: PrefixIPNet(netip.MustParsePrefix("fd01::/64")), Gw: net.ParseIP("fd00::fe")},
	} {
		if err := f.RouteReplace(&r); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := f.Lines("addr", "neigh", "route"), strings.Join([]string{
		"addr 192.0.2.1/24 dev eth0",
		"addr fd00::1/64 dev eth0",
		"addr fd10::/128 dev eth0 nodad",
		"neigh 192.0.2.9 lladdr 02:bb:00:00:00:02 dev eth0",
		"neigh fd00::9 lladdr 02:bb:00:00:00:02 dev eth0",
		"route 10.1.0.0/16 via 192.0.2.254 dev eth0",
		"route fd00::/64 dev eth0 proto kernel metric 256",
		"route fd01::/64 via fd00::fe dev eth0 metric 1024",
		"route fd10::/128 dev eth0 proto kernel metric 256",
	}, "\n"); got != want {
		t.Errorf("lines:\n%s\nwant:\n%s", got, want)
	}
	for _, tc := range []struct {
		family int
		want   []string
	}{
		{unix.AF_INET, []string{"192.0.2.1/24", "192.0.2.9", "10.1.0.0/16"}},
		{unix.AF_INET6, []string{"fd00::1/64", "fd10::/128", "fd00::9", "fd00::/64", "fd10::/128", "fd01::/64"}},
	} {
		addrs, _ := f.AddrList(l, tc.family)
		neighs, _ := f.NeighList(idx, tc.family)
		routes, _ := f.RouteListFiltered(tc.family, nil, 0)
		var got []string
		for _, a := range addrs {
			got = append(got, a.IPNet.String())
		}
		for _, n := range neighs {
			got = append(got, n.IP.String())
		}
		for _, r := range routes {
			got = append(got, r.Dst.String())
		}
		slices.Sort(got)
		slices.Sort(tc.want)
		if !slices.Equal(got, tc.want) {
			t.Errorf("family %d lists %q, want %q", tc.family, got, tc.want)
		}
	}
}

func TestFakeCloneSharesTheLog(t *testing.T) {
	f := NewFake()
	idx := f.AddUnderlay("eth0", 1500, netip.MustParsePrefix("192.0.2.1/24"))
	c, err := f.Clone()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := &netlink.Neigh{LinkIndex: idx, IP: net.ParseIP("192.0.2.9"), HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 9}, State: netlink.NUD_PERMANENT}
	if err := c.NeighSet(n); err != nil {
		t.Fatal(err)
	}
	if got := f.Ops(); len(got) != 1 || got[0] != "neigh replace 192.0.2.9 lladdr 02:00:00:00:00:09 dev eth0 permanent" {
		t.Fatalf("ops %q", got)
	}
}

func TestFakeSubscriptions(t *testing.T) {
	f := NewFake()
	ctx, cancel := context.WithCancel(t.Context())
	var errs []error
	ch, err := f.SubscribeNeigh(ctx, func(err error) { errs = append(errs, err) })
	if err != nil {
		t.Fatal(err)
	}
	f.EmitNeigh(netlink.NeighUpdate{Type: unix.RTM_GETNEIGH})
	if u := <-ch; u.Type != unix.RTM_GETNEIGH {
		t.Fatalf("got %+v", u)
	}
	cancel()
	waitClosed(t, ch)
	if len(errs) != 0 {
		t.Fatalf("ended by ctx, onErr told %v", errs)
	}

	links, err := f.SubscribeLinks(t.Context(), func(err error) { errs = append(errs, err) })
	if err != nil {
		t.Fatal(err)
	}
	f.AddUnderlay("eth0", 1500, netip.MustParsePrefix("192.0.2.1/24")) // setup: no event
	f.EndSubscriptions()
	waitClosed(t, links)
	if len(errs) != 1 || !errors.Is(errs[0], unix.ENOBUFS) {
		t.Fatalf("ended by failure, onErr told %v", errs)
	}
}

func waitClosed[T any](t *testing.T, ch <-chan T) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("subscription channel not closed")
		}
	}
}
