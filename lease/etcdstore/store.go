package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/lease"
)

// Store is the etcd lease.Store. Safe for concurrent use.
type Store struct {
	cli     *clientv3.Client
	prefix  string // without trailing slash, e.g. /coreos.com/network
	log     *slog.Logger
	observe func(op string, d time.Duration, err error)
	retries int
	backoff backoff

	opTimeout    time.Duration // deadline of every unary etcd call
	probeEvery   time.Duration // Monitor's period while etcd answers
	probeTimeout time.Duration // deadline of one probe
	health       *health
	diag         diagnosis

	warnMu sync.Mutex
	warned map[string]int64 // key -> ModRevision already warned about
}

var _ lease.Store = (*Store)(nil)

// Option configures a Store.
type Option func(*Store)

// WithObserver reports the latency and result of every etcd operation (op is
// "get", "txn", "grant", "revoke", "keepalive", "put", "ttl", and "probe" for
// Monitor's health probe). The agent exports it as a histogram. f must be
// safe for concurrent use and fast.
func WithObserver(f func(op string, d time.Duration, err error)) Option {
	return func(s *Store) { s.observe = f }
}

// WithAcquireRetries bounds how many times Acquire re-lists and retries when
// another node wins the race for a block (default 32).
func WithAcquireRetries(n int) Option {
	return func(s *Store) {
		if n > 0 {
			s.retries = n
		}
	}
}

// WithHealth reports whether etcd answers: f(false, err) when an operation
// or a probe gets no answer (err matches ErrUnreachable and names the
// endpoints and the cause), f(true, nil) when etcd answers again (and on the
// first answer). It is called on transitions only, in order, and must be
// fast. The agent wires it to weft_etcd_up and weft_etcd_failures_total.
func WithHealth(f func(up bool, err error)) Option {
	return func(s *Store) { s.health.notify = f }
}

// WithHealthLog turns the store's log lines about etcd's reachability
// ("connected to etcd", "etcd unreachable", "etcd still unreachable" at most
// every 30 s, "etcd reachable again") on (the default) or off. One-shot
// commands turn them off: their error says it.
func WithHealthLog(on bool) Option {
	return func(s *Store) { s.health.logOn = on }
}

// WithTimeouts sets the deadline of every unary etcd call (default 5s), the
// period of Monitor's probe while etcd answers (default 8s) and the deadline
// of one probe (default 2s). Zero keeps a default.
func WithTimeouts(op, probeEvery, probeTimeout time.Duration) Option {
	return func(s *Store) {
		if op > 0 {
			s.opTimeout = op
		}
		if probeEvery > 0 {
			s.probeEvery = probeEvery
		}
		if probeTimeout > 0 {
			s.probeTimeout = probeTimeout
		}
	}
}

// WithBackoff sets the first and the largest delay between retries of the
// watch and keepalive loops (defaults 200ms and 10s; jitter is added).
func WithBackoff(first, max time.Duration) Option {
	return func(s *Store) {
		if first > 0 && max >= first {
			s.backoff = backoff{first: first, max: max}
		}
	}
}

// New returns a Store for the leases under prefix (lease.DefaultPrefix when
// empty). cli stays owned by the caller. log nil discards.
func New(cli *clientv3.Client, prefix string, log *slog.Logger, opts ...Option) *Store {
	if prefix == "" {
		prefix = lease.DefaultPrefix
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		cli:          cli,
		prefix:       strings.TrimRight(prefix, "/"),
		log:          log,
		retries:      32,
		backoff:      backoff{first: 200 * time.Millisecond, max: 10 * time.Second},
		opTimeout:    defaultOpTimeout,
		probeEvery:   defaultProbeEvery,
		probeTimeout: defaultProbeTimeout,
		health:       newHealth(log, cli.Endpoints()),
		warned:       map[string]int64{},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func (s *Store) configKey() string  { return s.prefix + "/config" }
func (s *Store) subnetsDir() string { return s.prefix + "/subnets/" }

// NetworkConfig reads, defaults and validates <prefix>/config. Notices are
// logged at info level.
func (s *Store) NetworkConfig(ctx context.Context) (*lease.Network, error) {
	key := s.configKey()
	var resp *clientv3.GetResponse
	err := s.timed(ctx, "get", func(ctx context.Context) (err error) { resp, err = s.cli.Get(ctx, key); return err })
	if err != nil {
		return nil, fmt.Errorf("read network config %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("read network config: key %s not found; create it with: etcdctl put %s '{\"Network\":\"10.244.0.0/16\",\"Backend\":{\"Type\":\"vxlan\"}}' (etcd v3 API): %w",
			key, key, lease.ErrNoConfig)
	}
	n, err := lease.ParseNetwork(resp.Kvs[0].Value)
	if err != nil {
		return nil, fmt.Errorf("read network config %s: %w", key, err)
	}
	for _, msg := range n.Notices {
		s.log.Info("network config default applied", "key", key, "notice", msg)
	}
	return n, nil
}

// PutConfig validates raw with lease.ParseNetwork and writes it, unchanged,
// to <prefix>/config (for `weftd init-network`).
func (s *Store) PutConfig(ctx context.Context, raw []byte) error {
	if _, err := lease.ParseNetwork(raw); err != nil {
		return fmt.Errorf("put network config: %w", err)
	}
	key := s.configKey()
	err := s.timed(ctx, "put", func(ctx context.Context) error { _, err := s.cli.Put(ctx, key, string(raw)); return err })
	if err != nil {
		return fmt.Errorf("put network config %s: %w", key, err)
	}
	return nil
}

// List returns every valid vxlan lease, sorted by key. Keys and values that
// do not parse, and leases of other backends, are skipped with one warning
// per key and revision.
func (s *Store) List(ctx context.Context) ([]lease.Lease, error) {
	leases, _, _, err := s.list(ctx)
	return leases, err
}

// list returns the valid leases, sorted by key, the revision of the read, and
// the blocks whose key parses but whose value is unusable (corrupt, another
// backend): those blocks are taken all the same.
func (s *Store) list(ctx context.Context) (leases []lease.Lease, blocked []lease.Lease, rev int64, err error) {
	var resp *clientv3.GetResponse
	err = s.timed(ctx, "get", func(ctx context.Context) (err error) {
		resp, err = s.cli.Get(ctx, s.subnetsDir(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		return err
	})
	if err != nil {
		return nil, nil, 0, fmt.Errorf("list leases under %s: %w", s.subnetsDir(), err)
	}
	leases = make([]lease.Lease, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if l, ok := s.decode(kv.Key, kv.Value, kv.Lease, kv.ModRevision); ok {
			leases = append(leases, l)
			continue
		}
		name := strings.TrimPrefix(string(kv.Key), s.subnetsDir())
		if v4, v6, err := lease.ParseKey(name); err == nil {
			blocked = append(blocked, lease.Lease{Subnet: v4, IPv6Subnet: v6, LeaseID: kv.Lease, Reservation: kv.Lease == 0})
		}
	}
	return leases, blocked, resp.Header.Revision, nil
}

// decode turns a key/value into a Lease; ok is false (after one warning per
// key and revision) when it is not a usable vxlan lease.
func (s *Store) decode(key, value []byte, leaseID, modRev int64) (lease.Lease, bool) {
	l, err := s.decodeErr(key, value, leaseID)
	if err != nil {
		s.warnOnce(string(key), modRev, err)
		return lease.Lease{}, false
	}
	return l, true
}

func (s *Store) decodeErr(key, value []byte, leaseID int64) (lease.Lease, error) {
	name, ok := strings.CutPrefix(string(key), s.subnetsDir())
	if !ok {
		return lease.Lease{}, fmt.Errorf("key outside %s", s.subnetsDir())
	}
	v4, v6, err := lease.ParseKey(name)
	if err != nil {
		return lease.Lease{}, err
	}
	a, err := lease.ParseValue(value)
	if err != nil {
		return lease.Lease{}, err
	}
	if err := a.CheckVXLAN(); err != nil {
		return lease.Lease{}, err
	}
	return lease.Lease{Subnet: v4, IPv6Subnet: v6, Attrs: a, Reservation: leaseID == 0, LeaseID: leaseID}, nil
}

func (s *Store) warnOnce(key string, modRev int64, err error) {
	s.warnMu.Lock()
	seen, ok := s.warned[key]
	if !ok || seen != modRev {
		s.warned[key] = modRev
	}
	s.warnMu.Unlock()
	if ok && seen == modRev {
		return
	}
	msg := "skipping lease that does not parse"
	if errors.Is(err, lease.ErrOtherBackend) {
		msg = "skipping lease of another backend"
	}
	s.log.Warn(msg, "key", key, "revision", modRev, "err", err)
}

// backoff is an exponential delay with full jitter in [d/2, d].
type backoff struct{ first, max time.Duration }

func (b backoff) next(d time.Duration) time.Duration {
	if d < b.first {
		return b.first
	}
	return min(2*d, b.max)
}

// sleep waits about d (jittered); false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	j := d/2 + rand.N(d/2+1)
	t := time.NewTimer(j)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
