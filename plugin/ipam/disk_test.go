package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

func openStore(t *testing.T, dataDir string) *DiskStore {
	t.Helper()
	s, err := OpenDiskStore(dataDir, "cbr0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestDiskStoreHostLocalLayout(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	a := NewAllocator(s, mustRange(t, "10.244.1.0/24"), 0)
	ip, err := a.Get("ctr1", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "cbr0", ip.String()))
	if err != nil || string(b) != "ctr1\r\neth0" {
		t.Fatalf("reservation file = %q, %v; want host-local's %q", b, err, "ctr1\r\neth0")
	}
	b, err = os.ReadFile(filepath.Join(dir, "cbr0", "last_reserved_ip.0"))
	if err != nil || string(b) != ip.String() {
		t.Fatalf("last_reserved_ip.0 = %q, %v; want %q", b, err, ip)
	}
	if _, err := os.Stat(filepath.Join(dir, "cbr0", "lock")); err != nil {
		t.Fatalf("lock file: %v", err)
	}
	if err := a.Release("ctr1", "eth0"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cbr0", ip.String())); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after release: %v", err)
	}
}

func TestDiskStoreReadsOtherLayouts(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	for name, content := range map[string]string{
		"10.244.1.2": "a\r\neth0", // host-local
		"10.244.1.3": "b\neth0\n", // plain newline
		"10.244.1.4": "c",         // host-local before ifnames
		"10.244.1.5": "c\r\nnet1", // same container, other ifname
		"lock.bak":   "not an ip", // ignored
		"10.244.1.x": "not an ip", // ignored
	} {
		if err := os.WriteFile(filepath.Join(s.Dir(), name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(rs)
	want := "[{10.244.1.2 a eth0} {10.244.1.3 b eth0} {10.244.1.4 c } {10.244.1.5 c net1}]"
	if got != want {
		t.Fatalf("List = %s\nwant   %s", got, want)
	}
	ips, err := s.GetByID("c", "eth0")
	if err != nil || fmt.Sprint(ips) != "[10.244.1.4]" {
		t.Fatalf("GetByID(c, eth0) = %v, %v; want the old-layout file", ips, err)
	}
	// An exact match exists for (c, net1): only that one goes.
	if err := s.ReleaseByID("c", "net1"); err != nil {
		t.Fatal(err)
	}
	// No exact match for (c, eth0): the old-layout file goes.
	if err := s.ReleaseByID("c", "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseByID("b", "eth0"); err != nil {
		t.Fatal(err)
	}
	rs, _ = s.List()
	if fmt.Sprint(rs) != "[{10.244.1.2 a eth0}]" {
		t.Fatalf("after releases: %v", rs)
	}
	if err := s.ReleaseByID("nobody", "eth0"); err != nil {
		t.Fatalf("releasing nothing: %v", err)
	}
}

func TestDiskStoreReserveExclusive(t *testing.T) {
	s := openStore(t, t.TempDir())
	ip := netip.MustParseAddr("10.244.1.9")
	if ok, err := s.Reserve("a", "eth0", ip, 0); !ok || err != nil {
		t.Fatalf("first Reserve = %v, %v", ok, err)
	}
	if ok, err := s.Reserve("b", "eth0", ip, 0); ok || err != nil {
		t.Fatalf("second Reserve = %v, %v; want false, nil", ok, err)
	}
	if last, err := s.LastReserved(0); err != nil || last != ip {
		t.Fatalf("LastReserved = %v, %v", last, err)
	}
}

// TestDiskStoreLastReservedRewrite: last_reserved_ip.0 is rewritten in place,
// so a shorter address after a longer one must leave no tail behind.
func TestDiskStoreLastReservedRewrite(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	for i, ip := range []string{"10.244.1.100", "10.244.1.9", "10.244.1.10"} {
		if ok, err := s.Reserve(fmt.Sprint("c", i), "eth0", netip.MustParseAddr(ip), 0); !ok || err != nil {
			t.Fatalf("Reserve %s = %v, %v", ip, ok, err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "cbr0", "last_reserved_ip.0"))
		if err != nil || string(b) != ip {
			t.Fatalf("last_reserved_ip.0 = %q, %v; want %q", b, err, ip)
		}
	}
}

func TestDiskStoreLockExcludesOthers(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	if err := s.Lock(); err != nil {
		t.Fatal(err)
	}
	other, err := os.Open(filepath.Join(dir, "cbr0", "lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := syscall.Flock(int(other.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("flock while held = %v, want EWOULDBLOCK", err)
	}
	if err := s.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(other.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("flock after Unlock = %v", err)
	}
}

func TestDiskStoreConcurrentAllocators(t *testing.T) {
	dir := t.TempDir()
	rng := mustRange(t, "10.244.1.0/24")
	const n = 64
	ips := make([]netip.Addr, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s, err := OpenDiskStore(dir, "cbr0") // one store per "process"
			if err != nil {
				errs[i] = err
				return
			}
			defer s.Close()
			ips[i], errs[i] = NewAllocator(s, rng, 0).Get(fmt.Sprintf("c%d", i), "eth0")
		})
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("allocator %d: %v", i, errs[i])
		}
		if j, dup := seen[ips[i]]; dup {
			t.Fatalf("allocators %d and %d both got %s", j, i, ips[i])
		}
		seen[ips[i]] = i
	}
}

func TestOpenDiskStoreRejectsPathNames(t *testing.T) {
	for _, name := range []string{"", ".", "..", "a/b"} {
		if _, err := OpenDiskStore(t.TempDir(), name); err == nil {
			t.Errorf("OpenDiskStore(%q) succeeded", name)
		}
	}
}

func TestDiskStoreReleaseChecksOwner(t *testing.T) {
	s := openStore(t, t.TempDir())
	ip := netip.MustParseAddr("10.244.1.9")
	if ok, err := s.Reserve("a", "eth0", ip, 0); !ok || err != nil {
		t.Fatal(ok, err)
	}
	for _, other := range [][2]string{{"b", "eth0"}, {"a", "eth1"}} {
		if err := s.Release(ip, other[0], other[1]); err != nil {
			t.Fatal(err)
		}
		if rs, _ := s.List(); len(rs) != 1 {
			t.Fatalf("Release by %v removed a's reservation", other)
		}
	}
	if err := s.Release(ip, "a", "eth0"); err != nil {
		t.Fatal(err)
	}
	if rs, _ := s.List(); len(rs) != 0 {
		t.Fatalf("left %v", rs)
	}
	if err := s.Release(ip, "a", "eth0"); err != nil {
		t.Fatalf("second Release: %v", err)
	}
}

// TestDiskStoreTwoRanges: an IPv4 and an IPv6 range share one directory as
// host-local's two range sets do: one file per address, each range's cursor
// in last_reserved_ip.<range ID>, a reservation written by host-local (IPv6
// file named by the address) respected, and one Release freeing both.
func TestDiskStoreTwoRanges(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	// host-local reserved fd00:1::2 for another pod and left its cursor there.
	for name, content := range map[string]string{"fd00:1::2": "other\r\neth0", "last_reserved_ip.1": "fd00:1::2"} {
		if err := os.WriteFile(filepath.Join(s.Dir(), name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a4 := NewAllocator(s, mustRange(t, "10.244.1.0/24"), 0)
	a6 := NewAllocator(s, mustRange(t, "fd00:1::/64"), 1)
	ip4, err := a4.Get("ctr1", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	ip6, err := a6.Get("ctr1", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if ip4.String() != "10.244.1.2" || ip6.String() != "fd00:1::3" {
		t.Fatalf("got %s and %s, want 10.244.1.2 and fd00:1::3 (fd00:1::2 is host-local's)", ip4, ip6)
	}
	for name, want := range map[string]string{
		"10.244.1.2": "ctr1\r\neth0", "fd00:1::3": "ctr1\r\neth0",
		"last_reserved_ip.0": "10.244.1.2", "last_reserved_ip.1": "fd00:1::3",
	} {
		if b, err := os.ReadFile(filepath.Join(dir, "cbr0", name)); err != nil || string(b) != want {
			t.Fatalf("%s = %q, %v; want %q", name, b, err, want)
		}
	}
	if held, err := a6.Held("ctr1", "eth0"); err != nil || fmt.Sprint(held) != "[fd00:1::3]" {
		t.Fatalf("IPv6 Held = %v, %v", held, err)
	}
	if err := a4.Release("ctr1", "eth0"); err != nil {
		t.Fatal(err)
	}
	rs, _ := s.List()
	if fmt.Sprint(rs) != "[{fd00:1::2 other eth0}]" {
		t.Fatalf("after Release: %v, want only host-local's reservation", rs)
	}
}
