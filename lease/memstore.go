package lease

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"
)

// MemStore is an in-memory Store for unit tests of the agent. It follows the
// etcd store's semantics (acquire order, value update in place, re-create
// on loss, ErrLeaseLost when the key belongs to another node, reservations
// never renewed, snapshot-then-deltas watch, unusable values skipped but
// their blocks taken) and adds hooks to play the other nodes: PutPeer,
// PutRaw, Remove and Expire. Nothing expires by itself.
type MemStore struct {
	mu     sync.Mutex
	cfg    *Network
	leases map[string]Lease
	// blocked holds the keys whose value is unusable (PutRaw): invisible
	// to List and Watch, but their blocks are not free.
	blocked  map[string]Lease
	nextID   int64
	changed  chan struct{} // closed and replaced on every change
	watchers map[*memWatcher]struct{}
}

var _ Store = (*MemStore)(nil)

type memWatcher struct {
	queue  [][]Event
	signal chan struct{}
}

// NewMemStore returns an empty store with config cfg (nil: NetworkConfig
// fails with ErrNoConfig until SetConfig).
func NewMemStore(cfg *Network) *MemStore {
	return &MemStore{cfg: cfg, leases: map[string]Lease{}, blocked: map[string]Lease{}, changed: make(chan struct{}), watchers: map[*memWatcher]struct{}{}}
}

// SetConfig replaces the network config.
func (m *MemStore) SetConfig(cfg *Network) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cfg = cfg
}

// NetworkConfig returns a copy of the config.
func (m *MemStore) NetworkConfig(ctx context.Context) (*Network, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cfg == nil {
		return nil, fmt.Errorf("read network config from memory store: %w", ErrNoConfig)
	}
	c := *m.cfg
	return &c, nil
}

// Acquire applies Choose under cfg to the stored leases (and the blocks of
// unusable values) and commits the choice. The stored config is not read.
func (m *MemStore) Acquire(ctx context.Context, cfg *Network, req Request) (Lease, error) {
	if err := ctx.Err(); err != nil {
		return Lease{}, fmt.Errorf("acquire lease: %w", err)
	}
	if cfg == nil {
		return Lease{}, fmt.Errorf("acquire lease: no network config given: %w", ErrNoConfig)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	taken := m.sortedLocked()
	for _, b := range m.blocked {
		taken = append(taken, b)
	}
	c, err := Choose(cfg, taken, req)
	if err != nil {
		return Lease{}, fmt.Errorf("acquire lease: %w", err)
	}
	var evs []Event
	for _, s := range c.Stale {
		delete(m.leases, s.Key())
		evs = append(evs, Event{Type: Removed, Lease: s})
	}
	if c.Existing != nil {
		l := *c.Existing
		if !l.Attrs.Equal(req.Attrs) {
			l.Attrs = req.Attrs
			m.leases[l.Key()] = l
			evs = append(evs, Event{Type: Changed, Lease: l})
		}
		m.emitLocked(evs)
		return l, nil
	}
	ttl := req.TTL
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	m.nextID++
	l := Lease{Subnet: c.Subnet, IPv6Subnet: c.IPv6Subnet, Attrs: req.Attrs, LeaseID: m.nextID, Expiration: time.Now().Add(ttl)}
	m.leases[l.Key()] = l
	m.emitLocked(append(evs, Event{Type: Added, Lease: l}))
	return l, nil
}

// KeepAlive waits for ctx. When the key disappears (Expire, Remove) it
// re-creates it with a new lease ID; when the key holds another node's value
// it returns ErrLeaseLost. A reservation just waits.
func (m *MemStore) KeepAlive(ctx context.Context, l Lease) error {
	if l.Reservation {
		<-ctx.Done()
		return nil
	}
	key, id := l.Key(), l.LeaseID
	for {
		m.mu.Lock()
		cur, ok := m.leases[key]
		switch {
		case ok && cur.LeaseID == id:
		case ok && Owns(cur.Attrs, l.Attrs):
			id = cur.LeaseID
		case ok:
			m.mu.Unlock()
			return fmt.Errorf("keep lease %s alive: key now holds %s: %w", key, cur.Attrs.PublicAddr(), ErrLeaseLost)
		default:
			m.nextID++
			id = m.nextID
			l.LeaseID, l.Reservation = id, false
			m.leases[key] = l
			m.emitLocked([]Event{{Type: Added, Lease: l}})
		}
		ch := m.changed
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
		}
	}
}

// List returns every lease, sorted by key.
func (m *MemStore) List(ctx context.Context) ([]Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sortedLocked(), nil
}

// Watch sends a snapshot, then every change as its own batch, until ctx ends.
func (m *MemStore) Watch(ctx context.Context) (<-chan []Event, error) {
	m.mu.Lock()
	snap := []Event{}
	for _, l := range m.sortedLocked() {
		snap = append(snap, Event{Type: Added, Lease: l})
	}
	w := &memWatcher{queue: [][]Event{snap}, signal: make(chan struct{}, 1)}
	w.signal <- struct{}{}
	m.watchers[w] = struct{}{}
	m.mu.Unlock()
	out := make(chan []Event)
	go m.runWatcher(ctx, w, out)
	return out, nil
}

func (m *MemStore) runWatcher(ctx context.Context, w *memWatcher, out chan<- []Event) {
	defer close(out)
	defer func() {
		m.mu.Lock()
		delete(m.watchers, w)
		m.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.signal:
		}
		for {
			m.mu.Lock()
			if len(w.queue) == 0 {
				m.mu.Unlock()
				break
			}
			batch := w.queue[0]
			w.queue = w.queue[1:]
			m.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case out <- batch:
			}
		}
	}
}

// PutPeer adds or replaces a lease as another node would (test hook). A
// lease that is not a reservation gets a fresh LeaseID. Returns the stored lease.
func (m *MemStore) PutPeer(l Lease) Lease {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !l.Reservation {
		m.nextID++
		l.LeaseID = m.nextID
	} else {
		l.LeaseID = 0
	}
	typ := Added
	if _, ok := m.leases[l.Key()]; ok {
		typ = Changed
	}
	delete(m.blocked, l.Key())
	m.leases[l.Key()] = l
	m.emitLocked([]Event{{Type: typ, Lease: l}})
	return l
}

// PutRaw writes value at key (the name below subnets/) as another writer
// might, not as a lease (test hook: a corrupt value, another backend's
// lease). A usable vxlan value is stored as PutPeer stores it. An unusable
// one is skipped as the etcd store skips it: List and Watch do not show it
// (a lease that was at key is Removed), yet its block is not free. PutRaw
// returns why the value is unusable (nil when usable); a key that does not
// parse stores nothing.
func (m *MemStore) PutRaw(key string, value []byte) error {
	v4, v6, err := ParseKey(key)
	if err != nil {
		return fmt.Errorf("put %q: %w", key, err)
	}
	a, err := ParseValue(value)
	if err == nil {
		err = a.CheckVXLAN()
	}
	if err == nil {
		m.PutPeer(Lease{Subnet: v4, IPv6Subnet: v6, Attrs: a})
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextID++
	b := Lease{Subnet: v4, IPv6Subnet: v6, LeaseID: m.nextID}
	m.blocked[b.Key()] = b
	var evs []Event
	if old, ok := m.leases[b.Key()]; ok {
		delete(m.leases, b.Key())
		evs = append(evs, Event{Type: Removed, Lease: old})
	}
	m.emitLocked(evs)
	return fmt.Errorf("put %q: unusable value: %w", key, err)
}

// Remove deletes the lease at key (test hook: a peer leaves). It reports
// whether the key existed.
func (m *MemStore) Remove(key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.blocked[key]; ok {
		delete(m.blocked, key)
		m.emitLocked(nil)
		return true
	}
	l, ok := m.leases[key]
	if !ok {
		return false
	}
	delete(m.leases, key)
	m.emitLocked([]Event{{Type: Removed, Lease: l}})
	return true
}

// Expire plays the etcd lease behind key expiring (test hook): the key is
// deleted, watchers see Removed, and a running KeepAlive re-creates it.
func (m *MemStore) Expire(key string) bool { return m.Remove(key) }

func (m *MemStore) sortedLocked() []Lease {
	out := make([]Lease, 0, len(m.leases))
	for _, l := range m.leases {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// emitLocked queues evs for every watcher and wakes KeepAlive loops.
func (m *MemStore) emitLocked(evs []Event) {
	close(m.changed)
	m.changed = make(chan struct{})
	if len(evs) == 0 {
		return
	}
	for w := range m.watchers {
		w.queue = append(w.queue, evs)
		select {
		case w.signal <- struct{}{}:
		default:
		}
	}
}
