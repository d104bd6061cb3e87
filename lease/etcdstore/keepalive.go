package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/lease"
)

// errGone: our etcd lease or our key is gone; re-create the key.
var errGone = errors.New("our lease is gone")

// KeepAlive renews l's etcd lease with etcd's KeepAlive stream (same lease
// ID, never a re-grant plus Put) until ctx ends, then returns nil. It also
// watches our key, so a revoked or expired lease is noticed at once rather
// than at the next renewal (TTL/3 away). When the lease is lost it re-creates
// the same key with the create transaction under a new etcd lease of the same
// TTL; when the key now holds another node's value it returns an error
// matching lease.ErrLeaseLost. A reservation is never given a lease:
// KeepAlive just waits for ctx.
func (s *Store) KeepAlive(ctx context.Context, l lease.Lease) error {
	if l.Reservation {
		<-ctx.Done()
		return nil
	}
	value, err := json.Marshal(l.Attrs)
	if err != nil {
		return fmt.Errorf("keep lease %s alive: encode value: %w", l.Key(), err)
	}
	ttl := time.Until(l.Expiration)
	id := clientv3.LeaseID(l.LeaseID)
	var delay time.Duration
	for ctx.Err() == nil {
		start := time.Now()
		err := s.renew(ctx, l, id, &ttl)
		if time.Since(start) > s.backoff.max {
			delay = 0 // it worked for a while: the next failure starts the backoff afresh
		}
		if err == errGone {
			s.log.Warn("our etcd lease is gone (revoked or expired): re-creating the same key", "key", l.Key(), "lease_id", int64(id))
			var nid clientv3.LeaseID
			if nid, err = s.recreate(ctx, l, string(value), ttl); err == nil {
				id, delay = nid, 0
				continue
			}
		}
		if errors.Is(err, lease.ErrLeaseLost) {
			return fmt.Errorf("keep lease %s alive: %w", l.Key(), err)
		}
		if err == nil || ctx.Err() != nil {
			continue
		}
		delay = s.backoff.next(delay)
		// etcd not answering is logged by the health state (at most every
		// 30 s); the retry waits for etcd to answer again.
		if !errors.Is(err, ErrUnreachable) && !errors.Is(err, errEtcdDown) {
			s.log.Warn("keepalive failed, retrying", "key", l.Key(), "lease_id", int64(id), "err", err, "retry_in", delay)
		}
		s.health.wait(ctx, delay)
	}
	return nil
}

// renew keeps lease id alive while watching our key. It returns nil when ctx
// ends, errGone when the lease or key is gone (or re-created by another
// process of ours), lease.ErrLeaseLost when the key holds another node's
// value, errEtcdDown when the health state says etcd is down, and other
// errors for retry. ttl is updated from etcd's answers.
func (s *Store) renew(ctx context.Context, l lease.Lease, id clientv3.LeaseID, ttl *time.Duration) error {
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	key := s.subnetsDir() + l.Key()
	var resp *clientv3.GetResponse
	if err := s.timed(kctx, "get", func(ctx context.Context) (err error) { resp, err = s.cli.Get(ctx, key); return err }); err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return errGone
	}
	if kv := resp.Kvs[0]; kv.Lease != int64(id) {
		return s.checkOwner(kv.Key, kv.Value, kv.Lease, l.Attrs)
	} else if err := s.checkOwner(kv.Key, kv.Value, kv.Lease, l.Attrs); err != errGone {
		return err // taken over in place while we were not watching
	}
	// Watch from just after the read: no change can slip between the two.
	wch := s.cli.Watch(clientv3.WithRequireLeader(kctx), key, clientv3.WithRev(resp.Header.Revision+1))
	// Renew with KeepAliveOnce on a TTL/3 timer rather than the client's
	// KeepAlive stream: the stream's internal loops wake up every 0.5-1 s for as
	// long as it runs, CPU an idle agent spends for nothing (`make bench`'s
	// idle figure shows it); the key watch above still notices a lost lease
	// at once.
	timer := time.NewTimer(0) // renew at once: confirms the lease and learns its TTL
	defer timer.Stop()
	_, changed := s.health.current()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
			next, err := s.renewOnce(kctx, id)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			*ttl = next
			timer.Reset(renewEvery(next))
		case <-changed:
			// etcd went down: the key watch may resume silently after a
			// compaction; start over (read, watch, renew) once it answers.
			if st, _ := s.health.current(); st == stateDown {
				return errEtcdDown
			}
			_, changed = s.health.current()
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("watch %s: closed: %v", key, wr.Err())
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					return errGone
				}
				if ev.Kv.Lease != int64(id) {
					return s.checkOwner(ev.Kv.Key, ev.Kv.Value, ev.Kv.Lease, l.Attrs)
				}
				// Same etcd lease, new value: another agent took the key
				// over in place (a duplicated --node-name reuses our lease).
				if err := s.checkOwner(ev.Kv.Key, ev.Kv.Value, ev.Kv.Lease, l.Attrs); err != errGone {
					return err
				}
			}
		}
	}
}

// renewOnce refreshes lease id once and returns its TTL; errGone when etcd no
// longer knows the lease.
func (s *Store) renewOnce(ctx context.Context, id clientv3.LeaseID) (time.Duration, error) {
	var r *clientv3.LeaseKeepAliveResponse
	err := s.timed(ctx, "keepalive", func(ctx context.Context) (err error) { r, err = s.cli.KeepAliveOnce(ctx, id); return err })
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		return 0, errGone
	case err != nil:
		return 0, fmt.Errorf("renew lease %x: %w", int64(id), err)
	case r.TTL <= 0:
		return 0, errGone
	}
	return time.Duration(r.TTL) * time.Second, nil
}

// renewEvery is the renewal period for a lease of ttl: a third of it, so two
// renewals can fail before the lease expires.
func renewEvery(ttl time.Duration) time.Duration {
	return max(ttl/3, 500*time.Millisecond)
}

// checkOwner judges a key whose etcd lease or value is not the one we hold:
// still our value means errGone (recreate adopts it; the renew loop carries
// on), a value of another node an error matching lease.ErrLeaseLost, and our
// name under another PublicIP a *lease.NameConflictError (see lease.Judge).
func (s *Store) checkOwner(key, value []byte, leaseID int64, mine lease.Attrs) error {
	cur, err := s.decodeErr(key, value, leaseID)
	if err != nil {
		return fmt.Errorf("key %s holds a value that is not ours (%v): %w", key, err, lease.ErrLeaseLost)
	}
	if err := lease.Judge(string(key), cur.Attrs, mine); err != nil {
		return err
	}
	if leaseID == 0 {
		return fmt.Errorf("key %s became a reservation (no etcd lease): %w", key, lease.ErrLeaseLost)
	}
	return errGone
}

// recreate puts our value back at l's key under a new etcd lease if the key
// is absent. If the key exists with our value (a lease of ours, for example
// one that was not really gone), it adopts that lease. Otherwise ErrLeaseLost.
func (s *Store) recreate(ctx context.Context, l lease.Lease, value string, ttl time.Duration) (clientv3.LeaseID, error) {
	if ttl < time.Second {
		ttl = lease.DefaultTTL
	}
	g := &grant{s: s, ttl: ttl}
	defer g.revokeUnused()
	id, err := g.get(ctx)
	if err != nil {
		return 0, err
	}
	key := s.subnetsDir() + l.Key()
	var resp *clientv3.TxnResponse
	err = s.timed(ctx, "txn", func(ctx context.Context) (err error) {
		resp, err = s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.Version(key), "=", 0)).
			Then(clientv3.OpPut(key, value, clientv3.WithLease(id))).
			Else(clientv3.OpGet(key)).
			Commit()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("re-create %s: %w", key, err)
	}
	if resp.Succeeded {
		g.used = true
		s.log.Info("re-created our lease", "key", l.Key(), "lease_id", int64(id))
		return id, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return 0, fmt.Errorf("re-create %s: key vanished during the transaction", key)
	}
	if err := s.checkOwner(kvs[0].Key, kvs[0].Value, kvs[0].Lease, l.Attrs); err != errGone {
		return 0, fmt.Errorf("re-create: %w", err)
	}
	s.log.Info("our key exists under another etcd lease of ours: adopting it", "key", l.Key(), "lease_id", kvs[0].Lease)
	return clientv3.LeaseID(kvs[0].Lease), nil
}

// Release deletes our lease by revoking its etcd lease. A reservation, an
// absent key or a key holding another node's value is left alone.
func (s *Store) Release(ctx context.Context, l lease.Lease) error {
	if l.Reservation {
		return nil
	}
	key := s.subnetsDir() + l.Key()
	var resp *clientv3.GetResponse
	if err := s.timed(ctx, "get", func(ctx context.Context) (err error) { resp, err = s.cli.Get(ctx, key); return err }); err != nil {
		return fmt.Errorf("release %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].Lease == 0 {
		return nil
	}
	kv := resp.Kvs[0]
	cur, err := s.decodeErr(kv.Key, kv.Value, kv.Lease)
	if err != nil || !lease.Owns(cur.Attrs, l.Attrs) {
		return nil
	}
	err = s.timed(ctx, "revoke", func(ctx context.Context) error { _, err := s.cli.Revoke(ctx, clientv3.LeaseID(kv.Lease)); return err })
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("release %s: revoke lease %x: %w", key, kv.Lease, err)
	}
	s.log.Info("released our lease", "key", l.Key())
	return nil
}
