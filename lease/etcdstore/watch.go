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
// as one batch. After a compaction, an error or a lost leader it backs off
// (with jitter), lists again and sends only the difference from what it
// already delivered. Removed events carry the last delivered Lease. The
// channel closes when ctx ends.
func (s *Store) Watch(ctx context.Context) (<-chan []lease.Event, error) {
	leases, _, rev, err := s.list(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch leases: %w", err)
	}
	out := make(chan []lease.Event)
	w := &watcher{s: s, out: out, delivered: map[string]lease.Lease{}}
	go w.run(ctx, leases, rev)
	return out, nil
}

type watcher struct {
	s         *Store
	out       chan<- []lease.Event
	delivered map[string]lease.Lease // by key below subnets/
}

func (w *watcher) run(ctx context.Context, leases []lease.Lease, rev int64) {
	defer close(w.out)
	if !w.send(ctx, w.diff(leases, true)) {
		return
	}
	var delay time.Duration
	for {
		err := w.follow(ctx, rev)
		if ctx.Err() != nil {
			return
		}
		delay = w.s.backoff.next(delay)
		w.s.log.Warn("lease watch interrupted, re-listing", "err", err, "retry_in", delay)
		if !sleep(ctx, delay) {
			return
		}
		var lerr error
		leases, _, rev, lerr = w.s.list(ctx)
		if lerr != nil {
			w.s.log.Warn("re-list leases failed", "err", lerr)
			continue
		}
		if !w.send(ctx, w.diff(leases, false)) {
			return
		}
		delay = 0
	}
}

// follow watches from rev+1 until the watch fails; it returns why.
func (w *watcher) follow(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := w.s.cli.Watch(clientv3.WithRequireLeader(wctx), w.s.subnetsDir(),
		clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithPrevKV())
	for wr := range wch {
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
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("watch channel closed")
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
