package etcdstore_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/lease/etcdstore"
)

// A revoked etcd lease is re-created at the same key by KeepAlive; watchers
// see removed then added. A key taken by another node ends in ErrLeaseLost.
func TestKeepAliveRecreatesRevokedLease(t *testing.T) {
	eachEtcd(t, func(t *testing.T, eps []string) {
		cli, s := setup(t, eps, testConfig)
		l, err := acquire(tctx(t), s, req("198.18.0.2", "node-a"))
		if err != nil {
			t.Fatal(err)
		}
		w, err := etcdstore.New(cli, "", nil).Watch(tctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if snap := next(t, w); len(snap) != 1 || snap[0].Lease.Key() != l.Key() {
			t.Fatalf("snapshot %+v", snap)
		}
		ctx, cancel := context.WithCancel(tctx(t))
		done := make(chan error, 1)
		go func() { done <- s.KeepAlive(ctx, l) }()
		t.Cleanup(func() { cancel(); <-done })

		if _, err := cli.Revoke(tctx(t), clientv3.LeaseID(l.LeaseID)); err != nil {
			t.Fatal(err)
		}
		want := []string{"removed " + l.Key(), "added " + l.Key()}
		if got := collect(t, w, 2); !slices.Equal(got, want) {
			t.Fatalf("events %q, want %q", got, want)
		}
		_, id, ok := rawKV(t, cli, subnetKey(l))
		if !ok || id == 0 || id == l.LeaseID {
			t.Fatalf("re-created key: present %v lease %x (old %x)", ok, id, l.LeaseID)
		}
		// Another node overwrites our key: KeepAlive gives up with ErrLeaseLost.
		other, _ := attrs("198.18.0.9", "node-z").MarshalJSON()
		g, err := cli.Grant(tctx(t), 60)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(tctx(t), subnetKey(l), string(other), clientv3.WithLease(g.ID)); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if !errors.Is(err, lease.ErrLeaseLost) {
				t.Fatalf("keepalive: %v, want ErrLeaseLost", err)
			}
			done <- nil // for the cleanup
		case <-time.After(30 * time.Second):
			t.Fatal("keepalive did not notice the key was taken")
		}
	})
}

func TestKeepAliveRenewsSameLeaseAndStopsWithContext(t *testing.T) {
	cli, s := setup(t, startEmbedded(t), testConfig)
	r := req("198.18.0.2", "")
	r.TTL = 3 * time.Second
	l, err := acquire(tctx(t), s, r)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(tctx(t), 5*time.Second) // longer than the TTL
	defer cancel()
	if err := s.KeepAlive(ctx, l); err != nil {
		t.Fatalf("keepalive: %v", err)
	}
	_, id, ok := rawKV(t, cli, subnetKey(l))
	if !ok || id != l.LeaseID {
		t.Fatalf("after renewals: present %v lease %x, want the same lease %x", ok, id, l.LeaseID)
	}
}

func TestRelease(t *testing.T) {
	cli, s := setup(t, startEmbedded(t), testConfig)
	l, err := acquire(tctx(t), s, req("198.18.0.2", ""))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(tctx(t), l); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := rawKV(t, cli, subnetKey(l)); ok {
		t.Fatal("released key still present")
	}
	if err := s.Release(tctx(t), l); err != nil {
		t.Fatalf("second release: %v", err)
	}
}

// The reservation test with the real etcdctl, as an operator would do it.
func TestReservationWithEtcdctl(t *testing.T) {
	bin, err := exec.LookPath("etcdctl")
	if err != nil {
		t.Skip("etcdctl not installed")
	}
	eps := startEmbedded(t)
	cli, s := setup(t, eps, testConfig)
	key := lease.DefaultPrefix + "/subnets/10.244.60.0-24"
	val, _ := attrs("198.18.0.60", "").MarshalJSON()
	cmd := exec.Command(bin, "--endpoints", eps[0], "put", key, string(val))
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("etcdctl put: %v: %s", err, out)
	}
	checkReservation(t, s, key, "198.18.0.60")
	if _, id, ok := rawKV(t, cli, key); !ok || id != 0 {
		t.Fatalf("after restart: present %v lease %x", ok, id)
	}
}
