package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
)

func mustRange(t *testing.T, subnet string) Range {
	t.Helper()
	r := Range{Subnet: netip.MustParsePrefix(subnet)}
	if err := r.Canonicalize(); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestAllocatorRoundRobin(t *testing.T) {
	s := NewFakeStore()
	a := NewAllocator(s, mustRange(t, "10.244.1.0/29"), 0) // usable .1-.6, .1 is the gateway
	var got []string
	for i := range 5 {
		ip, err := a.Get(fmt.Sprintf("c%d", i), "eth0")
		if err != nil {
			t.Fatalf("Get %d: %v", i, err)
		}
		got = append(got, ip.String())
	}
	if want := "[10.244.1.2 10.244.1.3 10.244.1.4 10.244.1.5 10.244.1.6]"; fmtSlice(got) != want {
		t.Fatalf("allocated %s, want %s", fmtSlice(got), want)
	}
	if _, err := a.Get("c5", "eth0"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Get on full range: %v, want ErrExhausted", err)
	}
	// Releasing .3 and asking again: the search starts after the last
	// reserved (.6), wraps, skips the gateway and finds .3.
	if err := a.Release("c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	ip, err := a.Get("c6", "eth0")
	if err != nil || ip.String() != "10.244.1.3" {
		t.Fatalf("Get after release = %v, %v; want 10.244.1.3", ip, err)
	}
}

func TestAllocatorDoesNotReuseAtOnce(t *testing.T) {
	s := NewFakeStore()
	a := NewAllocator(s, mustRange(t, "10.244.1.0/24"), 0)
	first, err := a.Get("a", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Release("a", "eth0"); err != nil {
		t.Fatal(err)
	}
	second, err := a.Get("b", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if second == first || second != first.Next() {
		t.Fatalf("second = %s after releasing %s, want %s", second, first, first.Next())
	}
}

func TestAllocatorLastReservedOutsideRange(t *testing.T) {
	s := NewFakeStore()
	s.last[0] = netip.MustParseAddr("192.168.0.9") // left by another range
	a := NewAllocator(s, mustRange(t, "10.244.1.0/24"), 0)
	ip, err := a.Get("a", "eth0")
	if err != nil || ip.String() != "10.244.1.2" {
		t.Fatalf("Get = %v, %v; want 10.244.1.2", ip, err)
	}
}

func TestAllocatorReleaseIPAndHeld(t *testing.T) {
	s := NewFakeStore()
	a := NewAllocator(s, mustRange(t, "10.244.1.0/24"), 0)
	first, err := a.Get("a", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	second, err := a.Get("a", "eth0") // a repeated ADD: Get does not refuse it
	if err != nil {
		t.Fatal(err)
	}
	if held, err := a.Held("a", "eth0"); err != nil || fmt.Sprint(held) != fmt.Sprint([]netip.Addr{first, second}) {
		t.Fatalf("Held = %v, %v", held, err)
	}
	if err := a.ReleaseIP("b", "eth0", second); err != nil { // not b's: left alone
		t.Fatal(err)
	}
	if err := a.ReleaseIP("a", "eth0", second); err != nil {
		t.Fatal(err)
	}
	if held, _ := a.Held("a", "eth0"); fmt.Sprint(held) != fmt.Sprint([]netip.Addr{first}) {
		t.Fatalf("after ReleaseIP: Held = %v, want only %s", held, first)
	}
}

func TestAllocatorNeverHandsOutReserved(t *testing.T) {
	r := Range{Subnet: netip.MustParsePrefix("10.0.0.0/28"), Gateway: netip.MustParseAddr("10.0.0.7")}
	if err := r.Canonicalize(); err != nil {
		t.Fatal(err)
	}
	a := NewAllocator(NewFakeStore(), r, 0)
	seen := map[netip.Addr]bool{}
	for i := 0; ; i++ {
		ip, err := a.Get(fmt.Sprint(i), "eth0")
		if errors.Is(err, ErrExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ip == r.Gateway || ip.String() == "10.0.0.0" || ip.String() == "10.0.0.15" || seen[ip] {
			t.Fatalf("handed out %s", ip)
		}
		seen[ip] = true
	}
	if len(seen) != 13 { // 14 usable minus the gateway
		t.Fatalf("handed out %d addresses, want 13", len(seen))
	}
}

type failingStore struct {
	*FakeStore
	err error
}

func (f failingStore) Reserve(string, string, netip.Addr, int) (bool, error) { return false, f.err }

func TestAllocatorStoreErrorAndUnlock(t *testing.T) {
	fs := NewFakeStore()
	boom := errors.New("disk full")
	a := NewAllocator(failingStore{fs, boom}, mustRange(t, "10.244.1.0/24"), 0)
	if _, err := a.Get("a", "eth0"); !errors.Is(err, boom) {
		t.Fatalf("Get = %v, want %v", err, boom)
	}
	if fs.locked {
		t.Fatal("store left locked after an error")
	}
}
