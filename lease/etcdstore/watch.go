package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/lease"
)

// Watch lists the leases, sends them as one snapshot batch (possibly empty),
// then watches <prefix>/subnets/ from the listed revision + 1 (with
// require-leader and previous values) and sends each watch response's changes
// as one batch. After a compaction, an error, a lost leader or an etcd
// outage (the health state, fed by Monitor and every operation, went down) it
// waits (backoff with jitter; during an outage until etcd answers again),
// lists again and sends only the difference from what it already delivered.
// Removed events carry the last delivered Lease. If etcd does not answer the
// first list, Watch still returns the channel and the snapshot comes once it
// does; other errors of the first list are returned. The channel closes when
// ctx ends.
func (s *Store) Watch(ctx context.Context) (<-chan []lease.Event, error) {
	leases, _, rev, err := s.list(ctx)
	if err != nil && !errors.Is(err, ErrUnreachable) {
		return nil, fmt.Errorf("watch leases: %w", err)
	}
	out := make(chan []lease.Event)
	w := &watcher{s: s, out: out, delivered: map[string]lease.Lease{}}
	go w.run(ctx, leases, rev, err == nil)
	return out, nil
}

// errEtcdDown ends a watch stream when the health state says etcd is down:
// the stream would resume silently from a revision that may be compacted by
// then; a fresh list after the outage is always right.
var errEtcdDown = errors.New("etcd unreachable")

type watcher struct {
	s         *Store
	out       chan<- []lease.Event
	delivered map[string]lease.Lease // by key below subnets/
}

func (w *watcher) run(ctx context.Context, leases []lease.Lease, rev int64, listed bool) {
	defer close(w.out)
	first := true
	for {
		if !listed {
			var ok bool
			if leases, rev, ok = w.relist(ctx); !ok {
				return
			}
		}
		if !w.send(ctx, w.diff(leases, first)) {
			return
		}
		first, listed = false, false
		err := w.follow(ctx, rev)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errEtcdDown):
			w.s.log.Debug("lease watch paused while etcd is unreachable")
		default:
			w.s.log.Warn("lease watch interrupted, re-listing", "err", err)
		}
	}
}

// relist lists the leases again, waiting between attempts (backoff with
// jitter; while etcd is down, until it answers). Failures because etcd does
// not answer are logged by the health state, at most every 30 s; others here.
func (w *watcher) relist(ctx context.Context) ([]lease.Lease, int64, bool) {
	var delay time.Duration
	for {
		delay = w.s.backoff.next(delay)
		if !w.s.health.wait(ctx, delay) {
			return nil, 0, false
		}
		leases, _, rev, err := w.s.list(ctx)
		if err == nil {
			return leases, rev, true
		}
		if ctx.Err() != nil {
			return nil, 0, false
		}
		if !errors.Is(err, ErrUnreachable) {
			w.s.log.Warn("re-list leases failed", "err", err, "retry_in", w.s.backoff.next(delay))
		}
	}
}

// follow watches from rev+1 until the watch fails or etcd goes down; it
// returns why.
func (w *watcher) follow(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := w.s.cli.Watch(clientv3.WithRequireLeader(wctx), w.s.subnetsDir(),
		clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithPrevKV())
	for {
		st, changed := w.s.health.current()
		if st == stateDown {
			return errEtcdDown
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		case wr, ok := <-wch:
			if !ok {
				if err := ctx.Err(); err != nil {
					return err
				}
				return errors.New("watch channel closed")
			}
			if err := wr.Err(); err != nil {
				if wr.CompactRevision != 0 {
					return fmt.Errorf("watch from revision %d: compacted at %d: %w", rev+1, wr.CompactRevision, err)
				}
				return fmt.Errorf("watch from revision %d: %w", rev+1, err)
			}
			if !w.send(ctx, w.apply(wr.Events)) {
				return ctx.Err()
			}
		}
	}
}

// apply turns watch events into lease events and updates delivered.
func (w *watcher) apply(evs []*clientv3.Event) []lease.Event {
	var batch []lease.Event
	for _, ev := range evs {
		name := string(ev.Kv.Key[len(w.s.subnetsDir()):])
		old, had := w.delivered[name]
		if ev.Type == clientv3.EventTypeDelete {
			if had {
				delete(w.delivered, name)
				batch = append(batch, lease.Event{Type: lease.Removed, Lease: old})
			}
			continue
		}
		l, ok := w.s.decode(ev.Kv.Key, ev.Kv.Value, ev.Kv.Lease, ev.Kv.ModRevision)
		switch {
		case !ok && had:
			// A lease that became unusable is gone as far as routing goes.
			delete(w.delivered, name)
			batch = append(batch, lease.Event{Type: lease.Removed, Lease: old})
		case !ok:
		case !had:
			w.delivered[name] = l
			batch = append(batch, lease.Event{Type: lease.Added, Lease: l})
		case !sameLease(old, l):
			w.delivered[name] = l
			batch = append(batch, lease.Event{Type: lease.Changed, Lease: l})
		}
	}
	return batch
}

// diff compares a fresh list with what was delivered. The snapshot (first)
// batch is sent even when empty; later diffs only when not empty.
func (w *watcher) diff(leases []lease.Lease, first bool) []lease.Event {
	batch := []lease.Event{}
	seen := make(map[string]bool, len(leases))
	for _, l := range leases {
		k := l.Key()
		seen[k] = true
		old, had := w.delivered[k]
		switch {
		case !had:
			batch = append(batch, lease.Event{Type: lease.Added, Lease: l})
		case !sameLease(old, l):
			batch = append(batch, lease.Event{Type: lease.Changed, Lease: l})
		default:
			continue
		}
		w.delivered[k] = l
	}
	var gone []string
	for k := range w.delivered {
		if !seen[k] {
			gone = append(gone, k)
		}
	}
	sort.Strings(gone)
	for _, k := range gone {
		batch = append(batch, lease.Event{Type: lease.Removed, Lease: w.delivered[k]})
		delete(w.delivered, k)
	}
	if len(batch) == 0 && !first {
		return nil
	}
	return batch
}

func sameLease(a, b lease.Lease) bool {
	return a.Subnet == b.Subnet && a.IPv6Subnet == b.IPv6Subnet && a.LeaseID == b.LeaseID &&
		a.Reservation == b.Reservation && a.Attrs.Equal(b.Attrs)
}

// send delivers a batch; nil batches are skipped. False when ctx ended.
func (w *watcher) send(ctx context.Context, batch []lease.Event) bool {
	if batch == nil {
		return ctx.Err() == nil
	}
	select {
	case w.out <- batch:
		return true
	case <-ctx.Done():
		return false
	}
}
