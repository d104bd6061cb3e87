package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/lease"
)

// errRace: another writer changed the key between our read and our write.
var errRace = errors.New("lost a race for the key")

// Acquire claims a subnet of cfg in flannel's order (lease.Choose: this
// node's lease, then the previous subnet, then a free block) and retries,
// re-listing each time, when another node wins a race. cfg is the caller's:
// the config is not read again, so the lease is chosen under the config the
// caller's device was built from.
func (s *Store) Acquire(ctx context.Context, cfg *lease.Network, req lease.Request) (lease.Lease, error) {
	if cfg == nil {
		return lease.Lease{}, fmt.Errorf("acquire lease: no network config given: %w", lease.ErrNoConfig)
	}
	if err := req.Attrs.CheckVXLAN(); err != nil {
		return lease.Lease{}, fmt.Errorf("acquire lease: %w", err)
	}
	value, err := json.Marshal(req.Attrs)
	if err != nil {
		return lease.Lease{}, fmt.Errorf("acquire lease: encode value: %w", err)
	}
	ttl := req.TTL
	if ttl <= 0 {
		ttl = lease.DefaultTTL
	}
	g := &grant{s: s, ttl: ttl}
	defer g.revokeUnused()
	for attempt := 1; ; attempt++ {
		l, err := s.acquireOnce(ctx, cfg, req, string(value), g)
		if err == nil {
			return l, nil
		}
		if !errors.Is(err, errRace) || attempt >= s.retries {
			return lease.Lease{}, fmt.Errorf("acquire lease (attempt %d): %w", attempt, err)
		}
		s.log.Debug("acquire lost a race, retrying", "attempt", attempt, "err", err)
	}
}

func (s *Store) acquireOnce(ctx context.Context, cfg *lease.Network, req lease.Request, value string, g *grant) (lease.Lease, error) {
	leases, blocked, _, err := s.list(ctx)
	if err != nil {
		return lease.Lease{}, err
	}
	// Blocked entries have zero Attrs: they mark their block taken and are
	// never ours.
	c, err := lease.Choose(cfg, append(leases, blocked...), req)
	if err != nil {
		return lease.Lease{}, err
	}
	for _, st := range c.Stale {
		s.log.Info("deleting our lease that no longer fits the network config", "key", st.Key())
		if err := s.deleteOwn(ctx, st); err != nil {
			return lease.Lease{}, err
		}
	}
	if c.Existing != nil {
		return s.reuse(ctx, *c.Existing, req.Attrs, value)
	}
	l := lease.Lease{Subnet: c.Subnet, IPv6Subnet: c.IPv6Subnet, Attrs: req.Attrs}
	id, err := g.get(ctx)
	if err != nil {
		return lease.Lease{}, err
	}
	key := s.subnetsDir() + l.Key()
	rev, ok, err := s.create(ctx, key, value, id)
	if err != nil {
		return lease.Lease{}, err
	}
	if !ok {
		return lease.Lease{}, fmt.Errorf("create %s: %w", l.Key(), errRace)
	}
	if err := s.checkCollision(ctx, l, key, rev, id); err != nil {
		return lease.Lease{}, err
	}
	g.used = true
	l.LeaseID, l.Expiration = int64(id), g.expires
	s.log.Info("created lease", "key", l.Key(), "from_prev", c.FromPrev, "from_prev_ipv6", c.FromPrevIPv6, "ttl", g.ttl)
	return l, nil
}

// create writes key with value under lease id if the key does not exist,
// and returns the revision of the write.
func (s *Store) create(ctx context.Context, key, value string, id clientv3.LeaseID) (int64, bool, error) {
	var resp *clientv3.TxnResponse
	err := s.timed(ctx, "txn", func(ctx context.Context) (err error) {
		resp, err = s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.Version(key), "=", 0)).
			Then(clientv3.OpPut(key, value, clientv3.WithLease(id))).
			Commit()
		return err
	})
	if err != nil {
		return 0, false, fmt.Errorf("create %s: %w", key, err)
	}
	return resp.Header.Revision, resp.Succeeded, nil
}

// checkCollision settles a race that the create transaction cannot see. A
// dual-stack key names two blocks, each chosen on its own, so two nodes
// racing can create two keys that share the IPv4 block or the IPv6 block
// (a single-family key is its block: the transaction sees that race). After
// creating key at revision rev, it lists the keys: when an older key (a
// lower create revision) overlaps either of our blocks, our key is deleted
// (if it still carries lease id) and errRace makes Acquire choose again.
// The other racer finds ours younger and keeps its own.
func (s *Store) checkCollision(ctx context.Context, l lease.Lease, key string, rev int64, id clientv3.LeaseID) error {
	if !l.Subnet.IsValid() || !l.IPv6Subnet.IsValid() {
		return nil
	}
	var resp *clientv3.GetResponse
	err := s.timed(ctx, "get", func(ctx context.Context) (err error) {
		resp, err = s.cli.Get(ctx, s.subnetsDir(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
		return err
	})
	if err != nil {
		return fmt.Errorf("check %s for a racing node: %w", key, err)
	}
	for _, kv := range resp.Kvs {
		v4, v6, err := lease.ParseKey(strings.TrimPrefix(string(kv.Key), s.subnetsDir()))
		if err != nil || string(kv.Key) == key || kv.CreateRevision >= rev {
			continue
		}
		if (v4.IsValid() && v4.Overlaps(l.Subnet)) || (v6.IsValid() && v6.Overlaps(l.IPv6Subnet)) {
			s.log.Info("another node created an overlapping lease first: choosing again", "key", l.Key(), "other", string(kv.Key))
			err := s.timed(context.WithoutCancel(ctx), "txn", func(ctx context.Context) error {
				_, err := s.cli.Txn(ctx).
					If(clientv3.Compare(clientv3.LeaseValue(key), "=", id)).
					Then(clientv3.OpDelete(key)).
					Commit()
				return err
			})
			if err != nil {
				return fmt.Errorf("delete %s, which overlaps the older %s: %w", key, kv.Key, err)
			}
			return fmt.Errorf("create %s: overlaps the older %s: %w", l.Key(), kv.Key, errRace)
		}
	}
	return nil
}

// reuse returns our existing lease, first updating its value with a CAS on
// ModRevision when it differs. The put keeps the key's own etcd lease
// (WithLease of the current ID; a reservation stays lease-less).
func (s *Store) reuse(ctx context.Context, l lease.Lease, attrs lease.Attrs, value string) (lease.Lease, error) {
	key := s.subnetsDir() + l.Key()
	var resp *clientv3.GetResponse
	if err := s.timed(ctx, "get", func(ctx context.Context) (err error) { resp, err = s.cli.Get(ctx, key); return err }); err != nil {
		return lease.Lease{}, fmt.Errorf("read %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].Lease != l.LeaseID {
		return lease.Lease{}, fmt.Errorf("read %s: changed since listed: %w", key, errRace)
	}
	kv := resp.Kvs[0]
	if string(kv.Value) != value {
		var opts []clientv3.OpOption
		if kv.Lease != 0 {
			opts = append(opts, clientv3.WithLease(clientv3.LeaseID(kv.Lease)))
		}
		var tr *clientv3.TxnResponse
		err := s.timed(ctx, "txn", func(ctx context.Context) (err error) {
			tr, err = s.cli.Txn(ctx).
				If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
				Then(clientv3.OpPut(key, value, opts...)).
				Commit()
			return err
		})
		if err != nil {
			return lease.Lease{}, fmt.Errorf("update %s: %w", key, err)
		}
		if !tr.Succeeded {
			return lease.Lease{}, fmt.Errorf("update %s: %w", key, errRace)
		}
		if old := l.Attrs.PublicAddr(); old != attrs.PublicAddr() {
			// Choose found it by our explicit --node-name under another
			// address: this node's IP changed, or another live node uses
			// the same name (that node then reports the conflict).
			s.log.Warn("took over the lease of our node name from another public IP (an IP change; if that IP is another live node, two nodes share --node-name)",
				"key", l.Key(), "node", attrs.NodeName, "old_public_ip", old, "public_ip", attrs.PublicAddr())
		}
		s.log.Info("updated our lease value", "key", l.Key(), "old", string(kv.Value), "new", value)
		l.Attrs = attrs
	}
	if !l.Reservation {
		l.Expiration = s.expiration(ctx, clientv3.LeaseID(l.LeaseID))
	}
	s.log.Info("reusing our lease", "key", l.Key(), "reservation", l.Reservation)
	return l, nil
}

// expiration asks etcd for the remaining TTL of our own lease (never called
// for peers' leases); zero when unknown.
func (s *Store) expiration(ctx context.Context, id clientv3.LeaseID) time.Time {
	var resp *clientv3.LeaseTimeToLiveResponse
	err := s.timed(ctx, "ttl", func(ctx context.Context) (err error) { resp, err = s.cli.TimeToLive(ctx, id); return err })
	if err != nil || resp.TTL <= 0 {
		return time.Time{}
	}
	return time.Now().Add(time.Duration(resp.TTL) * time.Second)
}

// deleteOwn removes a lease of ours that no longer fits the config, if the
// key is unchanged since listed, and revokes its etcd lease.
func (s *Store) deleteOwn(ctx context.Context, l lease.Lease) error {
	key := s.subnetsDir() + l.Key()
	err := s.timed(ctx, "txn", func(ctx context.Context) error {
		_, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.LeaseValue(key), "=", clientv3.LeaseID(l.LeaseID))).
			Then(clientv3.OpDelete(key)).
			Commit()
		return err
	})
	if err != nil {
		return fmt.Errorf("delete stale lease %s: %w", key, err)
	}
	return nil
}

// grant is one etcd lease, granted on first use and revoked at the end of
// Acquire unless a key was attached to it.
type grant struct {
	s       *Store
	ttl     time.Duration
	id      clientv3.LeaseID
	expires time.Time
	used    bool
}

func (g *grant) get(ctx context.Context) (clientv3.LeaseID, error) {
	if g.id != 0 {
		return g.id, nil
	}
	secs := max(int64(g.ttl/time.Second), 1)
	var resp *clientv3.LeaseGrantResponse
	err := g.s.timed(ctx, "grant", func(ctx context.Context) (err error) { resp, err = g.s.cli.Grant(ctx, secs); return err })
	if err != nil {
		return 0, fmt.Errorf("grant lease of %ds: %w", secs, err)
	}
	g.id, g.expires = resp.ID, time.Now().Add(time.Duration(resp.TTL)*time.Second)
	return g.id, nil
}

func (g *grant) revokeUnused() {
	if g.id == 0 || g.used {
		return
	}
	g.s.revoke(g.id)
}

// revoke drops an etcd lease we granted; it runs on its own context (with the
// operation deadline) so that it also happens after the caller's ctx ended.
func (s *Store) revoke(id clientv3.LeaseID) {
	err := s.timed(context.Background(), "revoke", func(ctx context.Context) error { _, err := s.cli.Revoke(ctx, id); return err })
	if err != nil {
		s.log.Warn("revoke unused etcd lease (it will expire by itself)", "lease_id", int64(id), "err", err)
	}
}
