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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

	warnMu sync.Mutex
	warned map[string]int64 // key -> ModRevision already warned about
}

var _ lease.Store = (*Store)(nil)

// Option configures a Store.
type Option func(*Store)

// WithObserver reports the latency and result of every etcd operation (op is
// "get", "txn", "grant", "revoke", "keepalive", "put", "ttl"). The agent
// exports it as a histogram. f must be safe for concurrent use and fast.
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
		cli:     cli,
		prefix:  strings.TrimRight(prefix, "/"),
		log:     log,
		retries: 32,
		backoff: backoff{first: 200 * time.Millisecond, max: 10 * time.Second},
		warned:  map[string]int64{},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func (s *Store) configKey() string  { return s.prefix + "/config" }
func (s *Store) subnetsDir() string { return s.prefix + "/subnets/" }

// timed runs f and reports it to the observer.
func (s *Store) timed(op string, f func() error) error {
	start := time.Now()
	err := f()
	if s.observe != nil {
		s.observe(op, time.Since(start), err)
	}
	return err
}

// NetworkConfig reads, defaults and validates <prefix>/config. Notices are
// logged at info level.
func (s *Store) NetworkConfig(ctx context.Context) (*lease.Network, error) {
	key := s.configKey()
	var resp *clientv3.GetResponse
	err := s.timed("get", func() (err error) { resp, err = s.cli.Get(ctx, key); return err })
	if err != nil {
		return nil, fmt.Errorf("read network config %s: %w", key, s.hint(err))
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
	err := s.timed("put", func() error { _, err := s.cli.Put(ctx, key, string(raw)); return err })
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
	err = s.timed("get", func() (err error) {
		resp, err = s.cli.Get(ctx, s.subnetsDir(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		return err
	})
	if err != nil {
		return nil, nil, 0, fmt.Errorf("list leases under %s: %w", s.subnetsDir(), s.hint(err))
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

// hint adds the endpoints and the usual causes to an error that means etcd
// did not answer (wrong address, or http to a TLS server and vice versa).
func (s *Store) hint(err error) error {
	if errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.Unavailable {
		return fmt.Errorf("%w (no answer from etcd at %s: check the address and that http/https matches the server's TLS setting)",
			err, strings.Join(s.cli.Endpoints(), ","))
	}
	return err
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
