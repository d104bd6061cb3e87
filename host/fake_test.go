package host

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
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
	if err := f.SetAppSolicit(idx, 3); err != nil {
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
	if err := f.SetAppSolicit(99, 3); !IsLinkNotFound(err) {
		t.Fatalf("absent link: %v, want not found", err)
	}
	f.RemoveLink("eth0")
	if got := f.Lines("neightbl"); got != "" {
		t.Fatalf("after link removal: %q", got)
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
