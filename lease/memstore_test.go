package lease

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func recv(t *testing.T, ch <-chan []Event) []Event {
	t.Helper()
	select {
	case b, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("no watch batch within 10s")
	}
	return nil
}

func TestMemStoreLifecycle(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	n := mustNetwork(t, `{"Network":"10.244.0.0/16"}`)
	m := NewMemStore(nil)
	if _, err := m.NetworkConfig(ctx); !errors.Is(err, ErrNoConfig) {
		t.Fatalf("no config: %v", err)
	}
	m.SetConfig(n)
	peer := m.PutPeer(lease4("10.244.9.0/24", "198.18.0.9", "p"))
	w, err := m.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if snap := recv(t, w); len(snap) != 1 || snap[0].Type != Added || snap[0].Lease.Key() != peer.Key() {
		t.Fatalf("snapshot %+v", snap)
	}
	req := Request{Attrs: testAttrs(), Prev: netip.MustParsePrefix("10.244.5.0/24")}
	req.Attrs.NodeName = "me"
	l, err := m.Acquire(ctx, n, req)
	if err != nil || l.Subnet != req.Prev {
		t.Fatalf("acquire: %+v %v", l, err)
	}
	if b := recv(t, w); b[0].Type != Added || b[0].Lease.Subnet != l.Subnet {
		t.Fatalf("added: %+v", b)
	}
	// Restart with a new PublicIP: same subnet, value changed in place.
	req.Attrs.PublicIP = netip.MustParseAddr("198.18.0.77")
	l2, err := m.Acquire(ctx, n, req)
	if err != nil || l2.Subnet != l.Subnet || l2.Attrs.PublicIP != req.Attrs.PublicIP {
		t.Fatalf("re-acquire: %+v %v", l2, err)
	}
	if b := recv(t, w); b[0].Type != Changed {
		t.Fatalf("changed: %+v", b)
	}
	done := make(chan error, 1)
	kctx, kcancel := context.WithCancel(ctx)
	go func() { done <- m.KeepAlive(kctx, l2) }()
	// Our lease expires: watchers see removed, then KeepAlive re-creates it.
	m.Expire(l2.Key())
	if b := recv(t, w); b[0].Type != Removed {
		t.Fatalf("removed: %+v", b)
	}
	if b := recv(t, w); b[0].Type != Added || b[0].Lease.Key() != l2.Key() {
		t.Fatalf("re-added: %+v", b)
	}
	kcancel()
	if err := <-done; err != nil {
		t.Fatalf("keepalive after cancel: %v", err)
	}
	// Someone else takes our key: ErrLeaseLost.
	m.PutPeer(Lease{Subnet: l2.Subnet, Attrs: peer.Attrs})
	if err := m.KeepAlive(ctx, l2); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("keepalive on a taken key: %v", err)
	}
	cancel()
	for range w { // drains, then closes because ctx ended
	}
}

func TestMemStoreOutOfSubnets(t *testing.T) {
	n := mustNetwork(t, `{"Network":"10.244.0.0/28"}`) // /30 blocks: 3 usable
	m := NewMemStore(n)
	for i := range 3 {
		r := Request{Attrs: testAttrs()}
		r.Attrs.PublicIP = netip.AddrFrom4([4]byte{198, 18, 1, byte(i)})
		if _, err := m.Acquire(t.Context(), n, r); err != nil {
			t.Fatal(err)
		}
	}
	r := Request{Attrs: testAttrs()}
	_, err := m.Acquire(t.Context(), n, r)
	var oos *OutOfSubnetsError
	if !errors.As(err, &oos) || oos.Used != 3 || oos.Total != 3 {
		t.Fatalf("err %v", err)
	}
}

// Acquire uses the config it is given, not the stored one: the caller built
// its device from that config.
func TestMemStoreAcquireUsesGivenConfig(t *testing.T) {
	m := NewMemStore(mustNetwork(t, `{"Network":"10.244.0.0/16"}`))
	given := mustNetwork(t, `{"Network":"10.99.0.0/16"}`)
	l, err := m.Acquire(t.Context(), given, Request{Attrs: testAttrs()})
	if err != nil || !given.Network.Contains(l.Subnet.Addr()) {
		t.Fatalf("acquire under the given config: %+v %v", l, err)
	}
	if _, err := m.Acquire(t.Context(), nil, Request{Attrs: testAttrs()}); !errors.Is(err, ErrNoConfig) {
		t.Fatalf("acquire without config: %v", err)
	}
}

// PutRaw with an unusable value: skipped by List and Watch (a lease there
// before is removed), its block still taken; other leases stay.
func TestMemStorePutRaw(t *testing.T) {
	n := mustNetwork(t, `{"Network":"10.244.0.0/28"}`) // /30 blocks: 3 usable
	m := NewMemStore(n)
	keep := m.PutPeer(lease4("10.244.0.4/30", "198.18.0.9", "keep"))
	m.PutPeer(lease4("10.244.0.8/30", "198.18.0.10", "spoilt"))
	w, err := m.Watch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if snap := recv(t, w); len(snap) != 2 {
		t.Fatalf("snapshot %+v", snap)
	}
	if err := m.PutRaw("10.244.0.8-30", []byte(`{"PublicIP":`)); err == nil {
		t.Fatal("corrupt value accepted")
	}
	if b := recv(t, w); len(b) != 1 || b[0].Type != Removed || b[0].Lease.Key() != "10.244.0.8-30" {
		t.Fatalf("corrupted lease: %+v", b)
	}
	if ls, _ := m.List(t.Context()); len(ls) != 1 || ls[0].Key() != keep.Key() {
		t.Fatalf("list %+v", ls)
	}
	// Blocks left: 10.244.0.12/30 only (.0/30 is not between SubnetMin and SubnetMax).
	l, err := m.Acquire(t.Context(), n, Request{Attrs: testAttrs()})
	if err != nil || l.Subnet != netip.MustParsePrefix("10.244.0.12/30") {
		t.Fatalf("acquire next to a corrupt value: %+v %v", l, err)
	}
	if b := recv(t, w); b[0].Type != Added {
		t.Fatalf("own lease: %+v", b)
	}
	if err := m.PutRaw("not-a-key", []byte(`{}`)); err == nil {
		t.Fatal("bad key accepted")
	}
	// A usable value again is a lease again.
	if err := m.PutRaw("10.244.0.8-30", []byte(`{"PublicIP":"198.18.0.10","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:0a"}}`)); err != nil {
		t.Fatal(err)
	}
	if b := recv(t, w); b[0].Type != Added || b[0].Lease.Attrs.PublicIP != netip.MustParseAddr("198.18.0.10") {
		t.Fatalf("repaired lease: %+v", b)
	}
}

func TestMemStoreIPv6OnlyNodesGetDistinctLeases(t *testing.T) {
	cfg := mustNetwork(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48"}`)
	m := NewMemStore(cfg)
	keys := map[string]bool{}
	for i := range 3 {
		r := Request{Attrs: testAttrs6()}
		r.Attrs.PublicIPv6 = netip.AddrFrom16([16]byte{0xfd, 15: byte(i + 1)})
		l, err := m.Acquire(t.Context(), cfg, r)
		if err != nil || l.Subnet.IsValid() || !cfg.FitsIPv6(l.IPv6Subnet) || keys[l.Key()] {
			t.Fatalf("node %d: %+v %v", i, l, err)
		}
		keys[l.Key()] = true
		again, err := m.Acquire(t.Context(), cfg, r)
		if err != nil || again.Key() != l.Key() {
			t.Fatalf("node %d again: %s %v, want %s", i, again.Key(), err, l.Key())
		}
	}
	ls, _ := m.List(t.Context())
	if len(ls) != 3 {
		t.Errorf("List: %d leases", len(ls))
	}
}
