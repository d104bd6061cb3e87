package etcdstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/lease"
)

// Entry is one key under <prefix>/subnets/ as `weftd subnets` shows it.
type Entry struct {
	Key string // the full etcd key
	// Lease is the decoded lease when Err is nil, with Expiration set from
	// etcd's TimeToLive (zero for a reservation). When Err is set, Subnet is
	// set if the key parses and LeaseID is the key's etcd lease (0: none).
	Lease lease.Lease
	// Err says why agents skip the key: a key or value that does not parse,
	// or a lease of another backend. nil for a usable lease.
	Err error
}

// Inspect lists every key under <prefix>/subnets/, sorted by key: the usable
// leases with the TTL left (one TimeToLive call per lease: for a human
// looking once, never the agent's path) and the keys agents skip, with why.
// It logs nothing about those keys (its caller shows them).
func (s *Store) Inspect(ctx context.Context) ([]Entry, error) {
	var resp *clientv3.GetResponse
	err := s.timed(ctx, "get", func(ctx context.Context) (err error) {
		resp, err = s.cli.Get(ctx, s.subnetsDir(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list leases under %s: %w", s.subnetsDir(), err)
	}
	out := make([]Entry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		e := Entry{Key: string(kv.Key)}
		e.Lease, e.Err = s.decodeErr(kv.Key, kv.Value, kv.Lease)
		if e.Err != nil {
			e.Lease = lease.Lease{LeaseID: kv.Lease}
			if v4, v6, err := lease.ParseKey(strings.TrimPrefix(e.Key, s.subnetsDir())); err == nil {
				e.Lease.Subnet, e.Lease.IPv6Subnet = v4, v6
			}
			out = append(out, e)
			continue
		}
		if !e.Lease.Reservation {
			var ttl *clientv3.LeaseTimeToLiveResponse
			err := s.timed(ctx, "ttl", func(ctx context.Context) (err error) {
				ttl, err = s.cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease))
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("TTL of %s: %w", e.Key, err)
			}
			if ttl.TTL >= 0 {
				e.Lease.Expiration = time.Now().Add(time.Duration(ttl.TTL) * time.Second)
			}
		}
		out = append(out, e)
	}
	return out, nil
}
