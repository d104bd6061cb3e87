package etcdstore_test

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/lease/etcdstore"
	"github.com/weftnet/weft/lease/etcdstore/etcdtest"
)

// 64 concurrent acquirers get 64 distinct blocks; filling the /16 then
// leaves the 256th acquirer with an out-of-subnets error that gives counts.
func TestAcquireConcurrentThenOutOfSubnets(t *testing.T) {
	eachEtcd(t, func(t *testing.T, eps []string) {
		cli, _ := setup(t, eps, testConfig)
		cfg, _ := lease.ParseNetwork([]byte(testConfig))
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			got  = map[netip.Prefix]string{}
			errs []error
		)
		for i := range 64 {
			wg.Go(func() {
				s := etcdstore.New(cli, "", nil) // each node has its own store
				ip := fmt.Sprintf("198.18.1.%d", i+1)
				l, err := acquire(tctx(t), s, req(ip, "node-"+ip))
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				if prev, dup := got[l.Subnet]; dup {
					errs = append(errs, fmt.Errorf("%s given to %s and %s", l.Subnet, prev, ip))
				}
				got[l.Subnet] = ip
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		if len(got) != 64 {
			t.Fatalf("%d distinct subnets, want 64", len(got))
		}
		for p := range got {
			if !cfg.Fits(p) {
				t.Errorf("%s does not fit the config", p)
			}
		}
		s := etcdstore.New(cli, "", nil)
		for i := 64; i < 255; i++ {
			ip := fmt.Sprintf("198.18.%d.%d", 2+i/250, 1+i%250)
			if _, err := acquire(tctx(t), s, req(ip, "")); err != nil {
				t.Fatalf("acquirer %d: %v", i+1, err)
			}
		}
		_, err := acquire(tctx(t), s, req("198.18.9.9", ""))
		var oos *lease.OutOfSubnetsError
		if !errors.As(err, &oos) || !errors.Is(err, lease.ErrOutOfSubnets) || oos.Used != 255 || oos.Total != 255 {
			t.Fatalf("256th acquirer: %v", err)
		}
		if !strings.Contains(err.Error(), "out of subnets: 255 of 255 IPv4 subnets in use") {
			t.Errorf("message %q lacks the counts", err)
		}
		all, err := s.List(tctx(t))
		if err != nil || len(all) != 255 {
			t.Fatalf("List: %d leases, %v", len(all), err)
		}
	})
}

func TestAcquireRestartKeepsSubnet(t *testing.T) {
	eachEtcd(t, func(t *testing.T, eps []string) {
		cli, s := setup(t, eps, testConfig)
		first, err := acquire(tctx(t), s, req("198.18.0.2", "node-a"))
		if err != nil {
			t.Fatal(err)
		}
		if first.Reservation || first.LeaseID == 0 || first.Expiration.IsZero() {
			t.Fatalf("first lease %+v", first)
		}
		// Restart with the same PublicIP and name: same key, same etcd lease.
		again, err := acquire(tctx(t), etcdstore.New(cli, "", nil), req("198.18.0.2", "node-a"))
		if err != nil || again.Subnet != first.Subnet || again.LeaseID != first.LeaseID {
			t.Fatalf("same IP: %+v %v (first %s)", again, err, first.Subnet)
		}
		// The node's IP changed: the name keeps the subnet, the value is
		// updated in place and the key keeps its etcd lease.
		moved, err := acquire(tctx(t), etcdstore.New(cli, "", nil), req("198.18.0.3", "node-a"))
		if err != nil || moved.Subnet != first.Subnet || moved.Attrs.PublicIP.String() != "198.18.0.3" {
			t.Fatalf("new IP: %+v %v", moved, err)
		}
		val, id, _ := rawKV(t, cli, subnetKey(first))
		if id != first.LeaseID || !strings.Contains(val, `"PublicIP":"198.18.0.3"`) {
			t.Fatalf("after update: value %s lease %x, want lease %x", val, id, first.LeaseID)
		}
		// A flannel-style restart without a name, same IP: same subnet.
		flannelish, err := acquire(tctx(t), etcdstore.New(cli, "", nil), req("198.18.0.3", "node-a"))
		if err != nil || flannelish.Subnet != first.Subnet {
			t.Fatalf("same IP again: %+v %v", flannelish, err)
		}
		// Another node claiming our PublicIP under another name is refused.
		_, err = acquire(tctx(t), s, req("198.18.0.3", "node-b"))
		if !errors.Is(err, lease.ErrPublicIPInUse) || !strings.Contains(err.Error(), "node-a") {
			t.Fatalf("IP conflict: %v", err)
		}
	})
}

func TestAcquirePrefersPreviousSubnet(t *testing.T) {
	eachEtcd(t, func(t *testing.T, eps []string) {
		_, s := setup(t, eps, testConfig)
		r := req("198.18.0.5", "node-c")
		r.Prev = netip.MustParsePrefix("10.244.77.0/24")
		l, err := acquire(tctx(t), s, r)
		if err != nil || l.Subnet != r.Prev {
			t.Fatalf("prev free: %+v %v", l, err)
		}
		// The same prev for another node is taken: it gets another block.
		r2 := req("198.18.0.6", "node-d")
		r2.Prev = r.Prev
		l2, err := acquire(tctx(t), s, r2)
		if err != nil || l2.Subnet == r.Prev {
			t.Fatalf("prev taken: %+v %v", l2, err)
		}
	})
}

// A key written with a plain put (no etcd lease) is a reservation: honoured,
// updated without attaching a lease, and still lease-less after a restart.
func TestReservationHonoured(t *testing.T) {
	eachEtcd(t, func(t *testing.T, eps []string) {
		cli, s := setup(t, eps, testConfig)
		key := lease.DefaultPrefix + "/subnets/10.244.50.0-24"
		old := attrs("198.18.0.50", "")
		old.BackendData.VtepMAC[5] = 0xff // the node's MAC changed since
		val, _ := old.MarshalJSON()
		if _, err := cli.Put(tctx(t), key, string(val)); err != nil {
			t.Fatal(err)
		}
		checkReservation(t, s, key, "198.18.0.50")
		_, id, ok := rawKV(t, cli, key)
		if !ok || id != 0 {
			t.Fatalf("after restart: present %v lease %x, want no lease", ok, id)
		}
	})
}

func checkReservation(t *testing.T, s *etcdstore.Store, key, ip string) {
	t.Helper()
	for range 2 { // the second round is a restart
		l, err := acquire(tctx(t), s, req(ip, ""))
		if err != nil || !l.Reservation || l.LeaseID != 0 || lease.DefaultPrefix+"/subnets/"+l.Key() != key {
			t.Fatalf("acquire: %+v %v", l, err)
		}
		ctx := withTimeout(t, 300*time.Millisecond)
		if err := s.KeepAlive(ctx, l); err != nil {
			t.Fatalf("keepalive of a reservation: %v", err)
		}
		if err := s.Release(tctx(t), l); err != nil {
			t.Fatalf("release of a reservation: %v", err)
		}
	}
}

func TestAcquireRejectsBadRequest(t *testing.T) {
	_, s := setup(t, startEmbedded(t), testConfig)
	bad := req("198.18.0.2", "")
	bad.Attrs.BackendType = "host-gw"
	if _, err := acquire(tctx(t), s, bad); err == nil {
		t.Error("host-gw request accepted")
	}
}

// Acquire chooses under the config it is given and does not read
// <prefix>/config again: a config changed in between (or absent) does not
// move the lease away from the config the caller built its device from.
func TestAcquireUsesGivenConfig(t *testing.T) {
	cli := etcdtest.Client(t, startEmbedded(t))
	s := etcdstore.New(cli, "", testLogger(t)) // no config key at all
	given, err := lease.ParseNetwork([]byte(`{"Network":"10.99.0.0/16","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.Acquire(tctx(t), given, req("198.18.0.2", ""))
	if err != nil || !given.Network.Contains(l.Subnet.Addr()) {
		t.Fatalf("acquire under the given config: %+v %v", l, err)
	}
	if _, err := s.Acquire(tctx(t), nil, req("198.18.0.3", "")); !errors.Is(err, lease.ErrNoConfig) {
		t.Fatalf("acquire without a config: %v", err)
	}
}
