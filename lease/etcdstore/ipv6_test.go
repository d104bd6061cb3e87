package etcdstore_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/lease/etcdstore"
)

const (
	dualConfig     = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`
	ipv6OnlyConfig = `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`
)

// attrsFor is node i's value in a dual-stack (v4 true) or IPv6-only network.
func attrsFor(i int, v4 bool) lease.Attrs {
	a := lease.Attrs{
		PublicIPv6:    netip.AddrFrom16([16]byte{0xfd, 15: byte(i)}),
		BackendType:   "vxlan",
		BackendV6Data: &lease.VXLANData{VNI: 1, VtepMAC: net.HardwareAddr{0x0a, 0x66, 0, 0, 0, byte(i)}},
	}
	if v4 {
		a.PublicIP = netip.AddrFrom4([4]byte{198, 18, 0, byte(i)})
		a.BackendData = &lease.VXLANData{VNI: 1, VtepMAC: net.HardwareAddr{0x0a, 0x44, 0, 0, 0, byte(i)}}
	}
	return a
}

// Three nodes acquiring at once in a dual-stack and in an IPv6-only network
// get distinct blocks of each family, keys and values as flannel writes
// them, and the same lease back when they restart.
func TestAcquireDualAndIPv6OnlyThreeNodes(t *testing.T) {
	eachEtcd(t, func(t *testing.T, eps []string) {
		for _, tc := range []struct {
			name, config string
			v4           bool
			value        string
		}{
			{"dual", dualConfig, true, `{"PublicIP":"198.18.0.1","PublicIPv6":"fd00::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:44:00:00:00:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"0a:66:00:00:00:01"}}`},
			{"IPv6-only", ipv6OnlyConfig, false, `{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::1","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"0a:66:00:00:00:01"}}`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				cli, s := setup(t, eps, tc.config)
				if _, err := cli.Delete(tctx(t), lease.DefaultPrefix+"/subnets/", clientv3.WithPrefix()); err != nil {
					t.Fatal(err) // the other subtest's leases
				}
				cfg, err := s.NetworkConfig(tctx(t))
				if err != nil {
					t.Fatal(err)
				}
				var wg sync.WaitGroup
				got := make([]lease.Lease, 3)
				errs := make([]error, 3)
				for i := range 3 {
					wg.Go(func() {
						got[i], errs[i] = etcdstore.New(cli, "", nil).Acquire(tctx(t), cfg, lease.Request{Attrs: attrsFor(i+1, tc.v4), TTL: time.Hour})
					})
				}
				wg.Wait()
				if err := errors.Join(errs...); err != nil {
					t.Fatal(err)
				}
				seen4, seen6 := map[netip.Prefix]bool{}, map[netip.Prefix]bool{}
				for i, l := range got {
					if !cfg.FitsLease(l) || seen6[l.IPv6Subnet] || (tc.v4 && seen4[l.Subnet]) {
						t.Fatalf("node %d: %s does not fit or is not distinct (%v)", i+1, l.Key(), got)
					}
					seen4[l.Subnet], seen6[l.IPv6Subnet] = true, true
					if want := "0.0.0.0-0&"; !tc.v4 && !strings.HasPrefix(l.Key(), want) {
						t.Errorf("IPv6-only key %s, want %s...", l.Key(), want)
					}
				}
				val, id, ok := rawKV(t, cli, subnetKey(got[0]))
				if !ok || val != tc.value || id != got[0].LeaseID {
					t.Errorf("stored %s (lease %x), want %s (lease %x)", val, id, tc.value, got[0].LeaseID)
				}
				// A restart finds its own lease by PublicIP (dual) or
				// PublicIPv6 (IPv6-only), with the same etcd lease.
				for i, l := range got {
					again, err := etcdstore.New(cli, "", nil).Acquire(tctx(t), cfg, lease.Request{Attrs: attrsFor(i+1, tc.v4), TTL: time.Hour})
					if err != nil || again.Key() != l.Key() || again.LeaseID != l.LeaseID {
						t.Errorf("node %d restart: %s %v, want %s", i+1, again.Key(), err, l.Key())
					}
				}
				// The previous subnets are preferred per family when free
				// (blocks none of the three nodes drew at random).
				free := func(format string, seen map[netip.Prefix]bool) netip.Prefix {
					for i := 77; ; i++ {
						if p := mustPrefix(fmt.Sprintf(format, i)); !seen[p] {
							return p
						}
					}
				}
				r := lease.Request{Attrs: attrsFor(9, tc.v4), TTL: time.Hour, PrevIPv6: free("fc00:0:0:%x::/64", seen6)}
				if tc.v4 {
					r.Prev = free("10.244.%d.0/24", seen4)
				}
				l, err := s.Acquire(tctx(t), cfg, r)
				if err != nil || l.Subnet != r.Prev || l.IPv6Subnet != r.PrevIPv6 {
					t.Errorf("prev: %s %v", l.Key(), err)
				}
			})
		}
	})
}

// In dual stack the create transaction only sees a race for the same key.
// Here the IPv6 range has three blocks and the IPv4 range many: racing
// nodes that pick one IPv6 block under different IPv4 blocks must still end
// with distinct IPv6 blocks (and the same for a small IPv4 range).
func TestAcquireDualRaceForOneFamily(t *testing.T) {
	eachEtcd(t, func(t *testing.T, eps []string) {
		cli, _ := setup(t, eps, testConfig)
		for round, config := range []string{
			`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/60","IPv6SubnetLen":62,"Backend":{"Type":"vxlan"}}`,
			`{"Network":"10.244.0.0/28","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`,
		} {
			for rep := range 4 {
				prefix := fmt.Sprintf("/race-%d-%d", round, rep)
				s := etcdstore.New(cli, prefix, testLogger(t))
				if err := s.PutConfig(tctx(t), []byte(config)); err != nil {
					t.Fatal(err)
				}
				cfg, err := s.NetworkConfig(tctx(t))
				if err != nil {
					t.Fatal(err)
				}
				var wg sync.WaitGroup
				errs := make([]error, 3)
				for i := range 3 {
					wg.Go(func() {
						_, errs[i] = etcdstore.New(cli, prefix, nil).Acquire(tctx(t), cfg, lease.Request{Attrs: attrsFor(i+1, true), TTL: time.Hour})
					})
				}
				wg.Wait()
				if err := errors.Join(errs...); err != nil {
					t.Fatal(err)
				}
				all, err := s.List(tctx(t))
				if err != nil || len(all) != 3 {
					t.Fatalf("round %d.%d: %d leases, %v", round, rep, len(all), err)
				}
				seen4, seen6 := map[netip.Prefix]string{}, map[netip.Prefix]string{}
				for _, l := range all {
					if k, dup := seen4[l.Subnet]; dup {
						t.Fatalf("round %d.%d: %s and %s share the IPv4 block", round, rep, k, l.Key())
					}
					if k, dup := seen6[l.IPv6Subnet]; dup {
						t.Fatalf("round %d.%d: %s and %s share the IPv6 block", round, rep, k, l.Key())
					}
					seen4[l.Subnet], seen6[l.IPv6Subnet] = l.Key(), l.Key()
				}
			}
		}
	})
}

// The watch delivers IPv6-only leases, all with the zero Subnet, each under
// its own key: added, changed and removed.
func TestWatchIPv6OnlyLeases(t *testing.T) {
	eachEtcd(t, func(t *testing.T, eps []string) {
		cli, s := setup(t, eps, ipv6OnlyConfig)
		cfg, err := s.NetworkConfig(tctx(t))
		if err != nil {
			t.Fatal(err)
		}
		a, err := s.Acquire(tctx(t), cfg, lease.Request{Attrs: attrsFor(1, false), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		w, err := etcdstore.New(cli, "", testLogger(t)).Watch(tctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if got := collect(t, w, 1); !slices.Equal(got, []string{"added " + a.Key()}) {
			t.Fatalf("snapshot %q", got)
		}
		b, err := s.Acquire(tctx(t), cfg, lease.Request{Attrs: attrsFor(2, false), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		batch := next(t, w)
		if len(batch) != 1 || batch[0].Type != lease.Added || batch[0].Lease.Key() != b.Key() ||
			batch[0].Lease.Subnet.IsValid() || !batch[0].Lease.Attrs.HasIPv6() || batch[0].Lease.Attrs.PublicIP.IsValid() {
			t.Fatalf("add: %+v", batch)
		}
		rb := lease.Request{Attrs: attrsFor(2, false), TTL: time.Hour}
		rb.Attrs.BackendV6Data.VtepMAC[0] = 0x02
		if _, err := s.Acquire(tctx(t), cfg, rb); err != nil {
			t.Fatal(err)
		}
		batch = next(t, w)
		if len(batch) != 1 || batch[0].Type != lease.Changed || batch[0].Lease.Key() != b.Key() || batch[0].Lease.Attrs.BackendV6Data.VtepMAC[0] != 0x02 {
			t.Fatalf("change: %+v", batch)
		}
		if err := s.Release(tctx(t), a); err != nil {
			t.Fatal(err)
		}
		if got := collect(t, w, 1); !slices.Equal(got, []string{"removed " + a.Key()}) {
			t.Fatalf("remove: %q", got)
		}
		// Inspect shows both keys with their own IPv6 blocks.
		entries, err := s.Inspect(tctx(t))
		if err != nil || len(entries) != 1 || entries[0].Lease.Key() != b.Key() {
			t.Fatalf("Inspect: %+v %v", entries, err)
		}
		keys := []string{a.Key(), b.Key()}
		sort.Strings(keys)
		if keys[0] == keys[1] {
			t.Fatalf("two IPv6-only leases under one key %s", keys[0])
		}
	})
}
